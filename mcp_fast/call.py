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

from mcp_fast.protocol.jsonrpc import INTERNAL_ERROR, McpError, RequestId
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
        return f"HeaderMap({dict(self.items())!r})"


NO_HEADERS: Final = HeaderMap({})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as authorization established it: ``call.principal`` and
    ``ctx.call.principal`` (None while the server does not authorize requests)."""

    subject: str
    scopes: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict)


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
        "_raw_headers",
        "cancelled",
        "client",
        "client_capabilities",
        "client_info",
        "error_code",
        "error_status",
        "id",
        "log_level",
        "method",
        "outbound",
        "params",
        "policy",
        "principal",
        "running",
        "session",
        "transport",
    )

    error_status: int  # set only with an error that fixes its HTTP status: see __init__

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
        self._raw_headers = raw_headers
        self._headers: HeaderMap | None = None
        self.client = client
        # What the client declared (the session's initialize, or the request's _meta).
        self.client_capabilities = client_capabilities
        self.client_info = client_info
        self.log_level = log_level  # 2026-07-28: the request's own _meta logLevel (a rank)
        self.principal: Principal | None = None
        self.cancelled = False
        # Set by the pipeline: the JSON-RPC error code the request was answered with.
        self.error_code: int | None = None
        # ``error_status`` (a slot, set only with such an error: every request would pay for
        # setting it here; read it with ``http_status_of_error``): the HTTP status the error answer
        # carries where the transport has one, 503 when a store the fleet shares is unavailable.
        # What runs the handler (its Task, or a thread's future): cancel() stops it.
        self.running: asyncio.Future[Any] | None = None
        # Where the handler's notifications go; opened on demand (open_outbound).
        self.outbound: Outbound | None = None

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
            raw = self._raw_headers
            headers = self._headers = NO_HEADERS if raw is None else HeaderMap(raw)
        return headers

    @property
    def meta(self) -> dict[str, Any] | None:
        """``params._meta`` (progress token, the 2026-07-28 envelope, trace context ...)."""
        params = self.params
        meta = params.get("_meta") if params is not None else None
        return meta if type(meta) is dict else None

    def http_status_of_error(self) -> int | None:
        """The HTTP status an error answer must carry whatever the version's rule (None: none)."""
        status: int | None = getattr(self, "error_status", None)
        return status

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
            self._raw_headers,
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
