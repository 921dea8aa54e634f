"""One HTTP/1.1 connection: the asyncio Protocol around the sans-I/O core.

It pulls one request at a time from the core, hands it to the application with
itself as the ``Responder`` (HTTP/1.1 is "stream 1"), and pulls the next
pipelined request only when the application is done, so responses keep request
order (RFC 9112 section 9.3.2).

Timeouts are deadlines checked by the server's sweeper once a second instead of
a timer per request: setting a float is cheaper than ``call_later`` on the hot path.

HTTP/2 with prior knowledge (RFC 9113 section 3.3) starts here too: while a new
connection has received nothing else, its first bytes are compared with the
client preface, and a match hands the transport to the HTTP/2 protocol
(``handover``). Afterwards the check costs one attribute test per read.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, cast

from mcp_fast.net.eager import request_failed, start_eagerly
from mcp_fast.net.flow import FlowControl, ReadPause, reset
from mcp_fast.wire import h1
from mcp_fast.wire.events import (
    CONNECTION_CLOSED,
    NEED_DATA,
    ContinueRequested,
    ProtocolError,
    Request,
)
from mcp_fast.wire.responder import Headers, Responder

logger = logging.getLogger("mcp_fast.net")

# The application answers a request at once (returns None) or returns a coroutine to run.
App = Callable[[Request, Responder], Coroutine[Any, Any, None] | None]
# Takes over a connection whose first bytes were the HTTP/2 client preface:
# (transport, its FlowControl, the bytes received so far).
Handover = Callable[[asyncio.Transport, FlowControl, bytes], None]

# RFC 9113 section 3.4: the client connection preface.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Connection(Protocol):
    """What the server's sweeper and shutdown need of a connection (HTTP/1.1 or HTTP/2)."""

    deadline: float

    def on_deadline(self) -> None: ...

    def shutdown(self) -> None: ...

    def cancel_application(self) -> None: ...

    def abort(self) -> None: ...

    def describe(self) -> str:
        """What the connection is doing, in a few words (the shutdown log says what it waits for)."""
        ...


class ConnectionSet(set[Connection]):
    """The server's open connections, and whether it is shutting down (``draining``).

    A connection accepted just before shutdown began is not in the set yet when shutdown tells
    every connection: the loop runs its ``connection_made`` a turn later (uvloop makes the
    protocol as it accepts, and calls it on the next turn; a TLS handshake takes longer still).
    It reads ``draining`` there and shuts down as it starts. Missing it, it would serve its
    requests with keep-alive and idle for the keep-alive timeout, holding the process until the
    shutdown timeout (and behind a proxy that no longer sends it anything, for nothing).
    """

    __slots__ = ("draining", "made_late")

    def __init__(self) -> None:
        super().__init__()
        self.draining = False
        self.made_late = 0  # connections made after shutdown began (the shutdown log counts them)


def peer_address(transport: asyncio.BaseTransport) -> tuple[str, int] | None:
    """The client's (host, port), or None where the socket has none (a Unix socket)."""
    peer = transport.get_extra_info("peername")
    if type(peer) is tuple and len(peer) == 2:
        return peer  # (host, port) as asyncio gives it: kept, not copied (one per connection)
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])  # IPv6: (host, port, flowinfo, scope_id)
    return None


_NEVER = float("inf")
# Bytes of further pipelined requests we hold while one is in flight.
_PIPELINE_BUFFER_LIMIT = 256 * 1024
# After an error answer: how long, and how many bytes, a client's further sending is read and
# dropped before the connection closes (the lingering close of _fail).
_LINGER_SECONDS = 2.0
_LINGER_MAX_BYTES = 64 << 20
# Seconds an idle keep-alive connection is still served after shutdown begins (see shutdown()).
_SHUTDOWN_GRACE = 1.0


@dataclass(frozen=True)
class Timeouts:
    header: float = 10.0  # from the first byte of a request head to its end (slowloris)
    body: float = 30.0  # from the end of the head to the end of the body
    keep_alive: float = 75.0  # idle between requests (above nginx's default upstream 60 s)
    write: float = 30.0  # a stream whose reader takes nothing this long is dropped
    # Bytes a stream may have waiting for a slow reader before it is dropped.
    max_stream_buffer: int = 1 << 20


class Phase(enum.Enum):
    IDLE = "idle"
    HEAD = "head"
    BODY = "body"
    BUSY = "busy"  # the application has the request; no HTTP timeout runs


class HttpConnection(asyncio.Protocol):
    """asyncio Protocol for one client connection, and the Responder of its current request."""

    # Slots: thousands of idle streams each hold one of these.
    __slots__ = (
        "_answered",
        "_app",
        "_chunked",
        "_closing",
        "_connections",
        "_core",
        "_current",
        "_disconnected",
        "_flow",
        "_handover",
        "_keep_alive",
        "_limits",
        "_lingered",
        "_loop",
        "_lost",
        "_on_disconnect",
        "_on_shutdown",
        "_processing",
        "_sniffed",
        "_sniffing",
        "_streaming",
        "_task",
        "_timeouts",
        "_tls",
        "_transport",
        "deadline",
        "phase",
    )

    def __init__(
        self,
        app: App,
        limits: h1.H1Limits,
        timeouts: Timeouts,
        connections: ConnectionSet,
        handover: Handover | None = None,
    ) -> None:
        self._app = app
        self._limits = limits
        self._timeouts = timeouts
        self._connections = connections
        self._core = h1.H1Connection(limits)
        self._loop = asyncio.get_event_loop()
        self._transport: asyncio.Transport | None = None
        self._flow: FlowControl | None = None
        self._current: Request | None = None  # in the application's hands
        self._answered = False
        self._streaming = False
        self._chunked = False
        self._keep_alive = True
        self._task: asyncio.Task[None] | None = None
        self._processing = False
        self._lost = False
        self._disconnected: asyncio.Future[None] | None = None  # made when a stream waits on it
        self._on_disconnect: Callable[[], None] | None = None
        self._on_shutdown: Callable[[], None] | None = None
        self._closing = False  # server shutdown: finish the current request, then close
        self._handover = handover  # None: HTTP/2 is off
        self._lingered = -1  # bytes dropped since an error answer; -1: not lingering
        self._sniffing = handover is not None  # nothing but a preface prefix received yet
        self._sniffed = b""
        self._tls = False
        self.phase = Phase.IDLE
        self.deadline = _NEVER

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport quacks like asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._core.client = peer_address(self._transport)
        self._flow = FlowControl(self._transport, self._timeouts.write)
        self._connections.add(self)
        if self._connections.draining:
            # Accepted just before shutdown began, made only now (see ConnectionSet): what it
            # carries is answered with Connection: close, and it closes after the grace.
            self._closing = True
            self._keep_alive = False
            self._connections.made_late += 1
        self._idle()
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._tls = True
            # RFC 9113 section 3.2: over TLS, HTTP/2 is chosen by ALPN, never by prior
            # knowledge (a preface without ALPN h2 is read as HTTP/1.1, and refused).
            self._sniffing = False
            if self._handover is not None and ssl_object.selected_alpn_protocol() == "h2":
                self._connections.discard(self)
                self.deadline = _NEVER
                self._handover(self._transport, self._flow, b"")

    def data_received(self, data: bytes) -> None:
        if self._lingered >= 0:
            self._linger_on(len(data))
            return
        if self._sniffing:
            data = self._sniff(data)
            if not data:
                return
        if self._current is None:
            self._process(data)
            return
        self._core.receive_data(data)
        if self._core.buffered_bytes > _PIPELINE_BUFFER_LIMIT:
            assert self._flow is not None
            self._flow.pause_reading(ReadPause.PIPELINE_FULL)

    def eof_received(self) -> bool | None:
        if self._sniffing:
            self._sniffing = False
            if self._sniffed:
                self._core.receive_data(self._sniffed)
        if self._lingered >= 0:
            assert self._transport is not None
            self._transport.close()  # the client has sent everything: our answer is safe
            return True
        self._core.receive_data(b"")
        if self._current is None:
            self._process()
        elif self._streaming or self._on_disconnect is not None:
            # The client closed its side while a stream or a cancellable (2026) request was
            # open. Behind a proxy this is how a client's departure shows (nginx closes its
            # upstream connection): streams end and a 2026 request is cancelled at once instead
            # of when a later write fails. A plain JSON answer to a half-closed client is
            # still written (RFC 9112 section 9.6 lets a client half-close).
            self._peer_gone()
        # Keep the transport open to finish answering the current request (TLS has no
        # half-close: there the transport closes anyway).
        return None if self._tls else True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._connections.discard(self)
        self._peer_gone()
        if self._flow is not None:
            self._flow.on_connection_lost()
        # A disconnect is not a cancellation (MCP 2025 transports): a running
        # handler finishes and its answer is dropped.

    def _peer_gone(self) -> None:
        """Whatever waits for the client to leave learns it now (once)."""
        if self._disconnected is not None and not self._disconnected.done():
            self._disconnected.set_result(None)
        if self._on_disconnect is not None and self._current is not None:
            callback, self._on_disconnect = self._on_disconnect, None
            callback()

    def pause_writing(self) -> None:
        assert self._flow is not None
        self._flow.on_pause_writing()

    def resume_writing(self) -> None:
        assert self._flow is not None
        self._flow.on_resume_writing()
        self._flow.resume_reading(ReadPause.WRITE_BLOCKED)
        if self._current is None:
            self._process()

    # -- HTTP/2 with prior knowledge ------------------------------------------------

    def _sniff(self, data: bytes) -> bytes:
        """The first bytes of a connection: HTTP/2's preface, or HTTP/1.1.

        Returns the bytes for the HTTP/1.1 parser, or b"" when they were handed
        to HTTP/2 or may still be the start of its preface (it can arrive in
        pieces, down to one byte per read).
        """
        if self._sniffed:
            data = self._sniffed + data
        n = min(len(data), len(_H2_PREFACE))
        if data[:n] != _H2_PREFACE[:n]:
            self._sniffing = False
            self._sniffed = b""
            return data
        if n < len(_H2_PREFACE):
            self._sniffed = data
            self._set_phase(Phase.HEAD)  # a slow preface gets the header timeout
            return b""
        self._sniffing = False
        self._sniffed = b""
        handover = self._handover
        assert handover is not None and self._transport is not None and self._flow is not None
        self._connections.discard(self)
        self.deadline = _NEVER
        handover(self._transport, self._flow, data)
        return b""

    # -- request loop ------------------------------------------------------------

    def _set_phase(self, phase: Phase) -> None:
        """Waiting for the rest of a head (HEAD) or body (BODY): that phase's timeout runs."""
        if phase is self.phase:
            return  # a slow client trickling bytes does not move its deadline
        self.phase = phase
        self.deadline = self._loop.time() + (
            self._timeouts.header if phase is Phase.HEAD else self._timeouts.body
        )

    def _idle(self) -> None:
        """Between requests: the keep-alive timeout runs (during shutdown, its short grace)."""
        self.phase = Phase.IDLE
        wait = _SHUTDOWN_GRACE if self._closing else self._timeouts.keep_alive
        self.deadline = self._loop.time() + wait

    def _process(self, data: bytes | None = None) -> None:
        """Pull and start requests until one is in flight or more bytes are needed.

        ``data`` just arrived (the core takes it with its one-call fast path)."""
        transport = self._transport
        if self._processing or self._lost or transport is None:
            if data is not None:
                self._core.receive_data(data)
            return
        flow = self._flow
        assert flow is not None
        core = self._core
        self._processing = True
        try:
            while self._current is None and not transport.is_closing():
                if flow.write_paused:
                    # The peer does not read our answers: stop taking its requests.
                    if data is not None:
                        core.receive_data(data)
                    flow.pause_reading(ReadPause.WRITE_BLOCKED)
                    return
                try:
                    if data is None:
                        event = core.next_event()
                    else:
                        event = core.feed(data)
                        data = None
                except ProtocolError as exc:
                    self._fail(exc.status, exc.reason)
                    return
                if type(event) is Request:
                    self._start(event)
                    if self._current is None and core.at_rest:
                        break  # answered at once, nothing more arrived: the common case
                    continue
                if event is NEED_DATA:
                    if core.in_body:
                        self._set_phase(Phase.BODY)
                    elif core.has_partial_head:
                        self._set_phase(Phase.HEAD)
                    elif self.phase is not Phase.IDLE:
                        self._idle()  # only empty lines came (RFC 9112 section 2.2)
                    break
                if event is CONNECTION_CLOSED:
                    transport.close()
                    return
                assert type(event) is ContinueRequested
                transport.write(h1.CONTINUE_RESPONSE)
            if data is not None:
                core.receive_data(data)  # closing: the core drops or keeps it, as it sees fit
            if flow.reading_paused:
                # Whatever waited behind the request in flight has been taken (or a request
                # is in flight again, and data_received pauses anew if too much waits).
                flow.resume_reading(ReadPause.PIPELINE_FULL)
        finally:
            self._processing = False

    def _start(self, request: Request) -> None:
        self._current = request
        self._on_disconnect = None
        self._on_shutdown = None
        self._answered = False
        self._streaming = False
        self._keep_alive = request.keep_alive and not self._closing
        self.phase = Phase.BUSY  # no HTTP timeout while the application has the request
        self.deadline = _NEVER
        try:
            pending = self._app(request, self)
            task = None if pending is None else start_eagerly(self._loop, pending)
        except Exception:  # boundary: an application bug answers 500, never a traceback
            logger.exception("unhandled error while serving %r", request.target)
            self._application_done(failed=True)
            return
        if task is None:
            self._application_done(failed=False)
        else:
            self._task = task
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._task = None
        self._application_done(request_failed(task))
        if self._current is None:
            self._process()

    def _application_done(self, failed: bool) -> None:
        """The application returned: the exchange must be complete now."""
        if self._current is None:
            return
        if not self._answered:
            if not failed:
                logger.error("the application returned without answering %r", self._current.target)
            self._keep_alive = False
            self.respond(500, [(b"content-type", b"text/plain")], b"Internal server error\n")
        elif self._streaming:
            self._keep_alive = False
            self.end_stream()
        self._current = None
        if not self._keep_alive and self._transport is not None:
            self._transport.close()
        else:
            self._idle()

    def _fail(self, status: int, reason: str) -> None:
        """Answer a protocol error and close: the byte stream can't be trusted any more.

        A lingering close (RFC 9112 section 9.6): the sending side closes first, then what the
        client still sends (the rest of a refused body, say) is read and dropped for a moment.
        Closing at once would let those bytes turn into a reset that destroys our answer
        before the client reads it -- behind nginx, a 502 that takes the instance out of the
        upstream instead of the 413.
        """
        transport = self._transport
        assert transport is not None
        transport.writelines(h1.error_response(status, reason))
        if self._lingered >= 0 or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingered = 0
        self.phase = Phase.BUSY  # no HTTP timeout: the linger deadline below rules
        self.deadline = self._loop.time() + _LINGER_SECONDS

    def _linger_on(self, received: int) -> None:
        """Bytes after our error answer: dropped, up to a bound."""
        self._lingered += received
        if self._lingered > _LINGER_MAX_BYTES and self._transport is not None:
            self._transport.close()

    def on_deadline(self) -> None:
        """Called by the sweeper when ``deadline`` passed."""
        if self._transport is None or self._transport.is_closing():
            return
        if self.phase is Phase.IDLE or self._lingered >= 0:
            self._transport.close()
        elif self.phase in (Phase.HEAD, Phase.BODY):
            self._fail(408, "Request timeout: the request was not received in time")

    def shutdown(self) -> None:
        """Server shutdown: busy connections close after their answer (``Connection: close``),
        GET streams end, idle ones close after a short grace. Once: a second call would end a
        stream whose application asked to end it itself (``on_shutdown``)."""
        if self._closing:
            return  # told already (or made after shutdown began: connection_made did this)
        self._closing = True
        if not self._answered or self._current is None:
            # A head sent already promised keep-alive: a proxy takes the connection back into
            # its pool once the answer ends, and may send on it at once, so closing after the
            # answer would reset that request (nginx: 502 for a POST). It is served as an idle
            # one is, below; a head still to come says Connection: close.
            self._keep_alive = False
        if self._transport is None:
            return
        if self._current is None:
            if self.phase is Phase.IDLE:
                # A proxy may be sending on this pooled connection right now: closing at once
                # would turn that request into a reset (nginx answers a POST with 502). For a
                # moment a request is still served, with Connection: close, which takes the
                # connection out of the proxy's pool; the sweeper closes it after that.
                self.deadline = min(self.deadline, self._loop.time() + _SHUTDOWN_GRACE)
            # A request under way (HEAD/BODY) is finished, within its own timeouts.
        elif self._streaming and self._current.method == b"GET":
            callback, self._on_shutdown = self._on_shutdown, None
            if callback is not None:
                callback()  # the application ends the stream once it owes nothing
                return
            # A GET stream never ends by itself: end it (clients reconnect elsewhere). Its head
            # promised keep-alive, and a proxy pools the connection as soon as the last chunk
            # arrives: closing it right after would reset the request the proxy sends on it
            # next (nginx: 502 for a POST). So the stream's producer learns the stream is over
            # as if its client had left, and the connection then waits out the grace as an
            # idle one does (a request in it is answered with Connection: close).
            self.end_stream()
            self._peer_gone()

    def describe(self) -> str:
        transport = self._transport
        request = self._current
        if request is not None:
            what = f"{request.method.decode('latin-1')} {request.path.decode('latin-1')}"
            if self._streaming:
                return f"{what} (a stream)"
            if self._answered:
                return f"{what} (answered, its handler still runs)"
            return f"{what} (being answered)"
        if self._lingered >= 0:
            return "closing after an error answer"
        if transport is not None and transport.is_closing():
            unsent = transport.get_write_buffer_size()
            return f"closing ({unsent} bytes not taken by the client yet)" if unsent else "closing"
        if self.phase is Phase.HEAD or (self._sniffing and self._sniffed):
            return "receiving a request head"
        if self.phase is Phase.BODY:
            return "receiving a request body"
        return "idle (its shutdown grace)" if self._closing else "idle"

    def abort(self) -> None:
        """Drop the connection now (a reset: see ``flow.reset``). The application's Task is
        cancelled only at server shutdown; for a stream it sees ``disconnected`` and ends itself."""
        if self._transport is not None:
            reset(self._transport)

    def cancel_application(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # -- Responder ---------------------------------------------------------------

    @property
    def disconnected(self) -> bool:
        return self._lost

    def respond(self, status: int, headers: Headers, body: bytes) -> None:
        request = self._current
        if request is None or self._answered:
            return
        self._answered = True
        if self._lost or self._transport is None:
            return
        http10 = request.http_version == b"1.0"
        self._transport.writelines(
            h1.encode_response(status, headers, body, keep_alive=self._keep_alive, http10=http10)
        )

    def start_stream(self, status: int, headers: Headers) -> None:
        request = self._current
        if request is None or self._answered:
            return
        self._answered = True
        if self._closing and request.method == b"GET" and self._transport is not None:
            # A GET stream asked for on a kept-alive connection after shutdown began (in the
            # grace of shutdown()) would outlive the drain and hold the process until the
            # shutdown timeout. Nothing of it is sent and the connection closes: a GET is
            # idempotent, so a proxy (nginx: proxy_next_upstream error) or the client sends
            # it again, to an instance that stays (RFC 9112 section 9.3.1). The stream's
            # producer sees the connection gone and ends.
            self._keep_alive = False
            self._transport.close()
            return
        self._streaming = True
        http10 = request.http_version == b"1.0"
        # HTTP/1.0 has no chunked coding: the body ends when the connection closes.
        self._chunked = not http10
        if not self._chunked:
            self._keep_alive = False
        if self._lost or self._transport is None:
            return
        self._transport.write(
            h1.response_head(
                status,
                headers,
                content_length=None,
                keep_alive=self._keep_alive,
                http10=http10,
                chunked=self._chunked,
            )
        )

    def send_stream(self, data: bytes) -> None:
        transport = self._transport
        if not self._streaming or self._lost or transport is None or not data:
            return
        if self._chunked:
            transport.writelines(h1.encode_chunk(data))
        else:
            transport.write(data)
        if transport.get_write_buffer_size() > self._timeouts.max_stream_buffer:
            # The reader fell too far behind: drop it rather than buffer without bound.
            logger.info("dropping a stream whose client stopped reading")
            self.abort()

    async def drain(self) -> None:
        if self._flow is not None:
            await self._flow.drain()

    def on_disconnect(self, callback: Callable[[], None] | None) -> None:
        self._on_disconnect = callback

    def on_shutdown(self, callback: Callable[[], None] | None) -> None:
        self._on_shutdown = callback

    def wait_disconnected(self) -> asyncio.Future[None]:
        future = self._disconnected
        if future is None or future.cancelled():  # a waiter that was cancelled took it along
            future = self._disconnected = self._loop.create_future()
            if self._lost:
                future.set_result(None)
        return future

    def end_stream(self) -> None:
        if not self._streaming:
            return
        self._streaming = False
        if self._lost or self._transport is None:
            return
        if self._chunked:
            self._transport.write(h1.CHUNKED_END)
        else:
            self._transport.close()
