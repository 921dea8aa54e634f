"""Events that the sans-I/O wire cores hand to the layers above.

HTTP/1.1 is "stream 1" and HTTP/2 streams carry their own id, so nothing above
the wire cores can tell the HTTP versions apart: both produce the same
``Request`` (head plus complete body) and both are answered through the same
writer calls in ``mcp_fast.net``.

No asyncio here: these are plain data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

Body = bytes | memoryview


class ProtocolError(Exception):
    """The peer broke the HTTP protocol.

    The only exception a wire core raises on bad input (h11's contract): any
    other exception escaping ``receive_data``/``next_event`` is a bug.
    ``status`` is the HTTP status to answer with (400, 413, 414, 431, 501, 505),
    ``reason`` a short plain sentence that is safe to show to the client.
    After a ProtocolError the connection can no longer be trusted and is closed
    once the error response is written.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_PATH_END: Final = re.compile(rb"[?#]")


def path_of(target: bytes) -> bytes:
    """The part of a request target that requests are routed on: up to the query.

    A fragment ("#...") is never part of a request (RFC 9110 section 7.1: it is
    not sent); a client that sends one anyway gets it dropped, the same way in
    HTTP/1.1 origin-form, absolute-form and HTTP/2 ``:path``.
    """
    end = _PATH_END.search(target)
    return target if end is None else target[: end.start()]


@dataclass(slots=True)
class Request:
    """A complete request: head and body.

    ``headers`` maps lower-cased field names to raw values; repeated fields
    are joined with ``b", "`` (RFC 9110 section 5.3). ``body`` is ``b""`` when
    the request has none; it may be a memoryview of the received bytes so that
    the JSON decoder reads it without a copy. ``client`` is the peer's address,
    given to the core by the network adapter (a sans-I/O core has no socket).
    """

    method: bytes
    target: bytes
    path: bytes
    headers: dict[bytes, bytes]
    body: Body
    keep_alive: bool
    http_version: bytes = b"1.1"
    stream_id: int = 1
    # The peer's address as the network adapter knows it ((host, port); None when unknown).
    client: tuple[str, int] | None = None


@dataclass(slots=True)
class StreamReset:
    """The stream ``stream_id`` ended without a complete exchange (HTTP/2 only).

    The peer sent RST_STREAM, or the wire core reset the stream itself (a
    stream-level protocol error, a reader that took nothing for too long).
    Its responder is disconnected from now on; the other streams go on.
    """

    stream_id: int


@dataclass(slots=True)
class ContinueRequested:
    """The client sent ``Expect: 100-continue`` and waits before sending its body.

    The network adapter answers with ``100 Continue`` (or with a final error).
    """

    stream_id: int = 1


class _NeedData:
    """More bytes are needed before another event can be produced."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


class _Closed:
    """The peer closed its side and no further request can arrive."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "CONNECTION_CLOSED"


NEED_DATA: Final = _NeedData()
CONNECTION_CLOSED: Final = _Closed()

Event = Request | ContinueRequested | StreamReset | _NeedData | _Closed
