"""Origin and Host validation against DNS rebinding (Streamable HTTP, "Security Warning").

A browser page on evil.example.com whose name was re-pointed at 127.0.0.1 can
reach a local server: its requests carry ``Host: evil.example.com`` and an
``Origin`` of that page. So a server bound to loopback accepts only loopback
host names in Host, and any present Origin must be in the allow-list (403
otherwise, 2025-11-25). A server behind a proxy (bound elsewhere) checks Host
only when the operator lists allowed hosts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def _host_name(authority: str) -> str:
    """``host[:port]`` -> lower-case host; IPv6 literals keep their brackets."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        end = authority.find("]")
        return authority[: end + 1] if end != -1 else authority
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def _origin_host(origin: str) -> str | None:
    scheme, separator, rest = origin.partition("://")
    if not separator or scheme.lower() not in ("http", "https"):
        return None
    return _host_name(rest.split("/", 1)[0])


@dataclass(frozen=True)
class HostPolicy:
    """``allowed_hosts`` empty: any Host. ``allowed_origins`` holds host names or full
    origins; "*" allows any Origin."""

    allowed_hosts: frozenset[str]
    allowed_origins: frozenset[str]

    @classmethod
    def loopback(cls) -> HostPolicy:
        return cls(LOOPBACK_NAMES, LOOPBACK_NAMES)

    @classmethod
    def build(cls, bind_host: str, hosts: Iterable[str], origins: Iterable[str]) -> HostPolicy:
        host_set = frozenset(_host_name(h) for h in hosts)
        origin_set = frozenset(o.strip().lower().rstrip("/") for o in origins)
        if not host_set and _host_name(bind_host) in LOOPBACK_NAMES:
            host_set = LOOPBACK_NAMES
        return cls(host_set, origin_set or LOOPBACK_NAMES)

    def check(self, host: bytes | None, origin: bytes | None) -> tuple[int, str] | None:
        """None when the request may proceed, else (status, reason)."""
        if (
            self.allowed_hosts
            and host is not None
            and _host_name(host.decode("latin-1")) not in self.allowed_hosts
        ):
            return 421, "Misdirected request: this server does not serve that Host"
        if origin is not None and "*" not in self.allowed_origins:
            text = origin.decode("latin-1").strip().lower().rstrip("/")
            if text not in self.allowed_origins and _origin_host(text) not in self.allowed_origins:
                return 403, "Forbidden: Origin not allowed"
        return None
