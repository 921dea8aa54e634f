"""The answer to one POST of Streamable HTTP: JSON, or an SSE stream once the handler sends
something before its result.

Spec: basic/transports.mdx "Streamable HTTP", "Sending Messages to the Server" and
"Resumability and Redelivery". The switch to SSE happens lazily, on the first notification or
server-to-client request, so the common case costs one JSON write. In a session the SSE events
carry ids and are kept in the event store, so the client can resume the stream with GET +
Last-Event-ID; the server may also close the stream early (2025-11-25) and deliver the rest on
that GET.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mcp_fast.call import SILENT, Outbound
from mcp_fast.fleet.event_store import EventStore, priming_id
from mcp_fast.protocol import jsonrpc
from mcp_fast.protocol.jsonrpc import McpError
from mcp_fast.transport.streamable.headers import JSON_HEADERS, NO_HEADERS, SSE_HEADERS
from mcp_fast.wire import sse
from mcp_fast.wire.responder import Headers, Responder


@dataclass(slots=True)
class Resumable:
    """What a session's SSE stream needs to be resumable: the store, its key there
    (given when the stream starts), and whether to send the 2025-11-25 priming event."""

    store: EventStore
    session_id: str
    priming: bool
    retry_ms: int
    live: dict[str, PostChannel]  # streams in progress, for a GET that resumes one
    stream: str = ""


class PostChannel:
    """The answer to one POST: JSON by default, upgraded to SSE by the first message
    the handler sends before its result.

    In a session the SSE events carry ids and are kept in the event store, so the
    client can resume the stream with GET + Last-Event-ID; the server may also
    close the stream early (2025-11-25) and deliver the rest on that GET.
    """

    __slots__ = (
        "_done",
        "detach_to",
        "error_status",
        "extra_headers",
        "json_ok",
        "responder",
        "resumable",
        "sse_ok",
        "streaming",
    )

    def __init__(
        self, responder: Responder, json_ok: bool, sse_ok: bool, resumable: Resumable | None = None
    ) -> None:
        self.responder: Responder | None = responder
        self.json_ok = json_ok
        self.sse_ok = sse_ok
        self.streaming = False
        self.extra_headers: Headers | None = None  # e.g. Mcp-Session-Id on initialize
        self.resumable = resumable
        self._done: asyncio.Future[None] | None = None  # set when a resumed GET waits for the end
        # Where messages of work that outlives this request go (the session's GET stream).
        self.detach_to: Outbound = SILENT
        # 2026-07-28: a JSON error answer carries an HTTP status by its code.
        self.error_status: Mapping[int, int] | None = None

    def detached(self) -> Outbound:
        return self.detach_to

    def _sse_headers(self) -> Headers:
        return SSE_HEADERS if self.extra_headers is None else [*SSE_HEADERS, *self.extra_headers]

    def open_stream(self) -> None:
        self.streaming = True
        assert self.responder is not None
        self.responder.start_stream(200, self._sse_headers())
        opening = self._opening()
        if opening:
            self.responder.send_stream(opening)

    def _opening(self) -> bytes:
        """What a stream starts with: in a session, its place in the event store, and from
        2025-11-25 a priming event (an id and empty data, so the client can resume even
        before the first real event, and how soon to retry)."""
        resumable = self.resumable
        if resumable is None:
            return b""
        resumable.stream = resumable.store.open_stream(resumable.session_id, "post")
        resumable.live[resumable.stream] = self
        if not resumable.priming:
            return b""
        return sse.encode_event(b"", event_id=priming_id(resumable.stream), retry_ms=resumable.retry_ms)

    def _event(self, message: bytes) -> bytes:
        """One message as an SSE event, kept in the event store when resumable."""
        resumable = self.resumable
        if resumable is not None:
            return sse.encode_event(message, event_id=resumable.store.append(resumable.stream, message))
        return sse.encode_message(message)

    def emit(self, message: bytes) -> None:
        """One message on the stream: stored when resumable, written when a client is attached."""
        event = self._event(message)
        if self.responder is not None:
            self.responder.send_stream(event)

    async def _send(self, message: bytes) -> None:
        if not self.streaming:
            self.open_stream()
        self.emit(message)
        if self.responder is not None:
            await self.responder.drain()

    async def notify(self, method: str, params: dict[str, Any] | None) -> None:
        if not self.sse_ok:
            return  # a JSON-only client has no channel for notifications on a POST
        await self._send(jsonrpc.encode_notification(method, params))

    def notify_nowait(self, method: str, params: dict[str, Any] | None) -> None:
        """A notification without waiting for the client to read (a listen stream; the
        connection's stream-buffer limit drops a client that falls too far behind)."""
        if not self.sse_ok:
            return
        if not self.streaming:
            self.open_stream()
        self.emit(jsonrpc.encode_notification(method, params))

    async def wait_closed(self) -> None:
        if self.responder is not None:
            await self.responder.wait_disconnected()

    async def drain(self) -> None:
        if self.responder is not None:
            await self.responder.drain()

    async def send_request(self, message: bytes) -> None:
        if not self.sse_ok:
            raise McpError(
                jsonrpc.INTERNAL_ERROR,
                "The client does not accept text/event-stream, so it cannot receive requests from the server",
            )
        await self._send(message)

    async def close_stream(self) -> None:
        """End the HTTP response now and keep the stream going in the store (polling).

        Only a resumable stream can be closed early; elsewhere this does nothing.
        """
        if self.resumable is None or not self.sse_ok or self.responder is None:
            return
        # Without an event id the client could not resume, so always start with one.
        self.resumable.priming = True
        if not self.streaming:
            self.open_stream()
        self.responder.end_stream()
        self.responder = None

    def attach(self, responder: Responder) -> asyncio.Future[None]:
        """A GET with Last-Event-ID continues this stream; the future completes at its end."""
        if self.responder is not None:
            self.responder.end_stream()  # the old connection gives way to the new one
        self.responder = responder
        self._done = asyncio.get_running_loop().create_future()
        return self._done

    def abandon(self) -> None:
        """The request was cancelled: end the exchange without a JSON-RPC response."""
        self._complete()
        if self.responder is None:
            return
        if self.streaming:
            self.responder.end_stream()
        else:
            self.responder.respond(202, NO_HEADERS, b"")

    def finish(self, response: bytes, error_code: int | None = None) -> None:
        if not self.streaming and self.json_ok:
            assert self.responder is not None
            headers = JSON_HEADERS if self.extra_headers is None else [*JSON_HEADERS, *self.extra_headers]
            status = 200
            if self.error_status is not None and error_code is not None:
                status = self.error_status.get(error_code, 200)
            self.responder.respond(status, headers, response)
            return
        if not self.streaming:
            # Nothing came before the result: the whole stream is known, so it goes out as
            # one response with a length (one write) instead of a chunked stream of three.
            assert self.responder is not None
            body = self._opening() + self._event(response)
            self._complete()
            self.responder.respond(200, self._sse_headers(), body)
            return
        self.emit(response)
        self._complete()
        if self.responder is not None:
            self.responder.end_stream()

    def _complete(self) -> None:
        resumable = self.resumable
        if resumable is not None and resumable.stream:
            resumable.store.complete(resumable.stream)
            resumable.live.pop(resumable.stream, None)
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
