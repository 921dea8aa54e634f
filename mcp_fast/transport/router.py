"""The HTTP application: each request goes by its path to the MCP endpoint, the old HTTP+SSE
transport's two paths, or a plain route (``@server.route``); anything else is 404.

Plain routes answer with what their handler returns (``mcp_fast/routes.py``): bytes, str, a
dict or list as JSON, None as 204, or a full ``Response``. A method the route does not take is
405 with ``Allow``; a handler that raises is 500 (logged with its traceback, never shown).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final

import orjson

from mcp_fast.call import HeaderMap
from mcp_fast.routes import HttpRequest, Response, Route
from mcp_fast.transport.origin import HostPolicy
from mcp_fast.wire.events import Request
from mcp_fast.wire.responder import Headers, Responder

logger = logging.getLogger("mcp_fast.transport")

# What the network adapter calls: answer at once (None) or return a coroutine to run.
App = Callable[[Request, Responder], Coroutine[Any, Any, None] | None]

_TEXT: Final = b"text/plain; charset=utf-8"
_JSON: Final = b"application/json"
_OCTETS: Final = b"application/octet-stream"


def _plain(responder: Responder, status: int, reason: str, extra: Headers = ()) -> None:
    responder.respond(status, ((b"content-type", _TEXT), *extra), reason.encode() + b"\n")


class RouteEndpoint:
    """One plain route as an ``App``."""

    def __init__(self, route: Route, host_policy: HostPolicy) -> None:
        self.route = route
        self.host_policy = host_policy
        self._allow = ((b"allow", ", ".join(sorted(route.methods)).encode()),)
        self._is_async = inspect.iscoroutinefunction(route.handler)

    def __call__(self, request: Request, responder: Responder) -> Coroutine[Any, Any, None] | None:
        route = self.route
        method = request.method.decode("latin-1")
        if method not in route.methods:
            _plain(
                responder,
                405,
                f"Method not allowed: {route.path} takes {', '.join(sorted(route.methods))}",
                self._allow,
            )
            return None
        if route.check_host:
            problem = self.host_policy.check(request.headers.get(b"host"), request.headers.get(b"origin"))
            if problem is not None:
                _plain(responder, *problem)
                return None
        target = request.target.decode("latin-1")
        http_request = HttpRequest(
            method,
            route.path,
            target.partition("?")[2].partition("#")[0],
            HeaderMap(request.headers),
            bytes(request.body),
            request.client,
        )
        if not self._is_async and route.inline:
            try:
                result = route.handler(http_request)
            except Exception:  # boundary: a route's bug answers 500, never a traceback
                logger.exception("route %s failed", route.path)
                _plain(responder, 500, "Internal server error")
                return None
            _answer(responder, result)
            return None
        return self._run(http_request, responder)

    async def _run(self, http_request: HttpRequest, responder: Responder) -> None:
        handler = self.route.handler
        try:
            if self._is_async:
                result = await handler(http_request)  # type: ignore[misc]
            else:
                result = await asyncio.get_running_loop().run_in_executor(None, handler, http_request)
        except Exception:  # boundary: a route's bug answers 500, never a traceback
            logger.exception("route %s failed", self.route.path)
            _plain(responder, 500, "Internal server error")
            return
        _answer(responder, result)


def _answer(responder: Responder, result: Any) -> None:
    """A route's return value as an HTTP response."""
    if isinstance(result, Response):
        body = result.body.encode() if isinstance(result.body, str) else bytes(result.body)
        headers: list[tuple[bytes, bytes]] = []
        if result.content_type is not None:
            headers.append((b"content-type", result.content_type.encode("latin-1")))
        elif body:
            headers.append((b"content-type", _TEXT if isinstance(result.body, str) else _OCTETS))
        headers.extend(
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in result.headers.items()
        )
        responder.respond(result.status, headers, body)
    elif result is None:
        responder.respond(204, (), b"")
    elif isinstance(result, str):
        responder.respond(200, ((b"content-type", _TEXT),), result.encode())
    elif isinstance(result, (bytes, bytearray, memoryview)):
        responder.respond(200, ((b"content-type", _OCTETS),), bytes(result))
    else:
        try:
            body = orjson.dumps(result)
        except TypeError:
            logger.error("a route returned %s, which is not JSON", type(result).__name__)
            _plain(responder, 500, "Internal server error")
            return
        responder.respond(200, ((b"content-type", _JSON),), body)


class HttpRouter:
    """Requests by path, for every path but the MCP endpoint's: the endpoint is the application
    the network adapter calls (the hot path costs one comparison), and hands the rest here."""

    def __init__(self, endpoint_path: bytes, paths: Mapping[bytes, App]) -> None:
        self._others = dict(paths)
        self._not_found = b"Not found: the MCP endpoint is " + endpoint_path + b"\n"

    def __call__(self, request: Request, responder: Responder) -> Coroutine[Any, Any, None] | None:
        app = self._others.get(request.path)
        if app is None:
            responder.respond(404, ((b"content-type", _TEXT),), self._not_found)
            return None
        return app(request, responder)
