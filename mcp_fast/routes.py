"""Plain HTTP endpoints next to MCP: ``@server.route("/path", methods=["GET"])``.

A route's handler (``def`` or ``async def``) takes one ``HttpRequest`` and returns ``bytes``
(application/octet-stream), ``str`` (text/plain), a ``dict`` or ``list`` (JSON), ``None`` (204)
or a full ``Response``. The built-in endpoints (health and readiness probes, metrics, OAuth
metadata) are routes too. Routes are served over HTTP/1.1 and HTTP/2 on the MCP port; stdio
has none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs

from mcp_fast.call import HeaderMap

# What a route may answer with, besides a Response.
RouteResult = bytes | str | dict[str, Any] | list[Any] | None
RouteHandler = Callable[["HttpRequest"], "Awaitable[RouteResult | Response] | RouteResult | Response"]

HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP request to a route: the head, the whole body, and who sent it."""

    method: str
    path: str
    query_string: str
    headers: HeaderMap
    body: bytes
    client: tuple[str, int] | None

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string's fields (each may repeat)."""
        return parse_qs(self.query_string, keep_blank_values=True, max_num_fields=100)


@dataclass(frozen=True, slots=True)
class Response:
    """A full answer from a route: status, body, and headers (``content_type`` sets
    Content-Type; the length is added by the server)."""

    status: int = 200
    body: bytes | str = b""
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    methods: frozenset[str]
    handler: RouteHandler
    # The DNS-rebinding check (Host and Origin, as on the MCP endpoint). Probes that load
    # balancers and kubelets call by IP address turn it off.
    check_host: bool = True
    # A plain ``def`` runs in the thread pool unless ``inline`` (then on the loop: keep it brief).
    inline: bool = False


def check_route(path: str, methods: Sequence[str]) -> frozenset[str]:
    """Refuse a route that could never match (raised at registration, naming the problem)."""
    if not path.startswith("/") or any(c in path for c in "?# "):
        raise ValueError(f"route path {path!r} must be a plain absolute path such as /status")
    wanted = frozenset(method.upper() for method in methods)
    unknown = sorted(wanted - HTTP_METHODS)
    if not wanted or unknown:
        raise ValueError(
            f"route methods must be among {', '.join(sorted(HTTP_METHODS))}; got {unknown or 'none'}"
        )
    return wanted
