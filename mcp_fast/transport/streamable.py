"""Streamable HTTP (MCP 2025-03-26, 2025-06-18, 2025-11-25), the POST side.

Spec: docs/specification/<version>/basic/transports.mdx, "Streamable HTTP".
A POST carries one JSON-RPC message (a batch only under 2025-03-26):
- notifications and responses -> 202 Accepted, no body;
- requests -> ``application/json``, or ``text/event-stream`` once the handler
  sends a notification (progress, log message) before its result and the client
  accepts SSE. The switch happens lazily, on the first notification, so the
  common case costs one JSON write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

from mcp_fast import jsonrpc
from mcp_fast.context import Context
from mcp_fast.dispatch import Dispatcher
from mcp_fast.http import sse
from mcp_fast.http.events import Request
from mcp_fast.jsonrpc import INVALID_REQUEST, Kind, RpcError
from mcp_fast.server import MCPServer
from mcp_fast.transport.origin import HostPolicy
from mcp_fast.transport.responder import Headers, Responder
from mcp_fast.versions import POLICIES, SUPPORTED_VERSIONS, VERSION_WHEN_HEADER_ABSENT, VersionPolicy

JSON_HEADERS: Final[Headers] = [(b"content-type", b"application/json")]
SSE_HEADERS: Final[Headers] = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    # nginx buffers proxied responses unless told not to; SSE must flow at once.
    (b"x-accel-buffering", b"no"),
]
TEXT_HEADERS: Final[Headers] = [(b"content-type", b"text/plain; charset=utf-8")]
ALLOW_POST: Final[Headers] = [(b"allow", b"POST")]
_VERDICT_CACHE_SIZE: Final = 64


@dataclass
class StreamableSettings:
    path: bytes = b"/mcp"
    page_size: int = 100
    host_policy: HostPolicy = field(default_factory=HostPolicy.loopback)


def _plain(responder: Responder, status: int, reason: str, extra: Headers = ()) -> None:  # type: ignore[assignment]
    responder.respond(status, [*TEXT_HEADERS, *extra], reason.encode() + b"\n")


def _rpc_error(responder: Responder, status: int, error: RpcError, request_id: Any = None) -> None:
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


class PostChannel:
    """The answer to one POST: JSON by default, upgraded to SSE by the first notification."""

    __slots__ = ("json_ok", "responder", "sse_ok", "streaming")

    def __init__(self, responder: Responder, json_ok: bool, sse_ok: bool) -> None:
        self.responder = responder
        self.json_ok = json_ok
        self.sse_ok = sse_ok
        self.streaming = False

    def _start(self) -> None:
        self.streaming = True
        self.responder.start_stream(200, SSE_HEADERS)

    async def notify(self, method: str, params: dict[str, Any] | None) -> None:
        if not self.sse_ok:
            return  # a JSON-only client has no channel for notifications on a POST
        if not self.streaming:
            self._start()
        self.responder.send_stream(sse.encode_message(jsonrpc.encode_notification(method, params)))
        await self.responder.drain()

    def finish(self, response: bytes) -> None:
        if not self.streaming and self.json_ok:
            self.responder.respond(200, JSON_HEADERS, response)
            return
        if not self.streaming:
            self._start()
        self.responder.send_stream(sse.encode_message(response))
        self.responder.end_stream()


class StreamableHTTP:
    """Serves one MCP endpoint path; everything else is 404.

    Called once per request; returns None when the request was answered at
    once (the common case), or a coroutine that finishes answering it.
    """

    def __init__(self, server: MCPServer, settings: StreamableSettings | None = None) -> None:
        self.server = server
        self.settings = settings or StreamableSettings()
        self.dispatcher = Dispatcher(server, page_size=self.settings.page_size)
        # Header values repeat from request to request, so the verdicts on them
        # are remembered (bounded: a client sending new values each time only
        # costs the check itself).
        self._accept_verdicts: dict[bytes, tuple[bool, bool]] = {}
        self._policy_of_header: dict[bytes, VersionPolicy] = {}

    def __call__(self, request: Request, responder: Responder) -> Coroutine[Any, Any, None] | None:
        if request.path != self.settings.path:
            _plain(responder, 404, "Not found: the MCP endpoint is " + self.settings.path.decode())
            return None
        problem = self.settings.host_policy.check(request.headers)
        if problem is not None:
            _plain(responder, problem[0], problem[1])
            return None
        if request.method == b"POST":
            return self.post(request, responder)
        # GET streams and DELETE need sessions (2025 session management).
        _plain(responder, 405, "Method not allowed: this endpoint takes POST", ALLOW_POST)
        return None

    def _accepts(self, accept: bytes) -> tuple[bool, bool]:
        verdict = self._accept_verdicts.get(accept)
        if verdict is None:
            verdict = _accepts(accept)
            if len(self._accept_verdicts) < _VERDICT_CACHE_SIZE:
                self._accept_verdicts[accept] = verdict
        return verdict

    def _policy(self, request: Request, responder: Responder) -> VersionPolicy | None:
        """The version in force for a request (2025-06-18 "Protocol Version Header")."""
        header = request.headers.get(b"mcp-protocol-version")
        if header is None:
            return POLICIES[VERSION_WHEN_HEADER_ABSENT]
        policy = self._policy_of_header.get(header)
        if policy is not None:
            return policy
        policy = POLICIES.get(header.decode("latin-1").strip())
        if policy is None:
            supported = ", ".join(SUPPORTED_VERSIONS)
            error = RpcError(
                INVALID_REQUEST,
                f"Unsupported MCP-Protocol-Version {header.decode('latin-1')!r}; supported: {supported}",
            )
            _rpc_error(responder, 400, error)
        elif len(self._policy_of_header) < _VERDICT_CACHE_SIZE:
            self._policy_of_header[header] = policy
        return policy

    def post(self, request: Request, responder: Responder) -> Coroutine[Any, Any, None] | None:
        headers = request.headers
        if not _is_json_content_type(headers.get(b"content-type")):
            _plain(responder, 415, "Unsupported media type: the body must be application/json")
            return None
        json_ok, sse_ok = self._accepts(headers.get(b"accept", b"*/*"))
        if not (json_ok or sse_ok):
            _plain(responder, 406, "Not acceptable: accept application/json or text/event-stream")
            return None
        policy = self._policy(request, responder)
        if policy is None:
            return None
        try:
            body = jsonrpc.decode(request.body)
        except RpcError as exc:
            _rpc_error(responder, 400, exc)
            return None
        channel = PostChannel(responder, json_ok, sse_ok)
        if type(body) is list:
            return self.post_batch(body, policy, channel)
        try:
            message = jsonrpc.parse_message(body)
        except jsonrpc.InvalidMessage as exc:
            _rpc_error(responder, 400, exc, exc.request_id)
            return None
        if message.kind is Kind.REQUEST:
            ctx = Context(self.server, message.id, _meta(message.params), policy, channel)
            outcome = self.dispatcher.dispatch(message, ctx)
            if isinstance(outcome, bytes):
                channel.finish(outcome)
                return None
            return _finish(channel, outcome)
        if message.kind is Kind.NOTIFICATION:
            self.dispatcher.handle_notification(message)
        # A response to a server-to-client request is routed once sessions exist.
        responder.respond(202, [], b"")
        return None

    async def post_batch(self, batch: list[Any], policy: VersionPolicy, channel: PostChannel) -> None:
        """JSON-RPC 2.0 section 6, allowed only by 2025-03-26."""
        responder = channel.responder
        if not policy.batches:
            error = RpcError(
                INVALID_REQUEST, f"Batches are not supported in protocol version {policy.version}"
            )
            _rpc_error(responder, 400, error)
            return
        if not batch:
            _rpc_error(responder, 400, RpcError(INVALID_REQUEST, "Invalid request: empty batch"))
            return
        responses: list[bytes] = []
        for item in batch:
            try:
                message = jsonrpc.parse_message(item)
            except jsonrpc.InvalidMessage as exc:
                responses.append(jsonrpc.encode_error(exc.request_id, exc))
                continue
            if message.kind is Kind.REQUEST:
                ctx = Context(self.server, message.id, _meta(message.params), policy, channel)
                outcome = self.dispatcher.dispatch(message, ctx)
                responses.append(outcome if isinstance(outcome, bytes) else await outcome)
            elif message.kind is Kind.NOTIFICATION:
                self.dispatcher.handle_notification(message)
        if not responses:
            responder.respond(202, [], b"")
        elif channel.streaming:
            for response in responses[:-1]:
                responder.send_stream(sse.encode_message(response))
            channel.finish(responses[-1])
        else:
            responder.respond(200, JSON_HEADERS, b"[" + b",".join(responses) + b"]")


async def _finish(channel: PostChannel, outcome: Awaitable[bytes]) -> None:
    channel.finish(await outcome)


def _meta(params: dict[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    meta = params.get("_meta")
    return meta if type(meta) is dict else None
