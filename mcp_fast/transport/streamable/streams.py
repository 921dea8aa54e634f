"""A session's server-to-client streams: the GET stream, and the resumption of any stream.

Spec: basic/transports.mdx "Listening for Messages from the Server" (GET: one stream per
session here, a second is 409) and "Resumability and Redelivery" (GET with Last-Event-ID gets
what the client missed on that one stream, then the rest of it as it happens). What is not tied
to a request goes to the GET stream: list-changed and resource-updated notifications, task
status, and the messages of tasks. One timer sends keep-alive comments on every open stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from mcp_fast.call import Outbound
from mcp_fast.fleet.base import FleetUnavailable
from mcp_fast.fleet.event_store import EventStore, Replay, priming_id
from mcp_fast.protocol import jsonrpc
from mcp_fast.protocol.jsonrpc import McpError
from mcp_fast.transport.streamable.answer import PostChannel
from mcp_fast.transport.streamable.headers import SSE_HEADERS
from mcp_fast.wire import sse
from mcp_fast.wire.responder import Responder


class GetStream:
    """A session's server-to-client SSE stream (GET), for messages not tied to a request.

    Its events are stored too, so a client that reconnects with Last-Event-ID gets the
    notifications it missed.
    """

    __slots__ = ("responder", "session_id", "store", "stream")

    def __init__(self, responder: Responder, store: EventStore, session_id: str) -> None:
        self.responder = responder
        self.store = store
        self.session_id = session_id
        self.stream = ""

    def send(self, message: bytes) -> None:
        event_id = self.store.append(self.stream, message)
        self.responder.send_stream(sse.encode_event(message, event_id=event_id))


class SessionStreams:
    """The GET streams open in this process, by session, and the POST streams in progress."""

    def __init__(self, store: EventStore, keepalive_interval: float, retry_ms: int) -> None:
        self.store = store
        self.keepalive_interval = keepalive_interval
        self.retry_ms = retry_ms
        self._get_streams: dict[str, GetStream] = {}
        # Resumable POST streams still in progress, by stream key (a GET may resume one).
        self.live: dict[str, PostChannel] = {}
        self._ticker: asyncio.Task[None] | None = None

    def stream_of(self, session_id: str) -> GetStream | None:
        """The session's open GET stream, if a client still reads it."""
        stream = self._get_streams.get(session_id)
        return stream if stream is not None and not stream.responder.disconnected else None

    def outbound(self, session_id: str) -> Outbound:
        return SessionOutbound(self, session_id)

    # -- GET ------------------------------------------------------------------------------

    async def replay(self, session_id: str, last_event_id: bytes) -> Replay | None:
        """What the client missed (FleetUnavailable: the stream is in the fleet's store, which
        cannot be read now)."""
        return await self.store.replay(session_id, last_event_id.decode("latin-1"))

    def open_get(
        self, responder: Responder, session_id: str, priming: bool, replay: Replay | None
    ) -> GetStream:
        """Start the session's GET stream; the caller holds it open until the client leaves (or
        the session ends), then calls ``close_get``. (Two plain calls, not one coroutine: an idle
        stream should hold as few frames as it can.)"""
        stream = GetStream(responder, self.store, session_id)
        self._get_streams[session_id] = stream
        responder.start_stream(200, SSE_HEADERS)
        if replay is not None:
            # The standalone stream continues where it was (under a new key when another
            # instance of the fleet wrote it).
            stream.stream = self.store.continue_stream(session_id, replay)
            for event_id, message in replay.events:
                responder.send_stream(sse.encode_event(message, event_id=event_id))
        else:
            stream.stream = self.store.open_stream(session_id, "get")
            if priming:
                responder.send_stream(
                    sse.encode_event(b"", event_id=priming_id(stream.stream), retry_ms=self.retry_ms)
                )
        self._ensure_keepalive_ticker()
        return stream

    def close_get(self, stream: GetStream) -> None:
        if self._get_streams.get(stream.session_id) is stream:
            del self._get_streams[stream.session_id]
        stream.responder.end_stream()

    async def resume_post(self, replay: Replay, responder: Responder) -> None:
        """Send what the client missed on a POST's stream, then the rest of it as it comes: from
        its channel here, or (another instance's stream) from the fleet's store."""
        responder.start_stream(200, SSE_HEADERS)
        for event_id, message in replay.events:
            responder.send_stream(sse.encode_event(message, event_id=event_id))
        channel = None if replay.complete else self.live.get(replay.stream)
        if channel is None and not replay.complete and not replay.local:
            await self._follow(replay, responder)
        elif channel is not None:
            done = channel.attach(responder)
            waiting = responder.wait_disconnected()
            disconnected = asyncio.ensure_future(waiting)
            try:
                await asyncio.wait((done, disconnected), return_when=asyncio.FIRST_COMPLETED)
            finally:
                if disconnected is not waiting:
                    disconnected.cancel()  # our Task around a coroutine; never the connection's future
                if channel.responder is responder:
                    channel.responder = None
        responder.end_stream()

    async def _follow(self, replay: Replay, responder: Responder) -> None:
        """Another instance's stream, event by event as its instance writes them, until it ends,
        the client leaves, or the store is unavailable (the client may resume again then)."""
        events = self.store.follow(replay)
        waiting = responder.wait_disconnected()
        disconnected = asyncio.ensure_future(waiting)
        try:
            while True:
                following = asyncio.ensure_future(anext(events))
                await asyncio.wait((following, disconnected), return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    following.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, FleetUnavailable):
                        await following
                    return
                try:
                    event_id, message = following.result()
                except (StopAsyncIteration, FleetUnavailable):
                    return
                responder.send_stream(sse.encode_event(message, event_id=event_id))
        finally:
            if disconnected is not waiting:
                disconnected.cancel()  # our Task around a coroutine; never the connection's future
            await events.aclose()  # type: ignore[attr-defined]

    def end(self, session_id: str) -> None:
        """The session ended (DELETE): its GET stream is dropped."""
        stream = self._get_streams.pop(session_id, None)
        if stream is not None:
            stream.responder.abort()

    # -- what is sent on them ---------------------------------------------------------------

    def open_streams(self) -> list[GetStream]:
        return list(self._get_streams.values())

    def broadcast(self, message: bytes, session_ids: set[str] | None = None) -> None:
        """``message`` on every open GET stream (or those of ``session_ids``)."""
        for stream in self.open_streams():
            if session_ids is None or stream.session_id in session_ids:
                stream.send(message)

    def send(self, session_id: str, message: bytes) -> None:
        stream = self._get_streams.get(session_id)
        if stream is not None:
            stream.send(message)

    def _ensure_keepalive_ticker(self) -> None:
        """One timer for all GET streams (not one per stream: an idle stream should cost
        little more than its socket)."""
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._keepalive_ticker())

    async def _keepalive_ticker(self) -> None:
        """A comment on every open GET stream now and then, so proxies don't cut them."""
        while True:
            await asyncio.sleep(self.keepalive_interval)
            streams = self.open_streams()
            if not streams:
                return
            for stream in streams:
                stream.responder.send_stream(sse.KEEPALIVE_COMMENT)


class SessionOutbound:
    """Messages of work that outlives its request (a task) go to the session's GET stream."""

    __slots__ = ("session_id", "streams")

    def __init__(self, streams: SessionStreams, session_id: str) -> None:
        self.streams = streams
        self.session_id = session_id

    async def notify(self, method: str, params: dict[str, Any] | None) -> None:
        self.notify_nowait(method, params)

    def notify_nowait(self, method: str, params: dict[str, Any] | None) -> None:
        stream = self.streams.stream_of(self.session_id)
        if stream is not None:
            stream.send(jsonrpc.encode_notification(method, params))

    async def send_request(self, message: bytes) -> None:
        stream = self.streams.stream_of(self.session_id)
        if stream is None:
            raise McpError(
                jsonrpc.INTERNAL_ERROR,
                "The client has no open GET stream to receive requests from the server",
            )
        stream.send(message)

    async def close_stream(self) -> None:
        return None

    async def wait_closed(self) -> None:
        stream = self.streams.stream_of(self.session_id)
        if stream is not None:
            await stream.responder.wait_disconnected()

    async def drain(self) -> None:
        return None  # the GET stream is written without waiting (its buffer bound drops a laggard)

    def detached(self) -> Outbound:
        return self
