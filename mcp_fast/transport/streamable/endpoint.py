"""Streamable HTTP (MCP 2025-03-26 through 2026-07-28) on one endpoint: POST, GET and DELETE.

Spec: docs/specification/<version>/basic/transports.mdx, "Streamable HTTP".
A POST carries one JSON-RPC message (a batch only under 2025-03-26):
- notifications and responses -> 202 Accepted, no body;
- requests -> ``application/json``, or ``text/event-stream`` once the handler sends a
  notification or a server-to-client request before its result (``answer.py``).
GET opens the session's server-to-client stream (``streams.py``); DELETE ends the session.
Sessions are signed tokens (``sessions.py``), so any process serves any session; a 2026-07-28
request has no session at all (``sessionless.py``).

What happens to a request is the pipeline's business (``mcp_fast.pipeline``); this module keeps
only the HTTP rules: headers (``headers.py``), sessions, status codes, and where answers go.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson

from mcp_fast.bounded import BoundedMap
from mcp_fast.call import Gate, Principal, SessionState
from mcp_fast.fleet.base import FleetUnavailable
from mcp_fast.fleet.event_store import EventStore, MemoryEventStore
from mcp_fast.pipeline import Pipeline
from mcp_fast.protocol import batch, jsonrpc
from mcp_fast.protocol.envelope import PROTOCOL_VERSION_KEY, unsupported_version
from mcp_fast.protocol.jsonrpc import INVALID_REQUEST, HttpError, Kind, McpError, Message
from mcp_fast.protocol.versions import POLICIES, VersionPolicy
from mcp_fast.transport.origin import HostPolicy
from mcp_fast.transport.router import App
from mcp_fast.transport.sessions import Session, SessionNotFound, SessionStore
from mcp_fast.transport.streamable.answer import PostChannel
from mcp_fast.transport.streamable.calls import HttpCall
from mcp_fast.transport.streamable.headers import (
    JSON_HEADERS,
    NO_HEADERS,
    TEXT_HEADERS,
    Accepted,
    HeaderKey,
    HeaderRules,
    Rejection,
    rpc_rejection,
)
from mcp_fast.transport.streamable.sessionless import SessionlessPost, deliver_later
from mcp_fast.transport.streamable.streams import SessionStreams
from mcp_fast.wire.events import Request
from mcp_fast.wire.responder import Responder

if TYPE_CHECKING:
    from mcp_fast.dispatch.tasks import Task

logger = logging.getLogger("mcp_fast.transport")

# Streamable HTTP "Session Management": the TypeScript and Python SDKs answer a
# request for an unknown session with this code; there is no spec'd one.
SESSION_NOT_FOUND: Final = -32001
_SESSION_ENDED: Final = "The session was ended"


@dataclass
class StreamableSettings:
    path: bytes = b"/mcp"
    # Serves every other path (plain routes, the old HTTP+SSE transport); None: 404.
    others: App | None = None
    host_policy: HostPolicy = field(default_factory=HostPolicy.loopback)
    # None: stateless, no Mcp-Session-Id is issued and GET/DELETE are 405.
    sessions: SessionStore | None = None
    # SSE comment sent on an idle GET stream so proxies don't cut it.
    keepalive_interval: float = 15.0
    max_session_states: int = 100_000
    event_store: EventStore = field(default_factory=MemoryEventStore)
    # The SSE retry field: how long a client waits before it reconnects.
    retry_ms: int = 1000
    # Authorization (ops/auth.py): every request needs a valid bearer token; None: open.
    gate: Gate | None = None


_UNREPLAYABLE: Final = (
    "Bad request: the events after this Last-Event-ID cannot be replayed (the event store no longer "
    "holds them, or the id names no stream of this session on this server or in the store it shares); "
    "open a new stream without Last-Event-ID"
)


def _plain(responder: Responder, status: int, reason: str) -> None:
    responder.respond(status, TEXT_HEADERS, reason.encode() + b"\n")


def _rpc_error(responder: Responder, status: int, error: McpError, request_id: Any = None) -> None:
    responder.respond(status, JSON_HEADERS, jsonrpc.encode_error(request_id, error))


async def _accepted_once(told: Coroutine[Any, Any, None], responder: Responder) -> None:
    """202 once the fleet was told (a cancellation or an answer for another instance); 503 with a
    JSON-RPC error when its store is unavailable."""
    try:
        await told
    except FleetUnavailable as exc:
        _rpc_error(responder, FleetUnavailable.http_status, exc)
        return
    responder.respond(202, NO_HEADERS, b"")


def refuse(responder: Responder, refusal: HttpError) -> None:
    """An HTTP-level refusal (401 from the gate): its status and headers, the JSON-RPC error body."""
    responder.respond(refusal.status, (*JSON_HEADERS, *refusal.headers), jsonrpc.encode_error(None, refusal))


class StreamableHTTP:
    """Serves the MCP endpoint path, and hands every other path to ``others`` (the router).

    Called once per request; returns None when the request was answered at once (the common
    case), or a coroutine that finishes answering it.
    """

    def __init__(self, pipeline: Pipeline, settings: StreamableSettings | None = None) -> None:
        self.pipeline = pipeline
        self.server = pipeline.server
        self.settings = settings or StreamableSettings()
        self.sessions = self.settings.sessions
        self.path = self.settings.path
        self.others = self.settings.others
        self.rules = HeaderRules(self.settings.host_policy, stateful=self.sessions is not None)
        self.streams = SessionStreams(
            self.settings.event_store, self.settings.keepalive_interval, self.settings.retry_ms
        )
        self.sessionless = SessionlessPost(pipeline)
        self.gate = self.settings.gate
        self.sessions_created = 0  # read by the metrics at scrape time
        # Per-process state of sessions (log level, resource subscriptions).
        self._states: BoundedMap[str, SessionState] = BoundedMap(self.settings.max_session_states)
        self.server.on_list_changed(self._broadcast_list_changed)
        self.server.on_resource_updated(self._resource_updated)
        pipeline.on_task_status(self._announce_task_status)

    def __call__(self, request: Request, responder: Responder) -> Coroutine[Any, Any, None] | None:
        if request.path != self.path:
            if self.others is not None:
                return self.others(request, responder)
            _plain(responder, 404, "Not found: the MCP endpoint is " + self.path.decode())
            return None
        # The verdict on the headers, remembered per set of values (HeaderRules): inlined here,
        # where every request passes.
        headers = request.headers
        key: HeaderKey = (
            request.method,
            headers.get(b"host"),
            headers.get(b"origin"),
            headers.get(b"content-type"),
            headers.get(b"accept"),
            headers.get(b"mcp-protocol-version"),
        )
        verdict = self.rules.verdicts.get(key)
        if verdict is None:
            verdict = self.rules.verdict_of(key)
        if type(verdict) is Rejection:
            responder.respond(verdict.status, verdict.headers, verdict.body)
            return None
        assert type(verdict) is Accepted
        if self.gate is not None:
            return self._gated(request, responder, verdict, self.gate)
        if verdict.method == b"POST":
            return self.post(request, responder, verdict)
        if verdict.method == b"GET":
            return self.get(request, responder)
        return self.delete(request, responder)

    def _gated(
        self, request: Request, responder: Responder, verdict: Accepted, gate: Gate
    ) -> Coroutine[Any, Any, None] | None:
        """basic/authorization.mdx: every request carries the token; without a valid one: 401
        (after the Host/Origin checks, before anything of the body is read)."""
        try:
            admitted = gate.admit(request.headers.get(b"authorization"))
        except HttpError as refusal:
            refuse(responder, refusal)
            return None
        if not isinstance(admitted, Principal):
            return self._admitted_later(admitted, request, responder, verdict)
        if verdict.method == b"POST":
            return self.post(request, responder, verdict, admitted)
        return self._serve(request, responder, verdict, admitted)

    def _serve(
        self, request: Request, responder: Responder, verdict: Accepted, principal: Principal | None
    ) -> Coroutine[Any, Any, None] | None:
        if verdict.method == b"POST":
            return self.post(request, responder, verdict, principal)
        if verdict.method == b"GET":
            return self.get(request, responder, principal)
        return self.delete(request, responder, principal)

    async def _admitted_later(
        self, admitted: Awaitable[Principal], request: Request, responder: Responder, verdict: Accepted
    ) -> None:
        """A token seen for the first time (a key to fetch, a verifier to ask): then serve."""
        try:
            principal = await admitted
        except HttpError as refusal:
            refuse(responder, refusal)
            return
        pending = self._serve(request, responder, verdict, principal)
        if pending is not None:
            await pending

    # -- sessions ------------------------------------------------------------------

    def _session(
        self,
        request: Request,
        responder: Responder,
        request_id: Any = None,
        principal: Principal | None = None,
    ) -> Session | None:
        """The request's session; None after answering 400/404 (the request ends there). A session
        is bound to the principal that created it: another one's token gets 404, as an unknown
        session would (basic/authorization.mdx; security_best_practices "Session Hijacking")."""
        assert self.sessions is not None
        token = request.headers.get(b"mcp-session-id")
        if token is None:
            rejection = rpc_rejection(
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
            if (session.owner is not None or principal is not None) and session.owner != (
                principal.subject if principal is not None else None
            ):
                raise SessionNotFound("it belongs to another principal")
            return session
        except SessionNotFound as exc:
            # 404 tells the client to start a new session with initialize.
            rejection = rpc_rejection(404, SESSION_NOT_FOUND, f"Session not found: {exc}", request_id)
            responder.respond(rejection.status, rejection.headers, rejection.body)
            return None

    def state_of(self, session: Session) -> SessionState:
        state = self._states.get(session.id)
        if state is None:
            state = SessionState(session.id)
            self._states.put(session.id, state)
        return state

    def _call(
        self,
        message: Message,
        request: Request,
        responder: Responder,
        accepted: Accepted,
        policy: VersionPolicy,
        session: Session | None,
        principal: Principal | None,
    ) -> HttpCall:
        """The Call of one JSON-RPC request of a POST (a 2025 era request)."""
        if session is None:
            call = HttpCall(
                "streamable-http", message.id, message.method, message.params, policy, None,  # type: ignore[arg-type]
                request.headers, request.client,
            )  # fmt: skip
            call.streams = None
        else:
            call = HttpCall(
                "streamable-http", message.id, message.method, message.params, policy,  # type: ignore[arg-type]
                self.state_of(session), request.headers, request.client,
                session.client_capabilities, session.client_info,
            )  # fmt: skip
            call.streams = self.streams
        call.responder = responder
        call.accepted = accepted
        call.principal = principal
        return call

    # -- POST ------------------------------------------------------------------------

    def post(
        self, request: Request, responder: Responder, accepted: Accepted, principal: Principal | None = None
    ) -> Coroutine[Any, Any, None] | None:
        try:
            body = orjson.loads(request.body)  # jsonrpc.decode, inlined: every POST passes
        except orjson.JSONDecodeError:
            _rpc_error(responder, 400, jsonrpc.parse_error())
            return None
        header_policy = accepted.policy
        if (header_policy is not None and not header_policy.handshake) or (
            type(body) is dict
            and type(params := body.get("params")) is dict
            and type(meta := params.get("_meta")) is dict
            and PROTOCOL_VERSION_KEY in meta  # envelope.carries_envelope, inlined: asked on every POST
        ):
            return self.sessionless.post(body, request, responder, accepted, principal)
        if header_policy is None:
            _rpc_error(responder, 400, unsupported_version(accepted.version_text))
            return None
        session: Session | None = None
        policy = header_policy
        if type(body) is list:
            if self.sessions is not None:
                session = self._session(request, responder, None, principal)
                if session is None:
                    return None
                policy = POLICIES[session.protocol_version]
            return self.post_batch(body, request, responder, accepted, policy, session, principal)
        parts = jsonrpc.request_parts(body)
        if parts is None or parts[1] == "initialize":
            return self.post_message(body, request, responder, accepted, policy, principal)
        # A request (not initialize): the hot path, without a Message.
        request_id, method, params = parts
        if self.sessions is not None:
            session = self._session(request, responder, request_id, principal)
            if session is None:
                return None
            # Within a session the negotiated version rules, whatever the header
            # says (a client may send any supported version there).
            policy = POLICIES[session.protocol_version]
            call = HttpCall(
                "streamable-http", request_id, method, params, policy, self.state_of(session),
                request.headers, request.client, session.client_capabilities, session.client_info,
            )  # fmt: skip
            call.streams = self.streams
        else:
            call = HttpCall(
                "streamable-http", request_id, method, params, policy, None, request.headers, request.client
            )
            call.streams = None
        call.responder = responder
        call.accepted = accepted
        call.principal = principal
        answer = self.pipeline.request(call)
        if type(answer) is bytes:
            if call.outbound is None and accepted.json_ok and call.error_code is None:
                responder.respond(200, JSON_HEADERS, answer)  # deliver()'s common case, inlined
            else:
                call.deliver(answer)
            return None
        return deliver_later(call, answer)  # type: ignore[arg-type]

    def post_message(
        self,
        body: Any,
        request: Request,
        responder: Responder,
        accepted: Accepted,
        policy: VersionPolicy,
        principal: Principal | None = None,
    ) -> Coroutine[Any, Any, None] | None:
        """A POST that is not a plain request: initialize, a notification, a response, or not a
        valid JSON-RPC message at all (400)."""
        try:
            message = jsonrpc.parse_message(body)
        except jsonrpc.InvalidMessage as exc:
            _rpc_error(responder, 400, exc, exc.request_id)
            return None
        if message.kind is Kind.REQUEST:
            return self.initialize(self._call(message, request, responder, accepted, policy, None, principal))
        session: Session | None = None
        if self.sessions is not None:
            session = self._session(request, responder, message.id, principal)
            if session is None:
                return None
        owner = session.id if session is not None else None
        if message.kind is Kind.NOTIFICATION:
            told = self.pipeline.notification(message.method, message.params, owner, fleet_wide=True)
        else:
            told = self.pipeline.response(message, owner or "", fleet_wide=True)
        if told is not None:
            return _accepted_once(told, responder)
        responder.respond(202, NO_HEADERS, b"")
        return None

    def initialize(self, call: HttpCall) -> Coroutine[Any, Any, None] | None:
        """initialize: negotiate, and start a session (lifecycle; transports "Session Management")."""
        answer = self.pipeline.request(call)
        if type(answer) is bytes:
            self._answer_initialize(call, answer)
            return None
        return self._initialize_later(call, answer)  # type: ignore[arg-type]

    async def _initialize_later(self, call: HttpCall, answer: Coroutine[Any, Any, bytes | None]) -> None:
        response = await answer
        if response is None:
            call.abandon()
        else:
            self._answer_initialize(call, response)

    def _answer_initialize(self, call: HttpCall, response: bytes) -> None:
        handshake = Pipeline.handshake(call)
        if handshake is not None and self.sessions is not None:
            principal = call.principal
            session = self.sessions.create(
                handshake.version,
                handshake.capabilities,
                handshake.client_info,
                principal.subject if principal is not None else None,
            )
            self.sessions_created += 1
            channel = call.open_outbound()
            assert isinstance(channel, PostChannel)
            channel.extra_headers = [(b"mcp-session-id", session.token.encode())]
        call.deliver(response)

    async def post_batch(
        self,
        items: list[Any],
        request: Request,
        responder: Responder,
        accepted: Accepted,
        policy: VersionPolicy,
        session: Session | None,
        principal: Principal | None = None,
    ) -> None:
        """JSON-RPC 2.0 section 6, allowed only by 2025-03-26. The requests run one after another
        and share the POST's answer channel."""
        refused = batch.refusal(policy, items)
        if refused is not None:
            _rpc_error(responder, 400, refused)
            return
        owner = session.id if session is not None else None
        channel: PostChannel | None = None
        responses: list[bytes] = []
        told: list[Coroutine[Any, Any, None]] = []  # what the fleet must be told (other instances)

        def notification(message: Message) -> None:
            pending = self.pipeline.notification(message.method, message.params, owner, fleet_wide=True)
            if pending is not None:
                told.append(pending)

        def answer_from_client(message: Message) -> None:
            pending = self.pipeline.response(message, owner or "", fleet_wide=True)
            if pending is not None:
                told.append(pending)

        for entry in batch.requests(items, notification, answer_from_client):
            if isinstance(entry, bytes):
                responses.append(entry)
                continue
            call = self._call(entry, request, responder, accepted, policy, session, principal)
            if channel is None:
                opened = call.open_outbound()
                assert isinstance(opened, PostChannel)
                channel = opened
            call.outbound = channel
            answer = self.pipeline.request(call)
            answered = answer if type(answer) is bytes else await answer  # type: ignore[misc]
            if answered is not None:
                responses.append(answered)
        for pending in told:
            try:
                await pending
            except FleetUnavailable:
                logger.debug("a batch's cancellation or answer did not reach the other instances")
        if not responses:
            responder.respond(202, NO_HEADERS, b"")
        elif channel is not None and (
            channel.streaming or not channel.json_ok
        ):  # an SSE-only client gets SSE
            if not channel.streaming:
                channel.open_stream()
            for response in responses[:-1]:
                channel.emit(response)
            channel.finish(responses[-1])
        elif not accepted.json_ok:
            # Only errors (no request ran): a one-event-per-answer stream for an SSE-only client.
            channel = PostChannel(responder, accepted.json_ok, accepted.sse_ok)
            channel.open_stream()
            for response in responses[:-1]:
                channel.emit(response)
            channel.finish(responses[-1])
        else:
            responder.respond(200, JSON_HEADERS, b"[" + b",".join(responses) + b"]")

    # -- GET and DELETE ----------------------------------------------------------------

    async def get(self, request: Request, responder: Responder, principal: Principal | None = None) -> None:
        """The session's server-to-client stream (one per session: 409 for a second), or,
        with Last-Event-ID, the resumption of an earlier stream of the session."""
        session = self._session(request, responder, None, principal)
        if session is None:
            return
        streams = self.streams
        last_event_id = request.headers.get(b"last-event-id")
        replay = None
        if last_event_id:  # an empty one names no event (WHATWG SSE sends none then)
            try:
                # This process's streams, then (--redis) the fleet's store: a stream another
                # instance wrote resumes here.
                replay = await streams.replay(session.id, last_event_id)
            except FleetUnavailable as exc:  # not ours, and the store cannot be read now
                _rpc_error(responder, FleetUnavailable.http_status, exc)
                return
            if replay is None:
                # Resumability (basic/transports): the server MAY replay what followed the
                # event. When neither this process nor the fleet's store can (they let those
                # events go, or never had the stream: another session's, or no id of ours),
                # serving a fresh stream would hide the gap, and a POST's answer would never
                # come: say so, and the client starts over.
                rejection = rpc_rejection(400, INVALID_REQUEST, _UNREPLAYABLE)
                responder.respond(rejection.status, rejection.headers, rejection.body)
                return
            if replay.kind == "post":
                await streams.resume_post(replay, responder)  # a POST's stream
                return
        if streams.stream_of(session.id) is not None:
            _plain(responder, 409, "Conflict: this session already has an open GET stream")
            return
        stream = streams.open_get(
            responder, session.id, POLICIES[session.protocol_version].sse_priming, replay
        )
        # Nothing reads this request's head again: a stream idle for hours should not hold it
        # (the session token alone is a few hundred bytes).
        request.headers = {}
        try:
            await responder.wait_disconnected()
        finally:
            streams.close_get(stream)

    def delete(
        self, request: Request, responder: Responder, principal: Principal | None = None
    ) -> Coroutine[Any, Any, None] | None:
        """End the session (transports, "Session Management"): later requests get 404, on every
        instance of a fleet that shares ended sessions."""
        session = self._session(request, responder, None, principal)
        if session is None:
            return None
        assert self.sessions is not None
        self.sessions.end(session)
        self._states.pop(session.id, None)
        self.pipeline.end_session(session.id, _SESSION_ENDED)
        self.streams.end(session.id)
        fleet = self.pipeline.fleet
        if fleet.shared:
            return self._end_everywhere(session, responder)
        responder.respond(200, NO_HEADERS, b"")
        return None

    async def _end_everywhere(self, session: Session, responder: Responder) -> None:
        """Tell the fleet; 503 when its store is unavailable (the session is ended here, and the
        others learn of it once the store is back)."""
        try:
            await self.pipeline.fleet.end_session(session.id, session.expires_at)
        except FleetUnavailable as exc:
            _rpc_error(responder, FleetUnavailable.http_status, exc)
            return
        responder.respond(200, NO_HEADERS, b"")

    # -- notifications not tied to a request ------------------------------------------

    def _broadcast_list_changed(self, kind: str) -> None:
        self.streams.broadcast(jsonrpc.encode_notification(f"notifications/{kind}/list_changed", None))

    def _resource_updated(self, uri: str) -> None:
        """notifications/resources/updated to every session subscribed to ``uri`` in this process."""
        subscribed = {
            stream.session_id
            for stream in self.streams.open_streams()
            if (state := self._states.get(stream.session_id)) is not None and uri in state.subscriptions
        }
        if subscribed:
            message = jsonrpc.encode_notification("notifications/resources/updated", {"uri": uri})
            self.streams.broadcast(message, subscribed)

    def _announce_task_status(self, task: Task) -> None:
        """notifications/tasks/status on the owning session's GET stream (optional in the spec)."""
        if task.owner:
            self.streams.send(
                task.owner, jsonrpc.encode_notification("notifications/tasks/status", task.to_json())
            )
