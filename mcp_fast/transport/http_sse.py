"""The old HTTP+SSE transport of MCP 2024-11-05, next to the Streamable HTTP endpoint.

Spec: docs/specification/2024-11-05/basic/transports.mdx, "HTTP with SSE", and
2025-11-25 basic/transports.mdx "Backwards Compatibility" (servers that want to
serve older clients keep hosting the old SSE and POST endpoints):
- ``GET /sse`` opens the session's stream; its first event is ``endpoint``, whose
  data is the URI the client POSTs its messages to (relative, as the official SDK
  server sends it: ``/messages?session_id=<id>``);
- every client message is a POST of one JSON-RPC message (or a batch, where the
  negotiated version allows it) to that URI, answered ``202 Accepted``; responses,
  notifications and server-to-client requests travel as ``message`` events on the stream;
- Origin is validated against DNS rebinding (Security Warning): the same
  ``HostPolicy`` as the Streamable endpoint (403 / 421).

A session is its stream: it lives in the process that holds the GET, and ends
when the client drops it (requests still running are cancelled; later POSTs get
404). A fleet must route the POSTs to the instance that holds the stream: give each
instance its own ``--legacy-messages-path`` and route by path (README "Deployment";
hashing the session id does not work, the instance that took the GET minted it). The
session itself (lifecycle,
concurrency, cancellation, server-to-client requests) is ``channel.ChannelSession``,
shared with stdio.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

from mcp_fast.call import Gate, Principal
from mcp_fast.pipeline import Pipeline
from mcp_fast.protocol import jsonrpc
from mcp_fast.protocol.jsonrpc import HttpError, McpError
from mcp_fast.transport.channel import ChannelSession
from mcp_fast.transport.origin import HostPolicy
from mcp_fast.transport.streamable.headers import JSON_HEADERS, NO_HEADERS, SSE_HEADERS, TEXT_HEADERS
from mcp_fast.wire import sse
from mcp_fast.wire.events import Request
from mcp_fast.wire.responder import Headers, Responder

if TYPE_CHECKING:
    from mcp_fast.dispatch.tasks import Task

logger = logging.getLogger("mcp_fast.transport")

_SESSION_ID_BYTES: Final = 16  # 128 random bits, hex: nothing in it needs URL-encoding
_MESSAGE_EVENT: Final = b"event: message\ndata: "
_EVENT_END: Final = b"\n\n"
_ALLOW_GET: Final[Headers] = ((b"allow", b"GET"),)
_ALLOW_POST: Final[Headers] = ((b"allow", b"POST"),)
_MAX_QUERY_FIELDS: Final = 32
# At shutdown: once this long has passed (the idle connections' grace of the HTTP server, 1 s,
# and a little more), no message from the client can reach this process any more.
_INPUT_ENDS_AFTER: Final = 1.2


@dataclass(frozen=True)
class HttpSseSettings:
    sse_path: bytes = b"/sse"
    messages_path: bytes = b"/messages"
    host_policy: HostPolicy = field(default_factory=HostPolicy.loopback)
    # SSE comment sent on idle streams so proxies don't cut them.
    keepalive_interval: float = 15.0
    # Authorization (ops/auth.py): the GET and every POST need a valid bearer token.
    gate: Gate | None = None

    def __post_init__(self) -> None:
        for path in (self.sse_path, self.messages_path):
            if not path.startswith(b"/") or any(c in path for c in b"?# "):
                raise ValueError(f"{path.decode()!r} is not a plain absolute path")
        if self.sse_path == self.messages_path:
            raise ValueError("the SSE path and the messages path must differ")


def message_event(message: bytes) -> bytes:
    """One server message as an SSE ``message`` event (2024-11-05: "Server messages are sent
    as SSE message events"); the event name is spelled out, as the official SDK server does."""
    if b"\n" in message or b"\r" in message:
        return sse.encode_event(message, event=b"message")
    return _MESSAGE_EVENT + message + _EVENT_END


def _plain(responder: Responder, status: int, reason: str, extra: Headers = NO_HEADERS) -> None:
    responder.respond(status, (*TEXT_HEADERS, *extra), reason.encode() + b"\n")


def _refuse(responder: Responder, refusal: HttpError) -> None:
    """401 from the gate: its status and headers, the JSON-RPC error as the body."""
    responder.respond(refusal.status, (*JSON_HEADERS, *refusal.headers), jsonrpc.encode_error(None, refusal))


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


def _session_id_of(target: bytes) -> str | None:
    """The ``session_id`` query parameter (None when absent or the query is malformed)."""
    query = target.partition(b"?")[2]
    if not query:
        return None
    try:
        fields = parse_qsl(query.decode("latin-1"), max_num_fields=_MAX_QUERY_FIELDS)
    except ValueError:
        return None
    for name, value in fields:
        if name == "session_id":
            return value
    return None


class HttpSseSession:
    """One client of the old transport: its GET stream is the session's ``Sink``."""

    __slots__ = ("channel", "id", "responder")

    def __init__(self, responder: Responder, pipeline: Pipeline) -> None:
        self.id = secrets.token_hex(_SESSION_ID_BYTES)
        self.responder = responder
        self.channel = ChannelSession(pipeline, self, session_id=self.id, transport="sse", sessionless=False)

    def send(self, message: bytes) -> None:
        self.responder.send_stream(message_event(message))

    async def drain(self) -> None:
        await self.responder.drain()


class HttpSseTransport:
    """The two endpoints of the old transport; an ``App`` (the Streamable endpoint's fallback)."""

    def __init__(self, pipeline: Pipeline, settings: HttpSseSettings | None = None) -> None:
        self.pipeline = pipeline
        self.settings = settings or HttpSseSettings()
        self.sessions: dict[str, HttpSseSession] = {}
        self._ticker: asyncio.Task[None] | None = None
        self.sessions_created = 0  # read by the metrics at scrape time
        pipeline.server.on_list_changed(self._list_changed)
        pipeline.server.on_resource_updated(self._resource_updated)
        pipeline.on_task_status(self._task_status)

    def __call__(self, request: Request, responder: Responder) -> Coroutine[Any, Any, None] | None:
        path = request.path
        settings = self.settings
        if path != settings.sse_path and path != settings.messages_path:
            _plain(responder, 404, "Not found")  # the router sends only the two paths here
            return None
        headers = request.headers
        problem = settings.host_policy.check(headers.get(b"host"), headers.get(b"origin"))
        if problem is not None:
            _plain(responder, *problem)
            return None
        gate = settings.gate
        if gate is None:
            return self._serve(request, responder, None)
        try:
            admitted = gate.admit(headers.get(b"authorization"))
        except HttpError as refusal:
            _refuse(responder, refusal)
            return None
        if not isinstance(admitted, Principal):
            return self._admitted_later(admitted, request, responder)
        return self._serve(request, responder, admitted)

    async def _admitted_later(
        self, admitted: Awaitable[Principal], request: Request, responder: Responder
    ) -> None:
        try:
            principal = await admitted
        except HttpError as refusal:
            _refuse(responder, refusal)
            return
        pending = self._serve(request, responder, principal)
        if pending is not None:
            await pending

    def _serve(
        self, request: Request, responder: Responder, principal: Principal | None
    ) -> Coroutine[Any, Any, None] | None:
        if request.path == self.settings.messages_path:
            return self.post(request, responder, principal)
        if request.method != b"GET":
            _plain(responder, 405, "Method not allowed: the SSE endpoint takes GET", _ALLOW_GET)
            return None
        return self.stream(responder, principal)

    # -- GET: the session's stream -------------------------------------------------------

    async def stream(self, responder: Responder, principal: Principal | None = None) -> None:
        session = HttpSseSession(responder, self.pipeline)
        channel = session.channel
        channel.principal = principal  # the session is bound to it; its calls carry it
        self.sessions_created += 1
        self.sessions[session.id] = session
        responder.start_stream(200, SSE_HEADERS)
        # 2024-11-05 "HTTP with SSE": the server MUST first send an `endpoint` event.
        endpoint = self.settings.messages_path + b"?session_id=" + session.id.encode()
        responder.send_stream(sse.encode_event(endpoint, event=b"endpoint"))
        # At server shutdown the stream ends only once what the session owes is sent: the
        # answers of its requests still running travel on it (a GET stream of Streamable HTTP
        # carries none, and ends at once).
        leaving: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        responder.on_shutdown(lambda: _settle(leaving))
        gone = asyncio.ensure_future(responder.wait_disconnected())
        try:
            self._ensure_keepalive_ticker()
            await asyncio.wait((gone, leaving), return_when=asyncio.FIRST_COMPLETED)
            if not gone.done():
                await self._finish(channel)
        finally:
            if isinstance(gone, asyncio.Task):  # (a wrapping Responder's coroutine; the
                gone.cancel()  # connection's own future is shared, and left alone)
            # The stream was the session: what still runs can never be answered.
            del self.sessions[session.id]
            channel.end()
            channel.cancel_all()
            responder.end_stream()

    @staticmethod
    async def _finish(channel: ChannelSession) -> None:
        """Server shutdown: wait until the session's requests are answered. The listener is
        closed and idle connections close after a second's grace: after that the client cannot
        send anything here, so what waits for its answer (a request of ours, roots/list, say)
        fails as if it had left, instead of holding the process until the shutdown timeout."""
        idle = asyncio.ensure_future(channel.idle())
        done, _ = await asyncio.wait((idle,), timeout=_INPUT_ENDS_AFTER)
        if not done:
            channel.end()
            await idle

    # -- POST: one message from the client ---------------------------------------------

    def post(
        self, request: Request, responder: Responder, principal: Principal | None = None
    ) -> Coroutine[Any, Any, None] | None:
        if request.method != b"POST":
            _plain(responder, 405, "Method not allowed: the messages endpoint takes POST", _ALLOW_POST)
            return None
        if not _is_json(request.headers.get(b"content-type")):
            _plain(responder, 415, "Unsupported media type: the body must be application/json")
            return None
        session_id = _session_id_of(request.target)
        if session_id is None:
            _plain(responder, 400, "Bad request: the session_id query parameter is required")
            return None
        session = self.sessions.get(session_id)
        owner = session.channel.principal if session is not None else None
        if session is None or (
            (owner is not None or principal is not None)
            and (owner is None or principal is None or owner.subject != principal.subject)
        ):
            # Unknown, or its stream is closed: the client opens a new one. Another principal's
            # session is as unknown as any other.
            _plain(responder, 404, "Not found: no open session with that id")
            return None
        try:
            value = jsonrpc.decode(request.body)
        except McpError as exc:
            responder.respond(400, JSON_HEADERS, jsonrpc.encode_error(None, exc))
            return None
        error = session.channel.receive(value, request.headers, request.client)
        if error is not None:
            # Not a JSON-RPC message we can act on: the POST says so, as on the Streamable endpoint.
            request_id = error.request_id if isinstance(error, jsonrpc.InvalidMessage) else None
            responder.respond(400, JSON_HEADERS, jsonrpc.encode_error(request_id, error))
            return None
        return self._accepted(session, responder)

    @staticmethod
    async def _accepted(session: HttpSseSession, responder: Responder) -> None:
        """202 once the session's stream took what this message produced: a client that
        does not read its stream is slowed down where it sends."""
        await session.drain()
        responder.respond(202, NO_HEADERS, b"")

    # -- messages not tied to a request ------------------------------------------------

    def _channels(self) -> list[ChannelSession]:
        return [session.channel for session in self.sessions.values()]

    def _list_changed(self, kind: str) -> None:
        for channel in self._channels():
            channel.list_changed(kind)

    def _resource_updated(self, uri: str) -> None:
        for channel in self._channels():
            channel.resource_updated(uri)

    def _task_status(self, task: Task) -> None:
        session = self.sessions.get(task.owner)
        if session is not None:
            session.channel.task_status(task)

    def _ensure_keepalive_ticker(self) -> None:
        """One timer for all streams (not one per stream)."""
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._keepalive_ticker())

    async def _keepalive_ticker(self) -> None:
        while True:
            await asyncio.sleep(self.settings.keepalive_interval)
            if not self.sessions:
                return
            for session in list(self.sessions.values()):
                session.responder.send_stream(sse.KEEPALIVE_COMMENT)
