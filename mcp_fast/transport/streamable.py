"""Streamable HTTP (MCP 2025-03-26, 2025-06-18, 2025-11-25): POST, GET and DELETE.

Spec: docs/specification/<version>/basic/transports.mdx, "Streamable HTTP".
A POST carries one JSON-RPC message (a batch only under 2025-03-26):
- notifications and responses -> 202 Accepted, no body;
- requests -> ``application/json``, or ``text/event-stream`` once the handler
  sends a notification or a server-to-client request before its result and the
  client accepts SSE. The switch happens lazily, on the first such message, so
  the common case costs one JSON write.
GET opens the session's server-to-client stream; DELETE ends the session.
Sessions are signed tokens (``sessions.py``), so any process serves any session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from mcp_fast.bounded import BoundedMap
from mcp_fast.context import Context, ServerRequests, SessionState
from mcp_fast.dispatch.cache import CacheSlot, ResultCache
from mcp_fast.dispatch.dispatcher import Dispatcher
from mcp_fast.dispatch.tasks import Task
from mcp_fast.fleet.event_store import EventStore, MemoryEventStore, Replay, priming_id
from mcp_fast.fleet.relay import AnswerRelay, asking_instance
from mcp_fast.fleet.shared_log import SharedLog
from mcp_fast.protocol import batch, jsonrpc
from mcp_fast.protocol.envelope import (
    PROTOCOL_VERSION_KEY,
    check_header_params,
    check_headers,
    check_version,
    read_envelope,
    unsupported_version,
)
from mcp_fast.protocol.input_required import StateCodec
from mcp_fast.protocol.jsonrpc import INVALID_REQUEST, Kind, McpError, RequestId
from mcp_fast.protocol.versions import (
    POLICIES,
    SESSIONLESS_ERROR_STATUS,
    SUPPORTED_VERSIONS,
    VERSION_WHEN_HEADER_ABSENT,
    VersionPolicy,
    negotiate,
)
from mcp_fast.server import MCPServer
from mcp_fast.transport.origin import HostPolicy
from mcp_fast.transport.sessions import Session, SessionNotFound, SessionStore
from mcp_fast.wire import sse
from mcp_fast.wire.events import Request
from mcp_fast.wire.responder import Headers, Responder

logger = logging.getLogger("mcp_fast.transport")

JSON_HEADERS: Final[Headers] = ((b"content-type", b"application/json"),)
SSE_HEADERS: Final[Headers] = (
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    # nginx buffers proxied responses unless told not to; SSE must flow at once.
    (b"x-accel-buffering", b"no"),
)
TEXT_HEADERS: Final[Headers] = ((b"content-type", b"text/plain; charset=utf-8"),)
ALLOW_POST: Final[Headers] = ((b"allow", b"POST"),)
ALLOW_ALL: Final[Headers] = ((b"allow", b"GET, POST, DELETE"),)
NO_HEADERS: Final[Headers] = ()
# Streamable HTTP "Session Management": the TypeScript and Python SDKs answer a
# request for an unknown session with this code; there is no spec'd one.
SESSION_NOT_FOUND: Final = -32001
_VERDICT_CACHE_SIZE: Final = 256
# How long a cancellation stays in the fleet's log for an instance that runs the request to see.
_CANCELLATION_KEPT_S: Final = 600.0


@dataclass
class StreamableSettings:
    path: bytes = b"/mcp"
    page_size: int = 100
    host_policy: HostPolicy = field(default_factory=HostPolicy.loopback)
    # None: stateless, no Mcp-Session-Id is issued and GET/DELETE are 405.
    sessions: SessionStore | None = None
    # SSE comment sent on an idle GET stream so proxies don't cut it.
    keepalive_interval: float = 15.0
    max_session_states: int = 100_000
    event_store: EventStore = field(default_factory=MemoryEventStore)
    # Secrets that sign 2026 requestState (first signs, all verify); empty: random per process.
    state_secrets: tuple[str, ...] = ()
    # The SSE retry field: how long a client waits before it reconnects.
    retry_ms: int = 1000
    # The in-process result cache (cache.py); None: nothing is cached.
    cache: ResultCache | None = None
    # Serves every other path (the old HTTP+SSE transport); None: 404.
    fallback: Callable[[Request, Responder], Coroutine[Any, Any, None] | None] | None = None
    # The directory this instance shares with the rest of its fleet (answers to server-to-client
    # requests and cancellations that reached the wrong instance go through it), looked at
    # every fleet_poll s while something waits for them.
    fleet_dir: Path | None = None
    fleet_poll: float = 0.1


def _plain(responder: Responder, status: int, reason: str) -> None:
    responder.respond(status, TEXT_HEADERS, reason.encode() + b"\n")


def _rpc_error(responder: Responder, status: int, error: McpError, request_id: Any = None) -> None:
    responder.respond(status, JSON_HEADERS, jsonrpc.encode_error(request_id, error))


def _accepts(accept: bytes) -> tuple[bool, bool]:
    """(JSON ok, SSE ok) from an Accept header; absent or */* accepts both (RFC 9110 12.5.1)."""
    if b"*/*" in accept:
        return True, True
    return (
        b"application/json" in accept or b"application/*" in accept,
        b"text/event-stream" in accept or b"text/*" in accept,
    )


def _is_json_content_type(value: bytes | None) -> bool:
    if value is None:
        return False
    media_type = value.split(b";", 1)[0].strip().lower()
    return media_type == b"application/json"


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
        "error_status",
        "extra_headers",
        "json_ok",
        "responder",
        "resumable",
        "session_state",
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
        self.session_state: SessionState | None = None
        # 2026-07-28: a JSON error answer carries an HTTP status by its code.
        self.error_status: Mapping[int, int] | None = None

    def detached(self) -> SessionOutbound:
        return SessionOutbound(self.session_state)

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
        resumable.stream = resumable.store.open_stream(resumable.session_id)
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


class SessionOutbound:
    """Messages of work that outlives its request (a task) go to the session's GET stream."""

    __slots__ = ("state",)

    def __init__(self, state: SessionState | None) -> None:
        self.state = state

    def _stream(self) -> GetStream | None:
        stream = self.state.get_stream if self.state is not None else None
        return stream if stream is not None and not stream.responder.disconnected else None

    async def notify(self, method: str, params: dict[str, Any] | None) -> None:
        stream = self._stream()
        if stream is not None:
            stream.send(jsonrpc.encode_notification(method, params))

    async def send_request(self, message: bytes) -> None:
        stream = self._stream()
        if stream is None:
            raise McpError(
                jsonrpc.INTERNAL_ERROR,
                "The client has no open GET stream to receive requests from the server",
            )
        stream.send(message)

    async def close_stream(self) -> None:
        return None

    def notify_nowait(self, method: str, params: dict[str, Any] | None) -> None:
        stream = self._stream()
        if stream is not None:
            stream.send(jsonrpc.encode_notification(method, params))

    async def wait_closed(self) -> None:
        stream = self._stream()
        if stream is not None:
            await stream.responder.wait_disconnected()

    def detached(self) -> SessionOutbound:
        return self


@dataclass(frozen=True, slots=True)
class Rejection:
    """An HTTP-level refusal, decided from the request's method and headers alone."""

    status: int
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class Accepted:
    """Headers that passed: the version the client says it speaks and what it accepts.

    ``policy`` is None when MCP-Protocol-Version names a version we don't know:
    whether that is -32022 or first a -32602/-32020 depends on the body (2026-07-28).
    """

    method: bytes
    policy: VersionPolicy | None
    json_ok: bool
    sse_ok: bool
    version_text: str = ""


Verdict = Rejection | Accepted
HeaderKey = tuple[bytes, bytes | None, bytes | None, bytes | None, bytes | None, bytes | None]


def _plain_rejection(status: int, reason: str, extra: Headers | None = None) -> Rejection:
    return Rejection(status, (*TEXT_HEADERS, *(extra or ())), reason.encode() + b"\n")


def _rpc_rejection(status: int, code: int, message: str, request_id: Any = None) -> Rejection:
    return Rejection(status, JSON_HEADERS, jsonrpc.encode_error(request_id, McpError(code, message)))


class GetStream:
    """A session's server-to-client SSE stream (GET), for messages not tied to a request.

    Its events are stored too, so a client that reconnects with Last-Event-ID
    gets the notifications it missed.
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


class StreamableHTTP:
    """Serves one MCP endpoint path; everything else is 404.

    Called once per request; returns None when the request was answered at
    once (the common case), or a coroutine that finishes answering it.
    """

    def __init__(self, server: MCPServer, settings: StreamableSettings | None = None) -> None:
        self.server = server
        self.settings = settings or StreamableSettings()
        self.sessions = self.settings.sessions
        self.dispatcher = Dispatcher(
            server,
            page_size=self.settings.page_size,
            state_codec=StateCodec(self.settings.state_secrets),
            cache=self.settings.cache,
        )
        self.server_requests = ServerRequests()
        self.relay: AnswerRelay | None = None
        if self.settings.fleet_dir is not None:
            self.relay = AnswerRelay(
                self.settings.fleet_dir / "answers", self.server_requests.instance, self.settings.fleet_poll
            )
            self.server_requests.relay = self.relay
        # notifications/cancelled for a request another instance runs goes to it through here.
        self.cancellations: SharedLog | None = None
        if self.settings.fleet_dir is not None:
            self.cancellations = SharedLog(
                self.settings.fleet_dir / "cancelled", self.settings.fleet_poll, "cancellations"
            )
        self._busy_sessions: set[SessionState] = set()  # with a cancellable request running
        self._cancellation_watcher: asyncio.Task[None] | None = None
        # Per-process state of sessions (log level, in-flight requests, GET stream).
        self._states: BoundedMap[str, SessionState] = BoundedMap(self.settings.max_session_states)
        # A client sends the same header values on every request, so the verdict
        # on them is computed once and remembered (bounded: a client that varies
        # them only pays for the checks themselves).
        self._verdicts: dict[HeaderKey, Verdict] = {}
        # Resumable POST streams still in progress, by stream key.
        self._live: dict[str, PostChannel] = {}
        self._ticker: asyncio.Task[None] | None = None
        server.on_list_changed(self._broadcast_list_changed)
        server.on_resource_updated(self.notify_resource_updated)
        self.dispatcher.tasks.on_status.append(self._announce_task_status)

    # -- routing -------------------------------------------------------------------

    def __call__(self, request: Request, responder: Responder) -> Coroutine[Any, Any, None] | None:
        if request.path != self.settings.path:
            if self.settings.fallback is not None:
                return self.settings.fallback(request, responder)
            _plain(responder, 404, "Not found: the MCP endpoint is " + self.settings.path.decode())
            return None
        headers = request.headers
        key: HeaderKey = (
            request.method,
            headers.get(b"host"),
            headers.get(b"origin"),
            headers.get(b"content-type"),
            headers.get(b"accept"),
            headers.get(b"mcp-protocol-version"),
        )
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self.judge(*key)
            if len(self._verdicts) < _VERDICT_CACHE_SIZE:
                self._verdicts[key] = verdict
        if type(verdict) is Rejection:
            responder.respond(verdict.status, verdict.headers, verdict.body)
            return None
        assert type(verdict) is Accepted
        if verdict.method == b"POST":
            return self.post(request, responder, verdict)
        if verdict.method == b"GET":
            return self.get(request, responder)
        self.delete(request, responder)
        return None

    def judge(
        self,
        method: bytes,
        host: bytes | None,
        origin: bytes | None,
        content_type: bytes | None,
        accept: bytes | None,
        version: bytes | None,
    ) -> Verdict:
        """Every header rule of Streamable HTTP, in the order the spec implies."""
        problem = self.settings.host_policy.check(host, origin)
        if problem is not None:
            return _plain_rejection(*problem)
        header_policy = POLICIES.get(version.decode("latin-1").strip()) if version is not None else None
        if method in (b"GET", b"DELETE") and header_policy is not None and not header_policy.handshake:
            # 2026-07-28 has no GET stream and no session to DELETE.
            return _plain_rejection(
                405, "Method not allowed: this protocol version takes POST only", ALLOW_POST
            )
        stateful = self.sessions is not None
        if method == b"POST":
            if not _is_json_content_type(content_type):
                return _plain_rejection(415, "Unsupported media type: the body must be application/json")
        elif method in (b"GET", b"DELETE") and stateful:
            pass
        elif stateful:
            return _plain_rejection(
                405, "Method not allowed: this endpoint takes GET, POST and DELETE", ALLOW_ALL
            )
        else:
            # Without sessions there is no stream to GET and nothing to DELETE.
            return _plain_rejection(405, "Method not allowed: this endpoint takes POST", ALLOW_POST)
        json_ok, sse_ok = _accepts(accept if accept is not None else b"*/*")
        if method == b"GET" and not sse_ok:
            return _plain_rejection(406, "Not acceptable: a GET stream is text/event-stream")
        if method == b"POST" and not (json_ok or sse_ok):
            return _plain_rejection(406, "Not acceptable: accept application/json or text/event-stream")
        # 2025-06-18 "Protocol Version Header": absent means 2025-03-26.
        if version is None:
            return Accepted(method, POLICIES[VERSION_WHEN_HEADER_ABSENT], json_ok, sse_ok)
        text = version.decode("latin-1").strip()
        if header_policy is None and method != b"POST":
            supported = ", ".join(SUPPORTED_VERSIONS)
            reason = f"Unsupported MCP-Protocol-Version {text!r}; supported: {supported}"
            return _rpc_rejection(400, INVALID_REQUEST, reason)
        return Accepted(method, header_policy, json_ok, sse_ok, text)

    # -- sessions ------------------------------------------------------------------

    def _session(self, request: Request, responder: Responder, request_id: Any = None) -> Session | None:
        """The request's session; None after answering 400/404 (the request ends there)."""
        assert self.sessions is not None
        token = request.headers.get(b"mcp-session-id")
        if token is None:
            rejection = _rpc_rejection(
                400, INVALID_REQUEST, "Bad request: the Mcp-Session-Id header is required", request_id
            )
            responder.respond(rejection.status, rejection.headers, rejection.body)
            return None
        try:
            session = self.sessions.resolve(token.decode("latin-1"))
            if session.protocol_version not in POLICIES:
                # Signed by a process that speaks a version this one does not
                # (a rolling upgrade): the client negotiates again.
                raise SessionNotFound(f"protocol version {session.protocol_version!r} is not supported here")
            return session
        except SessionNotFound as exc:
            # 404 tells the client to start a new session with initialize.
            rejection = _rpc_rejection(404, SESSION_NOT_FOUND, f"Session not found: {exc}", request_id)
            responder.respond(rejection.status, rejection.headers, rejection.body)
            return None

    def _resumable(self, session: Session, policy: VersionPolicy) -> Resumable:
        return Resumable(
            self.settings.event_store, session.id, policy.sse_priming, self.settings.retry_ms, self._live
        )

    def state_of(self, session: Session) -> SessionState:
        state: SessionState | None = self._states.get(session.id)
        if state is None:
            state = SessionState(session.id)
            self._states.put(session.id, state)
        return state

    def _answer(
        self,
        responder: Responder,
        verdict: Accepted,
        session: Session | None,
        policy: VersionPolicy,
        response: bytes,
    ) -> None:
        """A response ready at once: JSON when the client takes it (PostChannel.finish's JSON
        case, without building a channel), else a one-event SSE stream."""
        if verdict.json_ok:
            responder.respond(200, JSON_HEADERS, response)
        else:
            self._channel(responder, verdict, session, policy).finish(response)

    def _channel(
        self, responder: Responder, verdict: Accepted, session: Session | None, policy: VersionPolicy
    ) -> PostChannel:
        """The answer channel of a request; in a session its SSE stream is resumable."""
        channel = PostChannel(responder, verdict.json_ok, verdict.sse_ok)
        if session is not None:
            channel.resumable = self._resumable(session, policy)
            channel.session_state = self.state_of(session)
        return channel

    def _context(
        self,
        message: jsonrpc.Message,
        policy: VersionPolicy,
        channel: PostChannel,
        session: Session | None,
    ) -> Context:
        if session is None:
            return Context(
                self.server, message.id, _meta(message.params), policy, channel,
                server_requests=self.server_requests,
            )  # fmt: skip
        return Context(
            self.server,
            message.id,
            _meta(message.params),
            policy,
            channel,
            client_capabilities=session.client_capabilities,
            client_info=session.client_info,
            server_requests=self.server_requests,
            session=self.state_of(session),
        )

    # -- POST ------------------------------------------------------------------------

    def post(
        self, request: Request, responder: Responder, verdict: Accepted
    ) -> Coroutine[Any, Any, None] | None:
        try:
            body = jsonrpc.decode(request.body)
        except McpError as exc:
            _rpc_error(responder, 400, exc)
            return None
        header_policy = verdict.policy
        if (header_policy is not None and not header_policy.handshake) or (
            type(body) is dict
            and type(params := body.get("params")) is dict
            and type(meta := params.get("_meta")) is dict
            and PROTOCOL_VERSION_KEY in meta  # envelope.carries_envelope, inlined: asked on every POST
        ):
            return self.post_sessionless(body, request, responder, verdict)
        if header_policy is None:
            error = unsupported_version(verdict.version_text)
            _rpc_error(responder, 400, error)
            return None
        session: Session | None = None
        policy = header_policy
        if type(body) is list:
            if self.sessions is not None:
                session = self._session(request, responder)
                if session is None:
                    return None
                policy = POLICIES[session.protocol_version]
            channel = PostChannel(responder, verdict.json_ok, verdict.sse_ok)
            return self.post_batch(body, policy, channel, session)
        try:
            message = jsonrpc.parse_message(body)
        except jsonrpc.InvalidMessage as exc:
            _rpc_error(responder, 400, exc, exc.request_id)
            return None
        if message.kind is Kind.REQUEST and message.method == "initialize":
            return self.initialize(message, policy, PostChannel(responder, verdict.json_ok, verdict.sse_ok))
        if self.sessions is not None:
            session = self._session(request, responder, message.id)
            if session is None:
                return None
            # Within a session the negotiated version rules, whatever the header
            # says (a client may send any supported version there).
            policy = POLICIES[session.protocol_version]
        if message.kind is Kind.REQUEST:
            slot: CacheSlot | None = None
            if message.method in self.dispatcher.cached_methods:
                probe = self.dispatcher.from_cache(
                    message,
                    policy,
                    session.id if session is not None else None,
                    request.headers.get(b"authorization"),
                )
                if isinstance(probe, bytes):
                    self._answer(responder, verdict, session, policy, probe)
                    return None
                slot = probe
            plain = self.dispatcher.plain_call(message, policy, slot)
            if plain is not None:
                self._answer(responder, verdict, session, policy, plain[0])
                return None
            channel = self._channel(responder, verdict, session, policy)
            ctx = self._context(message, policy, channel, session)
            ctx.cache_slot = slot
            if ctx.session is not None:
                ctx.session.inflight[message.id] = ctx  # type: ignore[index]
                if self.cancellations is not None:
                    self._watch_for_cancellations(ctx.session, self.cancellations)
                return self._run_tracked(message, ctx, channel)
            outcome = self.dispatcher.dispatch(message, ctx)
            if isinstance(outcome, bytes):
                channel.finish(outcome)
                return None
            return _finish(channel, outcome, ctx)
        if message.kind is Kind.NOTIFICATION:
            self.notification(message, session)
        else:
            self._resolve(message, session)
        responder.respond(202, NO_HEADERS, b"")
        return None

    def _resolve(self, response: jsonrpc.Message, session: Session | None) -> None:
        """A client's response to one of its session's requests wakes its waiter."""
        owner = session.id if session is not None else ""
        if self.server_requests.resolve(response.id, response.raw, owner):
            return
        # Behind a load balancer the answer often reaches another instance than the one that
        # asked (the id names it): pass it on through the fleet directory.
        asker = asking_instance(response.id)  # found only in a string id; None for others
        relay = self.relay  # forward() refuses this instance's own id
        if (
            asker is not None
            and relay is not None
            and relay.forward(asker, str(response.id), owner, response.raw)
        ):
            return
        logger.debug("a response to an unknown server request %r was ignored", response.id)

    def _run_tracked(
        self, message: jsonrpc.Message, ctx: Context, channel: PostChannel
    ) -> Coroutine[Any, Any, None] | None:
        """Dispatch a request that notifications/cancelled may cancel."""
        assert ctx.session is not None
        inflight = ctx.session.inflight
        try:
            outcome = self.dispatcher.dispatch(message, ctx)
        except BaseException:
            inflight.pop(message.id, None)  # type: ignore[arg-type]
            raise
        if isinstance(outcome, bytes):
            inflight.pop(message.id, None)  # type: ignore[arg-type]
            channel.finish(outcome)
            return None
        return _finish(channel, outcome, ctx)

    def initialize(
        self, message: jsonrpc.Message, policy: VersionPolicy, channel: PostChannel
    ) -> Coroutine[Any, Any, None] | None:
        """initialize: negotiate, and start a session (lifecycle; transports "Session Management")."""
        params = message.params or {}
        ctx = Context(self.server, message.id, None, policy, channel)
        outcome = self.dispatcher.dispatch(message, ctx)
        assert isinstance(outcome, bytes)  # initialize never waits
        if self.sessions is not None and b'"result"' in outcome:
            capabilities = params.get("capabilities")
            client_info = params.get("clientInfo")
            session = self.sessions.create(
                negotiate(params.get("protocolVersion")),
                capabilities if isinstance(capabilities, dict) else {},
                client_info if isinstance(client_info, dict) else {},
            )
            channel.extra_headers = [(b"mcp-session-id", session.token.encode())]
        channel.finish(outcome)
        return None

    def notification(self, message: jsonrpc.Message, session: Session | None) -> None:
        if message.method == "notifications/cancelled":
            self.cancel(message, session)
        else:
            self.dispatcher.handle_notification(message)

    def cancel(self, message: jsonrpc.Message, session: Session | None) -> None:
        """notifications/cancelled (basic/utilities/cancellation): stop the request, answer nothing."""
        params = message.params or {}
        request_id = params.get("requestId")
        if session is None or not isinstance(request_id, (str, int)):
            return
        ctx = self.state_of(session).inflight.get(request_id)
        if ctx is not None:
            ctx.cancel()
        elif self.cancellations is not None:
            # Running on another instance, maybe (or finished): tell the fleet. Request ids are
            # never reused within a session (basic/index.mdx), so a late entry harms nothing.
            now = time.time()
            self.cancellations.add(session.id, now + _CANCELLATION_KEPT_S, now, orjson.dumps(request_id))

    def _watch_for_cancellations(self, state: SessionState, log: SharedLog) -> None:
        """A cancellable request runs in ``state``: look at the fleet's cancellations meanwhile."""
        self._busy_sessions.add(state)
        if self._cancellation_watcher is None:
            loop = asyncio.get_running_loop()
            self._cancellation_watcher = loop.create_task(self._apply_cancellations(log))

    async def _apply_cancellations(self, log: SharedLog) -> None:
        """While requests run, cancel those that another instance was told to cancel."""
        try:
            while self._busy_sessions:
                await asyncio.sleep(log.poll_seconds)
                for session_id, _, payload in log.refresh(time.time()):
                    state: SessionState | None = self._states.get(session_id)
                    request_id = _loads_request_id(payload)
                    ctx = (
                        state.inflight.get(request_id)
                        if state is not None and request_id is not None
                        else None
                    )
                    if ctx is not None:
                        ctx.cancel()
                self._busy_sessions = {state for state in self._busy_sessions if state.inflight}
        finally:
            self._cancellation_watcher = None

    def post_sessionless(
        self, body: Any, request: Request, responder: Responder, verdict: Accepted
    ) -> Coroutine[Any, Any, None] | None:
        """A 2026-07-28 request: no session, everything it needs travels with it."""
        status_of = SESSIONLESS_ERROR_STATUS
        if type(body) is not dict:
            error = McpError(INVALID_REQUEST, "Invalid request: one JSON-RPC message per POST")
            responder.respond(400, JSON_HEADERS, jsonrpc.encode_error(None, error, omit_null_id=True))
            return None
        try:
            message = jsonrpc.parse_message(body)
        except jsonrpc.InvalidMessage as exc:
            responder.respond(400, JSON_HEADERS, jsonrpc.encode_error(exc.request_id, exc, omit_null_id=True))
            return None
        if message.kind is not Kind.REQUEST:
            if message.kind is Kind.RESPONSE:
                error = McpError(
                    INVALID_REQUEST, "Invalid request: clients do not send responses in 2026-07-28"
                )
                responder.respond(400, JSON_HEADERS, jsonrpc.encode_error(None, error, omit_null_id=True))
            else:
                responder.respond(202, NO_HEADERS, b"")  # nothing to act on over HTTP
            return None
        try:
            envelope = read_envelope(message.params)
            check_headers(message.method, message.params, envelope, request.headers)
            policy = check_version(envelope.version)
            if message.method == "tools/call" and message.params is not None:
                tool = self.server.registry.tools.get(message.params.get("name"))  # type: ignore[arg-type]
                if tool is not None and tool.header_params:
                    check_header_params(tool.header_params, message.params.get("arguments"), request.headers)
        except McpError as exc:
            status = status_of.get(exc.code, 400)
            responder.respond(status, JSON_HEADERS, jsonrpc.encode_error(message.id, exc))
            return None
        slot: CacheSlot | None = None
        if message.method in self.dispatcher.cached_methods:
            probe = self.dispatcher.from_cache(message, policy, None, request.headers.get(b"authorization"))
            if isinstance(probe, bytes):
                self._answer(responder, verdict, None, policy, probe)
                return None
            slot = probe
        channel = PostChannel(responder, verdict.json_ok, verdict.sse_ok)
        channel.error_status = policy.error_status
        plain = self.dispatcher.plain_call(message, policy, slot)
        if plain is not None:
            channel.finish(*plain)
            return None
        ctx = Context(
            self.server,
            message.id,
            _meta(message.params),
            policy,
            channel,
            client_capabilities=envelope.capabilities,
            client_info=envelope.client_info,
            log_level=envelope.log_level,
        )
        ctx.cache_slot = slot
        if message.method == "subscriptions/listen" and not verdict.sse_ok:
            error = McpError(INVALID_REQUEST, "subscriptions/listen answers with text/event-stream")
            responder.respond(406, JSON_HEADERS, jsonrpc.encode_error(message.id, error))
            return None
        outcome = self.dispatcher.dispatch(message, ctx)
        if isinstance(outcome, bytes):
            channel.finish(outcome, ctx.error_code)
            return None
        # 2026-07-28 "Cancellation": closing the request's stream cancels the request.
        responder.on_disconnect(ctx.cancel)
        return _finish(channel, outcome, ctx)

    async def post_batch(
        self, items: list[Any], policy: VersionPolicy, channel: PostChannel, session: Session | None
    ) -> None:
        """JSON-RPC 2.0 section 6, allowed only by 2025-03-26. The requests run one after another."""
        responder = channel.responder
        assert responder is not None
        refused = batch.refusal(policy, items)
        if refused is not None:
            _rpc_error(responder, 400, refused)
            return
        responses: list[bytes] = []
        for entry in batch.requests(
            items,
            lambda message: self.notification(message, session),
            lambda message: self._resolve(message, session),
        ):
            if isinstance(entry, bytes):
                responses.append(entry)
                continue
            ctx = self._context(entry, policy, channel, session)
            outcome = self.dispatcher.dispatch(entry, ctx)
            responses.append(outcome if isinstance(outcome, bytes) else await outcome)
        if not responses:
            responder.respond(202, NO_HEADERS, b"")
        elif channel.streaming or not channel.json_ok:  # an SSE-only client gets SSE
            if not channel.streaming:
                channel.open_stream()
            for response in responses[:-1]:
                channel.emit(response)
            channel.finish(responses[-1])
        else:
            responder.respond(200, JSON_HEADERS, b"[" + b",".join(responses) + b"]")

    # -- GET and DELETE ----------------------------------------------------------------

    async def get(self, request: Request, responder: Responder) -> None:
        """The session's server-to-client stream (one per session: 409 for a second), or,
        with Last-Event-ID, the resumption of an earlier stream of the session."""
        session = self._session(request, responder)
        if session is None:
            return
        last_event_id = request.headers.get(b"last-event-id")
        replay: Replay | None = None
        if last_event_id is not None:
            replay = self.settings.event_store.replay(session.id, last_event_id.decode("latin-1"))
            if replay is not None and (replay.complete or replay.stream in self._live):
                await self._resume(replay, responder)  # a POST's stream
                return
        state = self.state_of(session)
        if state.get_stream is not None and not state.get_stream.responder.disconnected:
            _plain(responder, 409, "Conflict: this session already has an open GET stream")
            return
        stream = GetStream(responder, self.settings.event_store, session.id)
        state.get_stream = stream
        responder.start_stream(200, SSE_HEADERS)
        if replay is not None:
            stream.stream = replay.stream  # the standalone stream continues where it was
            for event_id, message in replay.events:
                responder.send_stream(sse.encode_event(message, event_id=event_id))
        else:
            stream.stream = self.settings.event_store.open_stream(session.id)
            if POLICIES[session.protocol_version].sse_priming:
                event = sse.encode_event(
                    b"", event_id=priming_id(stream.stream), retry_ms=self.settings.retry_ms
                )
                responder.send_stream(event)
        try:
            self._ensure_keepalive_ticker()
            await responder.wait_disconnected()
        finally:
            if state.get_stream is stream:
                state.get_stream = None
            responder.end_stream()

    async def _resume(self, replay: Replay, responder: Responder) -> None:
        """Send what the client missed on a POST's stream, then the rest of it as it comes."""
        responder.start_stream(200, SSE_HEADERS)
        for event_id, message in replay.events:
            responder.send_stream(sse.encode_event(message, event_id=event_id))
        channel = None if replay.complete else self._live.get(replay.stream)
        if channel is not None:
            done = channel.attach(responder)
            disconnected = asyncio.ensure_future(responder.wait_disconnected())
            try:
                await asyncio.wait((done, disconnected), return_when=asyncio.FIRST_COMPLETED)
            finally:
                disconnected.cancel()
                if channel.responder is responder:
                    channel.responder = None
        responder.end_stream()

    def _ensure_keepalive_ticker(self) -> None:
        """One timer for all GET streams (not one per stream: an idle stream should cost
        little more than its socket)."""
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._keepalive_ticker())

    async def _keepalive_ticker(self) -> None:
        """A comment on every open GET stream now and then, so proxies don't cut them."""
        while True:
            await asyncio.sleep(self.settings.keepalive_interval)
            streams = self._open_streams()
            if not streams:
                return
            for _, stream in streams:
                stream.responder.send_stream(sse.KEEPALIVE_COMMENT)

    def delete(self, request: Request, responder: Responder) -> None:
        """End the session (transports, "Session Management"): later requests get 404."""
        session = self._session(request, responder)
        if session is None:
            return
        assert self.sessions is not None
        self.sessions.end(session)
        state: SessionState | None = self._states.pop(session.id, None)
        if state is not None:
            for ctx in list(state.inflight.values()):
                ctx.cancel()
            if state.get_stream is not None:
                state.get_stream.responder.abort()
        responder.respond(200, NO_HEADERS, b"")

    # -- notifications not tied to a request ------------------------------------------

    def _open_streams(self) -> list[tuple[SessionState, GetStream]]:
        return [(state, state.get_stream) for state in self._states.values() if state.get_stream is not None]

    def _broadcast_list_changed(self, kind: str) -> None:
        message = jsonrpc.encode_notification(f"notifications/{kind}/list_changed", None)
        for _, stream in self._open_streams():
            stream.send(message)

    def _announce_task_status(self, task: Task) -> None:
        """notifications/tasks/status on the owning session's GET stream (optional in the spec)."""
        state: SessionState | None = self._states.get(task.owner) if task.owner else None
        if state is not None and state.get_stream is not None:
            state.get_stream.send(jsonrpc.encode_notification("notifications/tasks/status", task.to_json()))

    def notify_resource_updated(self, uri: str) -> None:
        """notifications/resources/updated to every session subscribed to ``uri`` in this process."""
        message = jsonrpc.encode_notification("notifications/resources/updated", {"uri": uri})
        for state, stream in self._open_streams():
            if uri in state.subscriptions:
                stream.send(message)


async def _finish(channel: PostChannel, outcome: Awaitable[bytes], ctx: Context | None = None) -> None:
    try:
        response = await outcome
    except asyncio.CancelledError:
        if ctx is None or not ctx.cancelled:
            raise  # the server is shutting down: not the client's cancellation
        channel.abandon()
        return
    finally:
        if ctx is not None and ctx.session is not None:
            ctx.session.inflight.pop(ctx.request_id, None)  # type: ignore[arg-type]
    if ctx is not None and ctx.cancelled:
        channel.abandon()
        return
    channel.finish(response, ctx.error_code if ctx is not None else None)


def _loads_request_id(payload: bytes) -> RequestId | None:
    """A request id written to the fleet's cancellations (a JSON string or integer), or None."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return value if type(value) is str or type(value) is int else None


def _meta(params: dict[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    meta = params.get("_meta")
    return meta if type(meta) is dict else None
