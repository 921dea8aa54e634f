"""CORS (the Fetch standard's CORS protocol) for browser-based MCP clients: ``--cors-origins``.

A browser page on another origin may call the server only when the server says so:
- a preflight ``OPTIONS`` (it carries ``Origin`` and ``Access-Control-Request-Method``) from an
  allowed origin is answered 204 with ``Access-Control-Allow-Origin``, ``-Allow-Methods``,
  ``-Allow-Headers`` (the MCP headers a client sends, and the ``Mcp-Param-*`` headers of
  2026-07-28 that the preflight asks for: a wildcard would not cover ``Authorization``),
  ``-Max-Age``; from another origin it is 403;
- every other response to an allowed origin carries ``Access-Control-Allow-Origin`` (the
  origin itself, with ``Vary: Origin``) and ``Access-Control-Expose-Headers: Mcp-Session-Id,
  WWW-Authenticate``, so the page can read its session id and an authorization challenge.
Bearer tokens travel in a header, not in cookies: no ``Access-Control-Allow-Credentials``.
The DNS-rebinding Origin check of the endpoint admits the same origins (app.py adds them).
"""

from __future__ import annotations

from typing import Final

Headers = tuple[tuple[bytes, bytes], ...]

ALLOW_METHODS: Final = b"GET, POST, DELETE, OPTIONS"
# What MCP clients send (Streamable HTTP, authorization, resumption, the 2026 headers, retries).
ALLOW_HEADERS: Final = (
    b"content-type",
    b"accept",
    b"authorization",
    b"mcp-protocol-version",
    b"mcp-session-id",
    b"last-event-id",
    b"mcp-method",
    b"mcp-name",
    b"idempotency-key",
    b"traceparent",
    b"tracestate",
)
EXPOSE_HEADERS: Final = b"Mcp-Session-Id, WWW-Authenticate"
MAX_AGE: Final = b"600"
_PARAM_PREFIX: Final = b"mcp-param-"


def _normal(origin: str) -> str:
    return origin.strip().lower().rstrip("/")


class CorsPolicy:
    """Which origins may call, and the headers they get. ``origins``: full origins
    (``https://app.example.com``) or ``*`` for any."""

    def __init__(self, origins: list[str]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(_normal(origin) for origin in origins if origin != "*")
        for origin in self.origins:
            if "://" not in origin:
                raise ValueError(
                    f"--cors-origins {origin!r}: an origin is scheme://host[:port], e.g. https://app.example.com"
                )
        self._responses: dict[bytes, Headers] = {}

    def allows(self, origin: bytes) -> bool:
        return self.any or _normal(origin.decode("latin-1")) in self.origins

    def response_headers(self, origin: bytes) -> Headers:
        """What a response to an allowed origin carries (remembered per origin, bounded)."""
        headers = self._responses.get(origin)
        if headers is None:
            headers = (
                (b"access-control-allow-origin", origin),
                (b"access-control-expose-headers", EXPOSE_HEADERS),
                (b"vary", b"Origin"),
            )
            if len(self._responses) < 256:
                self._responses[origin] = headers
        return headers

    def preflight_headers(self, origin: bytes, requested: bytes | None) -> Headers:
        """The 204's headers: the fixed MCP set, plus the ``Mcp-Param-*`` names asked for."""
        names = list(ALLOW_HEADERS)
        for name in (requested or b"").split(b","):
            name = name.strip().lower()
            if name.startswith(_PARAM_PREFIX) and len(name) <= 128 and name not in names:
                names.append(name)
        return (
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", ALLOW_METHODS),
            (b"access-control-allow-headers", b", ".join(names)),
            (b"access-control-expose-headers", EXPOSE_HEADERS),
            (b"access-control-max-age", MAX_AGE),
            (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        )
