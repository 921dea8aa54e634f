"""One HTTP/2 connection: the asyncio Protocol around the sans-I/O core, and a
small ``Responder`` per stream.

``HttpConnection`` recognises the client preface on a new connection (h2c with
prior knowledge, RFC 9113 section 3.3), or a TLS handshake whose ALPN chose
``h2`` (section 3.2), and hands the transport over with ``transport.set_protocol``;
from then on this object gets the transport's callbacks. Streams are served
concurrently: each complete request is given to the same ``App(request,
responder)`` as an HTTP/1.1 request, started eagerly.

Flow control has two levels and one owner each. The connection's
``FlowControl`` (taken over from the HTTP/1.1 protocol) owns the transport:
pause/resume reading and the waits for its buffer to drain. The core owns the
HTTP/2 windows: output that does not fit is queued per stream, and sent by
``flush`` when the peer opens the window or the transport drains. A stream's
``drain`` waits on both.

Timeouts are checked by the server's sweeper about once a second
(``on_deadline``); the core decides which streams are late.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from mcp_fast.net.connection import App, ConnectionSet, Timeouts, peer_address
from mcp_fast.net.eager import request_failed, start_eagerly
from mcp_fast.net.flow import FlowControl, ReadPause, reset
from mcp_fast.wire.events import NEED_DATA, ProtocolError, Request, StreamReset
from mcp_fast.wire.h2 import H2Connection, H2Limits, H2Timeouts
from mcp_fast.wire.responder import Headers

logger = logging.getLogger("mcp_fast.net")

# A stream's drain() returns while at most this much of it waits for window.
_DRAIN_LOW: Final = 64 * 1024
# DATA framed per flush round, so one stream cannot fill the transport alone.
_FLUSH_BUDGET: Final = 64 * 1024
_SWEEP: Final = 1.0  # the sweeper's period: on_deadline runs about this often
# After our GOAWAY, how long we keep reading (and dropping) what the peer still sends
# before closing: closing with unread input makes the kernel send a reset, and the
# peer may then never read the GOAWAY that says why.
_LINGER: Final = 1.0

# Http2Stream flags.
_ANSWERED: Final = 1
_STREAMING: Final = 2
_DONE: Final = 4  # the application returned; the exchange is over
_GONE: Final = 8  # reset by the peer (or by us), or the connection was lost
_GET: Final = 16

_INTERNAL_ERROR: Final = ((b"content-type", b"text/plain"),)


class Http2Stream:
    """The Responder of one stream. Slotted and small: an idle SSE stream costs
    this object, the core's record and h2's stream state."""

    __slots__ = (
        "_conn", "_disconnected", "_flags", "_on_disconnect", "_on_shutdown", "_task", "_waiter", "stream_id",
    )  # fmt: skip

    def __init__(self, conn: Http2Connection, stream_id: int, is_get: bool) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self._flags = _GET if is_get else 0
        self._on_disconnect: Callable[[], None] | None = None
        self._on_shutdown: Callable[[], None] | None = None
        self._disconnected: asyncio.Future[None] | None = None  # made when someone waits on it
        self._task: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None  # a drain() waiting for window

    # -- Responder -------------------------------------------------------------

    @property
    def disconnected(self) -> bool:
        return bool(self._flags & _GONE)

    def respond(self, status: int, headers: Headers, body: bytes) -> None:
        flags = self._flags
        if flags & (_ANSWERED | _DONE):
            return
        self._flags = flags | _ANSWERED
        if flags & _GONE:
            return
        conn = self._conn
        conn.core.respond(self.stream_id, status, headers, body)
        conn.written()

    def start_stream(self, status: int, headers: Headers) -> None:
        flags = self._flags
        if flags & (_ANSWERED | _DONE):
            return
        self._flags = flags | _ANSWERED | _STREAMING
        if flags & _GONE:
            return
        conn = self._conn
        conn.core.start_stream(self.stream_id, status, headers)
        conn.written()

    def send_stream(self, data: bytes) -> None:
        if self._flags & (_STREAMING | _GONE | _DONE) != _STREAMING or not data:
            return
        conn = self._conn
        core = conn.core
        core.send_data(self.stream_id, data)
        if core.queued(self.stream_id) > conn.max_stream_buffer:
            # The reader fell too far behind: drop it rather than buffer without bound.
            logger.info("dropping a stream whose client stopped reading")
            self.abort()
            return
        conn.written()

    async def drain(self) -> None:
        conn = self._conn
        if conn._processing:
            # Output waits while the connection processes what it read, to go out in one write.
            # A handler started from there (an eager Task) writes it now, so that a client that
            # reads slowly holds it back here, instead of the output piling up unwritten.
            conn._write_out()
        await conn.flow.drain()  # the transport (the whole connection)
        # This stream's HTTP/2 window: the core resets a stream whose window
        # stays shut for the write timeout, which ends this wait too.
        while self._flags & (_GONE | _DONE) == 0 and conn.core.queued(self.stream_id) > _DRAIN_LOW:
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            conn.drain_waiting.add(self)
            try:
                await waiter
            finally:
                self._waiter = None
                conn.drain_waiting.discard(self)
            await conn.flow.drain()

    def end_stream(self) -> None:
        flags = self._flags
        if not flags & _STREAMING:
            return
        self._flags = flags & ~_STREAMING
        if flags & _GONE:
            return
        conn = self._conn
        conn.core.end_stream(self.stream_id)
        conn.written()

    def on_disconnect(self, callback: Callable[[], None] | None) -> None:
        self._on_disconnect = callback

    def on_shutdown(self, callback: Callable[[], None] | None) -> None:
        self._on_shutdown = callback

    def shutting_down(self) -> bool:
        """Server shutdown: the application's callback, if it set one (True), ends the stream later."""
        callback, self._on_shutdown = self._on_shutdown, None
        if callback is None:
            return False
        callback()
        return True

    def wait_disconnected(self) -> asyncio.Future[None]:
        future = self._disconnected
        if future is None or future.cancelled():  # a waiter that was cancelled took it along
            future = self._disconnected = self._conn._loop.create_future()
            if self._flags & _GONE:
                future.set_result(None)
        return future

    def abort(self) -> None:
        """Reset this stream (RST_STREAM CANCEL); the other streams go on. Only when
        the connection itself is stuck (the peer reads nothing) is it dropped."""
        if self._flags & _GONE:
            return
        conn = self._conn
        if conn.stuck:
            conn.abort()
            return
        conn.core.reset(self.stream_id)
        self.gone()
        conn.written()

    # -- for the connection ------------------------------------------------------

    @property
    def is_open_get_stream(self) -> bool:
        return self._flags & (_GET | _STREAMING) == _GET | _STREAMING

    def gone(self) -> None:
        """The stream ended under the application: tell whoever listens."""
        flags = self._flags
        if flags & _GONE:
            return
        self._flags = flags | _GONE
        if self._on_disconnect is not None and not flags & _DONE:
            callback, self._on_disconnect = self._on_disconnect, None
            callback()
        if self._disconnected is not None and not self._disconnected.done():
            self._disconnected.set_result(None)
        self.wake()

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def task_done(self, task: asyncio.Task[None]) -> None:
        self._task = None
        self._conn.application_done(self, request_failed(task))

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def finish(self, failed: bool) -> bool:
        """The application returned: complete the exchange. False if it already was."""
        flags = self._flags
        if flags & _DONE:
            return False
        if not flags & _ANSWERED:
            if not failed:
                logger.error("the application returned without answering stream %d", self.stream_id)
            self.respond(500, _INTERNAL_ERROR, b"Internal server error\n")
        elif flags & _STREAMING:
            self.end_stream()
        self._flags |= _DONE
        self._on_disconnect = None
        self._on_shutdown = None
        return True


class Http2Connection(asyncio.Protocol):
    """asyncio Protocol for one HTTP/2 client connection."""

    __slots__ = (
        "_app",
        "_closing",
        "_connections",
        "_eof",
        "_linger_until",
        "_loop",
        "_lost",
        "_processing",
        "_streams",
        "_timeouts",
        "_tls",
        "_transport",
        "core",
        "deadline",
        "drain_waiting",
        "flow",
        "max_stream_buffer",
    )

    def __init__(self, app: App, limits: H2Limits, timeouts: Timeouts, connections: ConnectionSet) -> None:
        self._app = app
        self._timeouts = timeouts
        self._connections = connections
        self._loop = asyncio.get_event_loop()
        self.core = H2Connection(
            limits,
            H2Timeouts(
                header=timeouts.header, body=timeouts.body, idle=timeouts.keep_alive, write=timeouts.write
            ),
            clock=self._loop.time,
        )
        self.max_stream_buffer = timeouts.max_stream_buffer
        self._transport: asyncio.Transport | None = None
        self._tls = False
        self.flow: FlowControl  # set by take_over
        self._streams: dict[int, Http2Stream] = {}  # streams the application holds
        self.drain_waiting: set[Http2Stream] = set()
        self._processing = False
        self._closing = False  # server shutdown: finish open streams, then close
        self._eof = False
        self._lost = False
        self._linger_until = 0.0  # closing: GOAWAY sent, input is dropped until then
        self.deadline = self._loop.time() + _SWEEP

    def take_over(self, transport: asyncio.Transport, flow: FlowControl, data: bytes) -> None:
        """Continue a connection whose first bytes were the HTTP/2 preface."""
        self._transport = transport
        self._tls = transport.get_extra_info("ssl_object") is not None
        self.core.client = peer_address(transport)
        self.flow = flow
        self.core.set_output_blocked(flow.write_paused)
        self._connections.add(self)
        if data:
            self.data_received(data)
        else:
            self._write_out()  # over TLS (ALPN h2): our SETTINGS go first
        if self._connections.draining:
            # Its first bytes came after shutdown began (see ConnectionSet): what they asked is
            # answered, the GOAWAY says nothing more will be.
            self.shutdown()

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover
        raise RuntimeError("Http2Connection takes a connection over (take_over), it is not made with one")

    def data_received(self, data: bytes) -> None:
        if self._linger_until:
            return  # closing: dropped
        self.core.receive_data(data)
        self._process()

    def eof_received(self) -> bool | None:
        if self._linger_until:
            return False  # the peer is done too: close
        self.core.receive_data(b"")
        self._process()
        # Keep the transport open to finish the streams in flight (TLS has no half-close).
        return None if self._tls else True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._connections.discard(self)
        for stream in list(self._streams.values()):
            stream.gone()
        self.flow.on_connection_lost()
        # As with HTTP/1.1, a disconnect is not a cancellation: running
        # handlers finish and their answers are dropped.

    def pause_writing(self) -> None:
        self.flow.on_pause_writing()
        self.core.set_output_blocked(True)

    def resume_writing(self) -> None:
        self.flow.on_resume_writing()
        self.core.set_output_blocked(False)
        self.flow.resume_reading(ReadPause.WRITE_BLOCKED)
        self._write_out()  # (pauses reading again if the transport fills up again)

    # -- events ------------------------------------------------------------------

    def _process(self) -> None:
        if self._processing or self._lost:
            return
        self._processing = True
        core = self.core
        try:
            while True:
                try:
                    event = core.next_event()
                except ProtocolError as exc:
                    self._protocol_error(exc)
                    return
                if event is NEED_DATA:
                    break
                kind = type(event)
                if kind is Request:
                    assert isinstance(event, Request)
                    self._start(event)
                elif kind is StreamReset:
                    assert isinstance(event, StreamReset)
                    stream = self._streams.get(event.stream_id)
                    if stream is not None:
                        stream.gone()
                else:  # CONNECTION_CLOSED: EOF, the peer's GOAWAY, or ours (timeouts)
                    self._eof = True
                    break
        finally:
            self._processing = False
        self._write_out()

    def _protocol_error(self, exc: ProtocolError) -> None:
        """The core sent GOAWAY with the error code: write it and close."""
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("HTTP/2 connection error (%s): %s", self.core.error_code, exc.reason)
        transport = self._transport
        assert transport is not None
        data = self.core.data_to_send()
        if data:
            transport.write(data)
        self._close()

    def _close(self) -> None:
        """Half-close after the GOAWAY and linger (see ``_LINGER``), then close."""
        transport = self._transport
        if transport is None or self._linger_until or transport.is_closing():
            return
        self._linger_until = self._loop.time() + _LINGER
        if not transport.can_write_eof():
            # TLS has no half-close: close (after what is buffered); a peer that reads
            # nothing would keep that open, so on_deadline aborts it after the linger.
            transport.close()
            return
        transport.write_eof()  # FIN once the GOAWAY is out
        # Read on (to drop it), whatever paused reading before.
        self.flow.resume_reading(ReadPause.PIPELINE_FULL | ReadPause.WRITE_BLOCKED)

    def _start(self, request: Request) -> None:
        stream = Http2Stream(self, request.stream_id, request.method == b"GET")
        self._streams[request.stream_id] = stream
        try:
            pending = self._app(request, stream)
            task = None if pending is None else start_eagerly(self._loop, pending)
        except Exception:  # boundary: an application bug answers 500, never a traceback
            logger.exception("unhandled error while serving %r", request.target)
            self.application_done(stream, failed=True)
            return
        if task is None:
            self.application_done(stream, failed=False)
        else:
            stream._task = task
            task.add_done_callback(stream.task_done)

    def application_done(self, stream: Http2Stream, failed: bool) -> None:
        if not stream.finish(failed):
            return
        self._streams.pop(stream.stream_id, None)
        self.core.release(stream.stream_id)
        self.written()

    # -- output ------------------------------------------------------------------

    def written(self) -> None:
        """A stream produced output: write it now (batched while events are processed).
        A write can reset a stream (the connection's buffer is full): that event is
        taken at once."""
        if not self._processing:
            if self.core.has_events:
                self._process()
            else:
                self._write_out()

    def _write_out(self) -> None:
        transport = self._transport
        if transport is None or self._lost or self._linger_until:
            return
        core = self.core
        flow = self.flow
        data = core.data_to_send()
        if data:
            transport.write(data)  # may call pause_writing at once
        while core.has_queued and not flow.write_paused:
            sent = core.flush(_FLUSH_BUDGET)
            data = core.data_to_send()
            if data:
                transport.write(data)
            if not sent:
                break
        if self.drain_waiting:
            for stream in list(self.drain_waiting):
                if core.queued(stream.stream_id) <= _DRAIN_LOW:
                    stream.wake()
        if core.closed or (
            (self._closing or self._eof or core.draining) and not self._streams and not core.has_queued
        ):
            self._close()
        elif flow.write_paused:
            # The peer does not read what we write: stop reading what it sends
            # (this also bounds what PING/SETTINGS answers can pile up).
            flow.pause_reading(ReadPause.WRITE_BLOCKED)

    @property
    def stuck(self) -> bool:
        """The transport takes nothing more: resetting one stream would not help."""
        return self.flow.write_paused

    # -- for the server ----------------------------------------------------------

    def on_deadline(self) -> None:
        """Called by the sweeper when ``deadline`` passed (about once a second)."""
        now = self._loop.time()
        self.deadline = now + _SWEEP
        transport = self._transport
        if transport is None:
            return
        if self._linger_until:
            if now >= self._linger_until:
                transport.abort()  # (close() would wait for a peer that may never read)
            return
        if transport.is_closing():
            return
        # (A peer that reads nothing for the write timeout is dropped by the FlowControl's own
        # timer, started when writing pauses.)
        self.core.check_timeouts()
        self._process()

    def shutdown(self) -> None:
        """Server shutdown: GOAWAY; open requests finish, GET streams end, then close. Once: a
        second call would end a stream whose application asked to end it itself."""
        if self._closing:
            return
        self._closing = True
        if self._transport is None or self._lost or self._linger_until:
            return
        self.core.goaway()
        for stream in list(self._streams.values()):
            if stream.is_open_get_stream and not stream.shutting_down():
                # A GET stream never ends by itself: end it (clients reconnect elsewhere).
                stream.end_stream()
                stream.gone()
        self._write_out()

    def describe(self) -> str:
        streams = list(self._streams.values())
        if not streams:
            return "HTTP/2, closing" if self._closing else "HTTP/2, idle"
        gets = sum(stream.is_open_get_stream for stream in streams)
        return f"HTTP/2, {len(streams)} streams" + (f" ({gets} GET streams)" if gets else "")

    def abort(self) -> None:
        if self._transport is not None:
            reset(self._transport)

    def cancel_application(self) -> None:
        for stream in list(self._streams.values()):
            stream.cancel()
