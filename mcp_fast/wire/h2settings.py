"""HTTP/2 SETTINGS and flow-control windows (RFC 9113 sections 6.5 and 6.9).

``PeerSettings`` holds what the client told us, each value checked as section
6.5.2 says; ``ReceiveWindow`` decides when data we have taken in is given back with
WINDOW_UPDATE (batched: an update per half window, not per frame).
"""

from __future__ import annotations

from typing import Final

from mcp_fast.wire.h2frames import (
    DEFAULT_WINDOW,
    MAX_MAX_FRAME_SIZE,
    MAX_WINDOW,
    MIN_MAX_FRAME_SIZE,
    ErrorCode,
    FrameError,
    Setting,
)

__all__ = ["PeerSettings", "ReceiveWindow", "window_update_due"]

_ENABLE_CONNECT_PROTOCOL: Final = 0x8  # RFC 8441


class PeerSettings:
    """The client's settings that a server acts on; others are ignored (section 6.5.2)."""

    __slots__ = ("header_table_size", "initial_window", "max_frame")

    def __init__(self) -> None:
        self.initial_window = DEFAULT_WINDOW
        self.max_frame = MIN_MAX_FRAME_SIZE
        self.header_table_size = 4096

    def apply(self, values: list[tuple[int, int]]) -> int:
        """Take a SETTINGS frame's values in order; returns the change of the initial
        window (which applies to every stream's send window, section 6.9.2)."""
        delta = 0
        for key, value in values:
            if key == Setting.ENABLE_PUSH or key == _ENABLE_CONNECT_PROTOCOL:
                if value > 1:  # (RFC 8441 section 3 for SETTINGS_ENABLE_CONNECT_PROTOCOL)
                    raise FrameError(ErrorCode.PROTOCOL_ERROR, "a boolean setting not 0 or 1")
            elif key == Setting.INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise FrameError(
                        ErrorCode.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1"
                    )
                delta += value - self.initial_window
                self.initial_window = value
            elif key == Setting.MAX_FRAME_SIZE:
                if not MIN_MAX_FRAME_SIZE <= value <= MAX_MAX_FRAME_SIZE:
                    raise FrameError(ErrorCode.PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self.max_frame = value
            elif key == Setting.HEADER_TABLE_SIZE:
                self.header_table_size = value
        return delta


def window_update_due(unacked: int, window: int, initial: int) -> bool:
    """Give window back once half of it was used, or when it is (nearly) shut and
    something is waiting (like h2's window manager)."""
    return unacked >= initial // 2 or (unacked > 0 and window < 1024)


class ReceiveWindow:
    """The connection's receive window: what the client may still send on all streams."""

    __slots__ = ("unacked", "window")

    INITIAL: Final = DEFAULT_WINDOW

    def __init__(self) -> None:
        self.window = DEFAULT_WINDOW
        self.unacked = 0

    def consume(self, size: int) -> None:
        """A DATA frame arrived (its whole length counts, padding included)."""
        if size > self.window:
            raise FrameError(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.window -= size

    def taken(self, size: int) -> int:
        """``size`` bytes were taken in (or dropped); the WINDOW_UPDATE increment due now, or 0."""
        self.unacked += size
        if window_update_due(self.unacked, self.window, self.INITIAL):
            increment = self.unacked
            self.window += increment
            self.unacked = 0
            return increment
        return 0
