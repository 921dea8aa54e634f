"""HTTP/2 stream states of a server (RFC 9113 section 5.1), as data.

A server's streams are opened by the client's HEADERS (no server push, so no
"reserved" states). ``TRANSITIONS`` is the state diagram of section 5.1 restricted
to those. What a frame on a stream that is not open means (section 5.1) is decided
in one place, ``H2Connection._on_closed_stream``.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Final

from mcp_fast.wire.events import Body, Request

__all__ = ["TRANSITIONS", "Input", "State", "Stream"]


class State(enum.Enum):
    # Members are singletons: hash by identity (a C slot), not Enum's Python-level __hash__,
    # since the transition table is looked up on every request.
    __hash__ = object.__hash__

    OPEN = "open"
    HALF_CLOSED_REMOTE = "half-closed (remote)"  # the client sent END_STREAM
    HALF_CLOSED_LOCAL = "half-closed (local)"  # we sent END_STREAM, the body still comes
    CLOSED = "closed"


class Input(enum.Enum):
    __hash__ = object.__hash__

    RECV_END_STREAM = "recv END_STREAM"
    SEND_END_STREAM = "send END_STREAM"
    RECV_RST_STREAM = "recv RST_STREAM"
    SEND_RST_STREAM = "send RST_STREAM"


OPEN, REMOTE, LOCAL, CLOSED = State.OPEN, State.HALF_CLOSED_REMOTE, State.HALF_CLOSED_LOCAL, State.CLOSED

TRANSITIONS: Final[dict[tuple[State, Input], State]] = {
    (OPEN, Input.RECV_END_STREAM): REMOTE,
    (OPEN, Input.SEND_END_STREAM): LOCAL,
    (REMOTE, Input.SEND_END_STREAM): CLOSED,
    (LOCAL, Input.RECV_END_STREAM): CLOSED,
    **{(state, Input.RECV_RST_STREAM): CLOSED for state in State},
    **{(state, Input.SEND_RST_STREAM): CLOSED for state in State},
}


class Stream:
    """What the core keeps per stream; small, since thousands may stay open (SSE)."""

    __slots__ = (
        "answered",
        "blocked_since",
        "body",
        "end_after",
        "expected",
        "finishing",
        "queue",
        "queued",
        "received",
        "recv_unacked",
        "recv_window",
        "released",
        "request",
        "reset_after",
        "send_window",
        "since",
        "state",
    )

    def __init__(self, request: Request | None, now: float, send_window: int, recv_window: int) -> None:
        self.state = OPEN
        self.request = request  # the head while its body arrives; None once handed out
        self.body: bytes | bytearray | None = None
        self.received = 0  # body bytes so far
        self.expected = -1  # content-length (-1: none)
        self.since = now  # when the head ended (body timeout)
        self.answered = False  # response HEADERS sent
        self.finishing = False  # END_STREAM sent or queued: no more output
        self.released = False  # the application is done with it (or never had it)
        self.reset_after = -1  # RST_STREAM code to send once the response is out (-1: none)
        self.queue: deque[Body] | None = None  # output waiting for window
        self.queued = 0
        self.end_after = False  # END_STREAM after the queue
        self.blocked_since = 0.0  # output waiting on a shut window since (0: not)
        self.send_window = send_window  # section 6.9: what we may send
        self.recv_window = recv_window  # what the client may still send
        self.recv_unacked = 0  # body bytes taken in, not yet given back by WINDOW_UPDATE

    @property
    def remote_ended(self) -> bool:
        return self.state is REMOTE or self.state is CLOSED

    @property
    def closed(self) -> bool:
        return self.state is CLOSED

    def move(self, event: Input) -> None:
        self.state = TRANSITIONS[(self.state, event)]
