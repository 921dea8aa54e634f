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
_VERDICT_CACHE_SIZE: Final = 256


@dataclass
class StreamableSettings:
    path: bytes = b"/mcp"
    page_size: int = 100
    host_policy: HostPolicy = field(default_factory=HostPolicy.loopback)


def _plain(responder: Responder, status: int, reason: str) -> None:
    responder.respond(status, TEXT_HEADERS, reason.encode() + b"\n")


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


@dataclass(frozen=True, slots=True)
class Rejection:
    """An HTTP-level refusal, decided from the request's method and headers alone."""

    status: int
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class PostVerdict:
    """A POST whose headers passed: the version in force and what the client accepts."""

    policy: VersionPolicy
    json_ok: bool
    sse_ok: bool


Verdict = Rejection | PostVerdict
HeaderKey = tuple[bytes, bytes | None, bytes | None, bytes | None, bytes | None, bytes | None]


def _plain_rejection(status: int, reason: str, extra: Headers | None = None) -> Rejection:
    return Rejection(status, [*TEXT_HEADERS, *(extra or [])], reason.encode() + b"\n")


class StreamableHTTP:
    """Serves one MCP endpoint path; everything else is 404.

    Called once per request; returns None when the request was answered at
    once (the common case), or a coroutine that finishes answering it.
    """

    def __init__(self, server: MCPServer, settings: StreamableSettings | None = None) -> None:
        self.server = server
        self.settings = settings or StreamableSettings()
        self.dispatcher = Dispatcher(server, page_size=self.settings.page_size)
        # A client sends the same header values on every request, so the verdict
        # on them is computed once and remembered (bounded: a client that varies
        # them only pays for the checks themselves).
        self._verdicts: dict[HeaderKey, Verdict] = {}

    def __call__(self, request: Request, responder: Responder) -> Coroutine[Any, Any, None] | None:
        if request.path != self.settings.path:
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
        assert type(verdict) is PostVerdict
        return self.post(request, responder, verdict)

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
        if method != b"POST":
            # GET streams and DELETE need sessions (2025 session management).
            return _plain_rejection(405, "Method not allowed: this endpoint takes POST", ALLOW_POST)
        if not _is_json_content_type(content_type):
            return _plain_rejection(415, "Unsupported media type: the body must be application/json")
        json_ok, sse_ok = _accepts(accept if accept is not None else b"*/*")
        if not (json_ok or sse_ok):
            return _plain_rejection(406, "Not acceptable: accept application/json or text/event-stream")
        # 2025-06-18 "Protocol Version Header": absent means 2025-03-26.
        if version is None:
            return PostVerdict(POLICIES[VERSION_WHEN_HEADER_ABSENT], json_ok, sse_ok)
        text = version.decode("latin-1").strip()
        policy = POLICIES.get(text)
        if policy is None:
            supported = ", ".join(SUPPORTED_VERSIONS)
            error = RpcError(
                INVALID_REQUEST, f"Unsupported MCP-Protocol-Version {text!r}; supported: {supported}"
            )
            return Rejection(400, JSON_HEADERS, jsonrpc.encode_error(None, error))
        return PostVerdict(policy, json_ok, sse_ok)

    def post(
        self, request: Request, responder: Responder, verdict: PostVerdict
    ) -> Coroutine[Any, Any, None] | None:
        try:
            body = jsonrpc.decode(request.body)
        except RpcError as exc:
            _rpc_error(responder, 400, exc)
            return None
        policy = verdict.policy
        channel = PostChannel(responder, verdict.json_ok, verdict.sse_ok)
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
