"""One MCP request as it arrived: the ``Call`` a middleware gets, and ``ctx.call`` in a handler.

A transport builds one ``Call`` per JSON-RPC request and hands it to the request pipeline
(``mcp_fast.pipeline``): the message (id, method, params) and the facts of its arrival
(transport, protocol version, session, HTTP headers, client address, principal). Everything
after that -- middleware, the result cache, the handler, the answer -- reads the same object.

Transports subclass it for what only they need (where the request's notifications go);
middleware and handlers see the public attributes below and nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from mcp_fast.protocol.jsonrpc import INTERNAL_ERROR, HttpError, McpError, RequestId
from mcp_fast.protocol.versions import VersionPolicy

TransportName = Literal["streamable-http", "sse", "stdio", "memory"]
# The rest of the chain: the next middleware, or at its end the handler (a result, or McpError).
CallNext = Callable[["Call"], Awaitable[Any]]
# ``async def fn(call, call_next)``: see MCPServer.add_middleware.
Middleware = Callable[["Call", CallNext], Awaitable[Any]]


class HeaderMap(Mapping[str, str]):
    """A request's HTTP headers: case-insensitive names, values as text (empty for stdio).

    Built over the parser's own table (lower-case byte names) when first asked for, so a
    request whose middleware and handler never look costs nothing. A field sent more than
    once reads as one value joined with ", " (RFC 9110 section 5.3).
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: Mapping[bytes, bytes]) -> None:
        self._raw = raw

    def __getitem__(self, name: str) -> str:
        return self._raw[name.lower().encode("latin-1")].decode("latin-1")

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower().encode("latin-1") in self._raw

    def __iter__(self) -> Iterator[str]:
        return (name.decode("latin-1") for name in self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def raw(self, name: str) -> bytes | None:
        """The value as the client sent it (bytes), or None."""
        return self._raw.get(name.lower().encode("latin-1"))

    def __repr__(self) -> str:
        # Credentials never reach a log line through a repr (basic/authorization.mdx, token theft).
        shown = {name: "<redacted>" if name in _SECRET_HEADERS else value for name, value in self.items()}
        return f"HeaderMap({shown!r})"


NO_HEADERS: Final = HeaderMap({})
_SECRET_HEADERS: Final = frozenset({"authorization", "cookie", "proxy-authorization"})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as authorization established it: ``call.principal`` and
    ``ctx.call.principal`` (None while the server does not authorize requests)."""

    subject: str
    scopes: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict)


# ``MCPServer(token_verifier=...)``: an opaque bearer token -> who it belongs to, or None when
# it is not valid (basic/authorization.mdx: the server validates every token it receives).
TokenVerifier = Callable[[str], Awaitable[Principal | None]]


class SessionState:
    """What this process remembers of one session (bounded by the transport).

    Sessions themselves are stateless tokens; this holds only what must live where the
    requests run: the log level chosen with ``logging/setLevel`` and resource subscriptions.
    """

    __slots__ = ("log_level", "session_id", "subscriptions")

    def __init__(self, session_id: str = "") -> None:
        self.session_id = session_id
        self.log_level = 0  # debug: everything, until logging/setLevel says otherwise
        self.subscriptions: set[str] = set()


class Outbound(Protocol):
    """Where a request's messages to the client go (each transport implements it)."""

    async def notify(self, method: str, params: dict[str, Any] | None) -> None: ...

    def notify_nowait(self, method: str, params: dict[str, Any] | None) -> None:
        """A notification written at once (no wait for the client to read)."""

    async def send_request(self, message: bytes) -> None:
        """Send a server-to-client request; raise McpError when this channel can't carry one."""

    async def close_stream(self) -> None:
        """End the HTTP response early; the client resumes with GET + Last-Event-ID."""

    async def wait_closed(self) -> None:
        """Return when the client went away."""

    async def drain(self) -> None:
        """Wait while the client reads slower than we write (backpressure)."""

    def detached(self) -> Outbound:
        """Where messages of work that outlives this request go (a task): the session's GET stream."""


class _Silent:
    """The outbound of a request with no channel back to the client: notifications are dropped."""

    __slots__ = ()

    async def notify(self, method: str, params: dict[str, Any] | None) -> None:
        return None

    def notify_nowait(self, method: str, params: dict[str, Any] | None) -> None:
        return None

    async def send_request(self, message: bytes) -> None:
        raise McpError(INTERNAL_ERROR, "This request has no channel for requests to the client")

    async def close_stream(self) -> None:
        return None

    async def wait_closed(self) -> None:
        await asyncio.get_running_loop().create_future()  # never: nothing closes

    async def drain(self) -> None:
        return None

    def detached(self) -> Outbound:
        return self


SILENT: Final[Outbound] = _Silent()


class Call:
    """One request through the pipeline.

    Public, for middleware and handlers (``ctx.call``): ``id``, ``method``, ``params``,
    ``tool_name``, ``transport``, ``protocol_version``, ``session_id``, ``headers``,
    ``client``, ``principal``, ``client_capabilities``, ``client_info``, ``cancelled``.
    """

    __slots__ = (
        "_headers",
        "cancelled",
        "client",
        "client_capabilities",
        "client_info",
        "error_code",
        "id",
        "log_level",
        "method",
        "outbound",
        "params",
        "policy",
        "principal",
        "raw_headers",
        "refusal",
        "running",
        "session",
        "started",
        "tool_error",
        "trace",
        "transport",
    )

    # Positional parameters: a Call is made for every request, and keywords cost more.
    def __init__(
        self,
        transport: TransportName,
        request_id: RequestId,
        method: str,
        params: dict[str, Any] | None,
        policy: VersionPolicy,
        session: SessionState | None = None,
        raw_headers: Mapping[bytes, bytes] | None = None,
        client: tuple[str, int] | None = None,
        client_capabilities: dict[str, Any] | None = None,
        client_info: dict[str, Any] | None = None,
        log_level: int | None = None,
    ) -> None:
        self.transport: TransportName = transport
        self.id = request_id
        self.method = method
        self.params = params
        # The protocol version in force: the session's, or the request's own (2026-07-28).
        self.policy = policy
        self.session = session
        # The HTTP request's header table as parsed (lower-case byte names); None for stdio.
        self.raw_headers = raw_headers
        self._headers: HeaderMap | None = None
        self.client = client
        # What the client declared (the session's initialize, or the request's _meta).
        self.client_capabilities = client_capabilities
        self.client_info = client_info
        self.log_level = log_level  # 2026-07-28: the request's own _meta logLevel (a rank)
        self.principal: Principal | None = None
        self.cancelled = False
        # Set by the pipeline: the JSON-RPC error code the request was answered with, and
        # the error itself when it carries an HTTP status (401/403/429: HttpCall honours it).
        self.error_code: int | None = None
        self.refusal: HttpError | None = None
        # Set by the pipeline: the tools/call result said isError (metrics, audit).
        self.tool_error = False
        # What runs the handler (its Task, or a thread's future): cancel() stops it.
        self.running: asyncio.Future[Any] | None = None
        # Where the handler's notifications go; opened on demand (open_outbound).
        self.outbound: Outbound | None = None
        # ``started`` (perf_counter when the pipeline took the request) and ``trace`` (a
        # tracing span) are set only while a RequestObserver watches: unset otherwise.
        self.started: float
        self.trace: Any

    @property
    def protocol_version(self) -> str:
        return self.policy.version

    @property
    def session_id(self) -> str | None:
        """The session's id (not its token), or None: no session (stateless, 2026-07-28)."""
        session = self.session
        return session.session_id if session is not None else None

    @property
    def tool_name(self) -> str | None:
        """The tool a ``tools/call`` names; None for every other method."""
        if self.method != "tools/call" or self.params is None:
            return None
        name = self.params.get("name")
        return name if type(name) is str else None

    @property
    def headers(self) -> HeaderMap:
        """The HTTP request's headers, case-insensitive (empty for stdio)."""
        headers = self._headers
        if headers is None:
            raw = self.raw_headers
            headers = self._headers = NO_HEADERS if raw is None else HeaderMap(raw)
        return headers

    def raw_header(self, name: bytes) -> bytes | None:
        """One header's raw value by its lower-case name (bytes), or None: the cheap lookup
        built-in checks use on every request (``headers`` is for everyone else)."""
        raw = self.raw_headers
        return None if raw is None else raw.get(name)

    @property
    def meta(self) -> dict[str, Any] | None:
        """``params._meta`` (progress token, the 2026-07-28 envelope, trace context ...)."""
        params = self.params
        meta = params.get("_meta") if params is not None else None
        return meta if type(meta) is dict else None

    def cancel(self) -> None:
        """Stop the request: its handler is cancelled (a thread's result is dropped) and no
        answer is sent (``notifications/cancelled``; 2026-07-28: the client closed the stream)."""
        self.cancelled = True
        running = self.running
        if running is not None:
            running.cancel()

    def cancel_scope(self) -> str | None:
        """Where ``notifications/cancelled`` for this request comes from: its session (None: it
        cannot be cancelled that way; a 2026-07-28 HTTP request is cancelled by closing its stream)."""
        session = self.session
        return session.session_id if session is not None else None

    def open_outbound(self) -> Outbound:
        """Where this request's notifications and server-to-client requests go. The transport's
        subclass opens its channel here (a POST's SSE stream, the session's pipe), once."""
        outbound = self.outbound
        if outbound is None:
            outbound = self.outbound = SILENT
        return outbound

    def detached_copy(self) -> Call:
        """The same request for work that outlives its answer (a task): its messages go where
        the transport sends what is not tied to a request, and it is cancelled on its own."""
        copy = Call(
            self.transport,
            self.id,
            self.method,
            self.params,
            self.policy,
            self.session,
            self.raw_headers,
            self.client,
            self.client_capabilities,
            self.client_info,
            self.log_level,
        )
        copy.principal = self.principal
        copy.outbound = self.open_outbound().detached()
        return copy

    def __repr__(self) -> str:
        return f"<Call {self.method} id={self.id!r} via {self.transport} {self.policy.version}>"


class RequestObserver(Protocol):
    """Watches every request the pipeline answers (metrics, audit, tracing): synchronous calls,
    no coroutine, so watching costs a request a function call or two.

    The pipeline sets ``call.started`` (``time.perf_counter()``) when it takes the request;
    ``begin`` runs then (before middleware) unless ``needs_begin`` is False; ``end`` once it is
    answered (``answered`` False: cancelled, no answer sent). By then ``call.error_code`` (a
    JSON-RPC error), ``call.refusal`` (one with an HTTP status) and ``call.tool_error`` (an
    ``isError`` tool result) say how it went. Neither may raise.
    """

    needs_begin: bool

    def begin(self, call: Call) -> None: ...

    def end(self, call: Call, answered: bool) -> None: ...


# Checks a request before anything runs (rate limits, scopes): raise McpError (HttpError for a
# status) to refuse it; synchronous, so a check costs no coroutine. A check that must ask the
# fleet first (a shared rate limit out of leased tokens) returns an awaitable instead, which
# raises the same way: the request waits for it (the pipeline's ``_checked``).
RequestCheck = Callable[[Call], Awaitable[None] | None]


class Gate(Protocol):
    """Who is calling, decided from an HTTP request's ``Authorization`` header before any MCP
    message of it is read (the authorization of a protected MCP server, basic/authorization.mdx).

    ``admit`` returns the Principal (at once when the token is known), or an awaitable of it
    (a token seen for the first time may need a key fetched or a verifier asked); it raises
    ``HttpError`` (401) for a missing or invalid token. Transports with HTTP ask it for every
    MCP request; stdio has no gate.
    """

    def admit(self, authorization: bytes | None) -> Principal | Awaitable[Principal]: ...
