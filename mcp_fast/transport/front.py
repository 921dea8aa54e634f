"""What runs in front of every HTTP request, when configured: the client's address behind a
proxy, CORS, the access log. Each is a small ``App`` around the next one (app.py stacks those the
configuration asks for; none: the network adapter calls the endpoint directly).

The policies live in ``mcp_fast.ops`` (forwarded.py, cors.py, logs.py); this module keeps only
the HTTP plumbing, through the small interfaces below.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final, Protocol

import orjson

from mcp_fast.transport.router import App
from mcp_fast.wire.events import Request
from mcp_fast.wire.responder import Headers, Responder

_TEXT: Final = ((b"content-type", b"text/plain; charset=utf-8"),)
_MAX_BODY_FOR_METHOD: Final = 1 << 20


class ClientResolver(Protocol):
    def client(
        self, headers: Mapping[bytes, bytes], peer: tuple[str, int] | None
    ) -> tuple[str, int] | None: ...


class Cors(Protocol):
    def allows(self, origin: bytes) -> bool: ...

    def response_headers(self, origin: bytes) -> Headers: ...

    def preflight_headers(self, origin: bytes, requested: bytes | None) -> Headers: ...


# (client, HTTP method, path, MCP method or None, status, seconds, body bytes sent)
AccessRecord = Callable[[tuple[str, int] | None, str, str, str | None, int, float, int], None]


class ForwardedFront:
    """``request.client`` becomes the address the trusted proxy says (``--forwarded-allow-ips``)."""

    __slots__ = ("_app", "_resolver")

    def __init__(self, app: App, resolver: ClientResolver) -> None:
        self._app = app
        self._resolver = resolver

    def __call__(self, request: Request, responder: Responder) -> Coroutine[Any, Any, None] | None:
        request.client = self._resolver.client(request.headers, request.client)
        return self._app(request, responder)


class CorsFront:
    """Preflights answered here; responses to an allowed origin get the CORS headers."""

    __slots__ = ("_app", "_cors")

    def __init__(self, app: App, cors: Cors) -> None:
        self._app = app
        self._cors = cors

    def __call__(self, request: Request, responder: Responder) -> Coroutine[Any, Any, None] | None:
        headers = request.headers
        origin = headers.get(b"origin")
        if origin is None:
            return self._app(request, responder)
        cors = self._cors
        if request.method == b"OPTIONS" and b"access-control-request-method" in headers:
            # A CORS preflight (Fetch standard, "CORS-preflight request").
            if not cors.allows(origin):
                responder.respond(403, _TEXT, b"Forbidden: Origin not allowed\n")
                return None
            requested = headers.get(b"access-control-request-headers")
            responder.respond(204, cors.preflight_headers(origin, requested), b"")
            return None
        if not cors.allows(origin):
            return self._app(request, responder)
        return self._app(request, _WithHeaders(responder, cors.response_headers(origin)))


class AccessLogFront:
    """One record per HTTP request, when its answer ends (a stream: when the stream ends)."""

    __slots__ = ("_app", "_mcp_paths", "_record")

    def __init__(self, app: App, record: AccessRecord, mcp_paths: frozenset[bytes]) -> None:
        self._app = app
        self._record = record
        self._mcp_paths = mcp_paths

    def __call__(self, request: Request, responder: Responder) -> Coroutine[Any, Any, None] | None:
        mcp_method = None
        if request.method == b"POST" and request.path in self._mcp_paths:
            mcp_method = _mcp_method(request.body)
        logged = _Logged(
            responder,
            self._record,
            request.client,
            request.method.decode("latin-1"),
            request.path.decode("latin-1"),
            mcp_method,
        )
        return self._app(request, logged)


def _mcp_method(body: bytes | memoryview) -> str | None:
    """The JSON-RPC method of a POST body ("batch" for a batch), for the access log."""
    if len(body) > _MAX_BODY_FOR_METHOD:
        return None
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(message) is list:
        return "batch"
    method = message.get("method") if type(message) is dict else None
    if type(method) is str:
        return method[:64]
    return "response" if type(message) is dict else None


class _Delegating:
    """A Responder that passes everything to the one it wraps."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Responder) -> None:
        self._inner = inner

    def respond(self, status: int, headers: Headers, body: bytes) -> None:
        self._inner.respond(status, headers, body)

    def start_stream(self, status: int, headers: Headers) -> None:
        self._inner.start_stream(status, headers)

    def send_stream(self, data: bytes) -> None:
        self._inner.send_stream(data)

    async def drain(self) -> None:
        await self._inner.drain()

    def end_stream(self) -> None:
        self._inner.end_stream()

    @property
    def disconnected(self) -> bool:
        return self._inner.disconnected

    def on_disconnect(self, callback: Callable[[], None] | None) -> None:
        self._inner.on_disconnect(callback)

    def on_shutdown(self, callback: Callable[[], None] | None) -> None:
        self._inner.on_shutdown(callback)

    async def wait_disconnected(self) -> None:
        await self._inner.wait_disconnected()

    def abort(self) -> None:
        self._inner.abort()


class _WithHeaders(_Delegating):
    """Adds headers to whatever the response is (CORS)."""

    __slots__ = ("_extra",)

    def __init__(self, inner: Responder, extra: Headers) -> None:
        super().__init__(inner)
        self._extra = extra

    def respond(self, status: int, headers: Headers, body: bytes) -> None:
        self._inner.respond(status, (*headers, *self._extra), body)

    def start_stream(self, status: int, headers: Headers) -> None:
        self._inner.start_stream(status, (*headers, *self._extra))


class _Logged(_Delegating):
    """Counts what is sent and records the exchange once it ends."""

    __slots__ = ("_client", "_http_method", "_mcp_method", "_path", "_record", "_sent", "_started", "_status")

    def __init__(
        self,
        inner: Responder,
        record: AccessRecord,
        client: tuple[str, int] | None,
        http_method: str,
        path: str,
        mcp_method: str | None,
    ) -> None:
        super().__init__(inner)
        self._record = record
        self._client = client
        self._http_method = http_method
        self._path = path
        self._mcp_method = mcp_method
        self._started = time.perf_counter()
        self._status = 0
        self._sent = 0

    def respond(self, status: int, headers: Headers, body: bytes) -> None:
        self._inner.respond(status, headers, body)
        self._status = status
        self._sent = len(body)
        self._done()

    def start_stream(self, status: int, headers: Headers) -> None:
        self._status = status
        self._inner.start_stream(status, headers)

    def send_stream(self, data: bytes) -> None:
        self._sent += len(data)
        self._inner.send_stream(data)

    def end_stream(self) -> None:
        self._inner.end_stream()
        self._done()

    def abort(self) -> None:
        self._inner.abort()
        self._done()

    def _done(self) -> None:
        if self._started < 0:
            return  # recorded once
        elapsed = time.perf_counter() - self._started
        self._started = -1.0
        self._record(
            self._client, self._http_method, self._path, self._mcp_method, self._status, elapsed, self._sent
        )
