"""Newline-delimited JSON-RPC framing for the stdio transport (sans-I/O: no asyncio).

Spec: docs/specification/2025-11-25/basic/transports.mdx, "stdio" (and the same
rules in 2024-11-05 and draft/basic/transports/stdio.mdx): messages are delimited
by newlines and MUST NOT contain embedded newlines.

``receive_data(bytes)`` returns the complete lines the bytes finished, in order,
however the bytes were split; ``receive_eof()`` returns what was left unterminated.
A line longer than ``max_line`` is never buffered whole: the framer reports
``OVERSIZE`` once and discards bytes up to the next newline, after which framing
goes on as before (the newline still delimits the next message). Blank lines are
skipped. Memory is bounded by ``max_line`` plus the chunk being handled.
"""

from __future__ import annotations

from typing import Final


class _Oversize:
    """A line was longer than the limit and was dropped."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "OVERSIZE"


OVERSIZE: Final = _Oversize()
Frame = bytes | _Oversize

_NL: Final = b"\n"


def _is_blank(line: bytes) -> bool:
    return not line.strip()


class LineFramer:
    __slots__ = ("_buffer", "_discarding", "_scanned", "max_line")

    def __init__(self, max_line: int) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already searched for a newline
        self._discarding = False  # inside a line that was reported OVERSIZE

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def receive_data(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        if self._discarding:
            end = data.find(_NL)
            if end == -1:
                return frames  # still inside the oversize line
            self._discarding = False
            data = data[end + 1 :]
        buffer = self._buffer
        buffer += data
        start = 0
        search = self._scanned
        limit = self.max_line
        while (end := buffer.find(_NL, search)) != -1:
            if end - start > limit:
                frames.append(OVERSIZE)
            else:
                line = bytes(buffer[start:end])
                if not _is_blank(line):
                    frames.append(line)
            start = search = end + 1
        if start:
            del buffer[:start]
        if len(buffer) > limit:
            # The line in progress is already too long: report it now and drop the
            # rest of it as it arrives, rather than wait for its end with it in memory.
            frames.append(OVERSIZE)
            buffer.clear()
            self._discarding = True
        self._scanned = len(buffer)
        return frames

    def receive_eof(self) -> list[Frame]:
        """The input ended: a last line without its newline still counts (as the
        official SDK's line reader does); an oversize line in progress is already reported."""
        if self._discarding:
            self._discarding = False
            return []
        line = bytes(self._buffer)
        self._buffer.clear()
        self._scanned = 0
        return [] if _is_blank(line) else [line]
