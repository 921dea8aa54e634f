"""The access log (``--access-log PATH|-``) and the audit log (``--audit-log PATH|-``): one JSON
object per line.

- Access: one line per HTTP request, written when its answer ends: time, client, HTTP method,
  path, MCP method (the JSON-RPC method of a POST to an MCP path), status, duration, bytes sent.
- Audit: one line per ``tools/call``, any transport: time, principal subject, session, client
  address, tool, the SHA-256 of the arguments as canonical JSON (sorted keys, no spaces), outcome,
  duration in ms; the raw arguments only with ``--audit-arguments``. Never a token.

Lines are collected in one buffer and written with one ``write`` every 0.2 s or 64 KiB (and when
the process stops), so a request pays for its line's encoding, not a system call. An audit record
is not even encoded on the request's way: the request leaves a tuple, and the records of one turn
of the event loop are hashed and encoded together after it (at most ``AUDIT_BATCH`` at a time),
where the work runs back to back instead of between two requests' network work. A file
that cannot be opened or written (a full disk, a missing directory, no permission) is reported
once on the server's log and never fails a request: its lines are dropped (counted) until writing
works again, and at most ``MAX_PENDING_BYTES`` wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Final

import orjson

from mcp_fast.call import Call

logger = logging.getLogger("mcp_fast.logs")

_perf_counter: Final = time.perf_counter
_time: Final = time.time
_sha256: Final = hashlib.sha256
_SORTED: Final = orjson.OPT_SORT_KEYS
_NEWLINE: Final = orjson.OPT_APPEND_NEWLINE
_NO_PARAMS: Final[dict[str, Any]] = {}

FLUSH_SECONDS: Final = 0.2
# Written at once when this much is waiting: the buffer stays small (growing a large bytearray
# line by line copies it over and over) and one write carries a few hundred lines.
FLUSH_BYTES: Final = 64 << 10
MAX_PENDING_BYTES: Final = 16 << 20
# Audit records waiting for their encoding: written at once past this many (a loop turn that
# serves more, or a caller with no running loop).
AUDIT_BATCH: Final = 256
_REOPEN_SECONDS: Final = 5.0


class _UtcStamp:
    """RFC 3339 UTC time with milliseconds (``2026-11-24T05:01:02.345Z``), formatted once per
    millisecond (datetime's isoformat costs a request 1.3 µs; under load many lines share one).
    ``text`` is the one of ``millisecond`` (since the epoch)."""

    __slots__ = ("_prefix", "_second", "millisecond", "text")

    def __init__(self) -> None:
        self.millisecond = -1
        self.text = ""
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        millisecond = int(time.time() * 1000.0)
        return self.text if millisecond == self.millisecond else self.at(millisecond)

    def at(self, millisecond: int) -> str:
        self.millisecond = millisecond
        second, fraction = divmod(millisecond, 1000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        self.text = f"{self._prefix}.{fraction:03d}Z"
        return self.text


_now_text = _UtcStamp()


def _milliseconds(seconds: float) -> float:
    """Seconds as milliseconds with microsecond precision (cheaper than round())."""
    return int(seconds * 1_000_000.0) / 1000.0


class JsonLines:
    """An append-only file of JSON lines (``-``: standard output), written in batches."""

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what  # "--access-log", "--audit-log": named in the one report
        self._fd: int | None = None
        # Lines waiting for the next flush. One bytearray, not a list of bytes objects: keeping
        # thousands of small objects alive until the flush cost a line 1.5 µs more.
        self._pending = bytearray()
        self._pending_lines = 0
        self._scheduled = False
        self._failing = False
        self._next_open = 0.0
        self.dropped = 0
        self.written = 0
        # Called before each flush (the audit log's records not yet encoded).
        self.before_flush: list[Callable[[], None]] = []

    def open(self) -> None:
        """Open now (at start-up): a problem is reported at once, not with the first line."""
        self._ensure_open()

    def _ensure_open(self) -> bool:
        if self._fd is not None:
            return True
        if self.path == "-":
            self._fd = sys.stdout.fileno()
            return True
        now = time.monotonic()
        if now < self._next_open:
            return False
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            self._next_open = now + _REOPEN_SECONDS
            self._report(exc)
            return False
        return True

    def write(self, record: dict[str, Any]) -> None:
        """Queue one record as a line; never raises."""
        try:
            line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:  # not JSON (only --audit-arguments could carry such a value): dropped
            self.dropped += 1
            return
        self.add_lines(line, 1)

    def add_lines(self, lines: bytes, count: int) -> None:
        """Queue ``count`` encoded lines (each ending in a newline); never raises."""
        pending = self._pending
        if len(pending) >= MAX_PENDING_BYTES:
            self.dropped += count
            return
        pending += lines
        self._pending_lines += count
        if len(pending) >= FLUSH_BYTES and not self._failing:
            self._write_out()
        elif not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test calling directly): write now
            self._write_out()
            return
        self._scheduled = True
        loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write what is queued (the timer's call, and at shutdown)."""
        self._scheduled = False
        for encode in self.before_flush:
            encode()
        self._write_out()

    def _write_out(self) -> None:
        """Write what is queued; on failure drop it and report (once until it works again)."""
        pending, self._pending = self._pending, bytearray()
        lines, self._pending_lines = self._pending_lines, 0
        if not pending:
            return
        if not self._ensure_open():
            self.dropped += lines
            return
        assert self._fd is not None
        data = memoryview(pending)
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError as exc:
            self.dropped += lines
            self._report(exc)
            if self.path != "-":
                self._close()  # maybe deleted or remounted: open again later
                self._next_open = time.monotonic() + _REOPEN_SECONDS
            return
        self.written += lines
        if self._failing:
            self._failing = False
            logger.warning(
                "%s %s: writing works again (%d lines were dropped)", self.what, self.path, self.dropped
            )

    def _report(self, exc: OSError) -> None:
        if self._failing:
            return
        self._failing = True
        logger.error(
            "%s %s: cannot write (%s); its lines are dropped until it works again, requests go on",
            self.what,
            self.path,
            exc.strerror or exc,
        )

    def _close(self) -> None:
        if self._fd is not None and self.path != "-":
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None

    def close(self) -> None:
        self.flush()
        self._close()


class AccessLog:
    """The ``AccessRecord`` of ``transport/front.py``: one line per HTTP request."""

    def __init__(self, lines: JsonLines) -> None:
        self.lines = lines

    def __call__(
        self,
        client: tuple[str, int] | None,
        method: str,
        path: str,
        mcp_method: str | None,
        status: int,
        seconds: float,
        sent: int,
    ) -> None:
        self.lines.write(
            {
                "time": _now_text(),
                "client": client[0] if client is not None else None,
                "method": method,
                "path": path,
                "mcp_method": mcp_method,
                "status": status,
                "duration_ms": _milliseconds(seconds),
                "bytes": sent,
            }
        )


class AuditLog:
    """A ``RequestObserver``: one line per ``tools/call``.

    ``end`` runs for every request and only keeps a tuple; ``encode`` (soon after, in a batch)
    hashes the arguments and writes the lines.
    """

    def __init__(self, lines: JsonLines, with_arguments: bool = False) -> None:
        self.lines = lines
        self.with_arguments = with_arguments
        self._records: list[_AuditRecord] = []
        self._scheduled = False
        lines.before_flush.append(self.encode)

    needs_begin = False

    def begin(self, call: Call) -> None:
        return None

    def end(self, call: Call, answered: bool) -> None:
        if call.method != "tools/call":
            return
        ended = _perf_counter()
        if not answered:
            outcome = "cancelled"
        elif call.error_code is not None:
            outcome = f"error {call.error_code}"
        else:
            outcome = "tool_error" if call.tool_error else "ok"
        # References only: what a line needs is looked up, hashed and encoded in the batch (work
        # on the request's way costs it more, between two requests' network work).
        records = self._records
        records.append(
            (ended, ended - call.started, call.principal, call.session, call.client, call.transport,
             call.params, outcome)
        )  # fmt: skip
        if not self._scheduled:
            self._schedule()
        elif len(records) >= AUDIT_BATCH:
            self.encode()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test calling directly, stdio's end): now
            self.encode()
            return
        self._scheduled = True
        loop.call_soon(self.encode)

    def encode(self) -> None:
        """The waiting records, as lines (after the loop turn that served them; before a flush)."""
        self._scheduled = False
        records = self._records
        if not records:
            return
        self._records = []
        # The wall-clock time of each record's end, from its perf_counter stamp (one time() call
        # per batch instead of one per request).
        offset = _time() - _perf_counter()
        stamp = _now_text
        dumps = orjson.dumps
        with_arguments = self.with_arguments
        out: list[bytes] = []
        for ended, elapsed, principal, session, client, transport, params, outcome in records:
            params = params or _NO_PARAMS
            arguments = params.get("arguments")
            try:
                canonical = dumps(arguments, option=_SORTED)
            except TypeError:  # beyond what orjson writes (integers over 64 bits): repr is stable enough
                canonical = repr(arguments).encode()
            millisecond = int((ended + offset) * 1000.0)
            line: dict[str, Any] = {
                "time": stamp.text if millisecond == stamp.millisecond else stamp.at(millisecond),
                "principal": principal.subject if principal is not None else None,
                "session": session.session_id if session is not None else None,
                "client": client[0] if client is not None else None,
                "transport": transport,
                "tool": params.get("name"),
                "arguments_sha256": _sha256(canonical).hexdigest(),
                "outcome": outcome,
                "duration_ms": int(elapsed * 1_000_000.0) / 1000.0,
            }
            if with_arguments:
                line["arguments"] = arguments
                self.lines.write(line)  # dropped (counted) if orjson cannot write the arguments
            else:
                out.append(dumps(line, option=_NEWLINE))
        if out:
            self.lines.add_lines(b"".join(out), len(out))


# perf_counter() at the end, seconds taken, principal, session, client address, transport, params,
# outcome
_AuditRecord = tuple[float, float, Any, Any, "tuple[str, int] | None", str, "dict[str, Any] | None", str]


class DebugRequestLog:
    """A ``RequestObserver`` for ``--log-level debug``: one log line per request (method, target,
    id, transport, session, client, outcome, time) on the ``mcp_fast.requests`` logger. Installed
    only at that level, so other levels pay nothing for it."""

    needs_begin = False

    def begin(self, call: Call) -> None:
        return None

    def end(self, call: Call, answered: bool) -> None:
        elapsed_ms = (_perf_counter() - call.started) * 1e3
        if not answered:
            outcome = "cancelled"
        elif call.error_code is not None:
            outcome = f"error {call.error_code}"
        elif call.tool_error:
            outcome = "tool error"
        else:
            outcome = "ok"
        params = call.params or _NO_PARAMS
        target = params.get("name") or params.get("uri")
        _request_logger.debug(
            "%s%s id=%r %s %s session=%s client=%s: %s in %.2f ms",
            call.method,
            f" {target}" if type(target) is str else "",
            call.id,
            call.transport,
            call.protocol_version,
            call.session_id or "-",
            call.client[0] if call.client is not None else "-",
            outcome,
            elapsed_ms,
        )


_request_logger = logging.getLogger("mcp_fast.requests")


def debug_requests() -> bool:
    """Is the per-request log on (``--log-level debug``)?"""
    return _request_logger.isEnabledFor(logging.DEBUG)
