"""Every operator setting in one table: a CLI flag and an ``MCP_FAST_*`` env var each.

Precedence: command line, then environment, then the default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _bool(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _session_mode(value: str) -> str:
    mode = value.strip().lower()
    if mode not in ("jwt", "memory", "none"):
        raise ValueError("session mode must be jwt, memory or none")
    return mode


def _transport(value: str) -> str:
    name = value.strip().lower()
    if name not in ("http", "stdio"):
        raise ValueError("transport must be http or stdio")
    return name


def _size(value: str) -> int:
    """Bytes, with an optional K/M/G suffix (powers of 1024)."""
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    number = text[:-1] if factor != 1 else text
    return int(float(number) * factor)


def _rate(value: str) -> str:
    """A rate such as 100/60s ('' : none), checked here; the server parses it again."""
    from mcp_fast.registry import parse_rate

    if value.strip():
        parse_rate(value)
    return value.strip()


_rate.__name__ = "rate"  # what argparse names in "invalid rate value"


@dataclass(frozen=True)
class Option:
    name: str  # attribute and flag: --max-body-size, MCP_FAST_MAX_BODY_SIZE
    type: Callable[[str], Any]
    default: Any
    help: str
    # May be given several times (the env var: comma-separated); the value is a list.
    repeat: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "MCP_FAST_" + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option(
        "transport",
        _transport,
        "http",
        "http (Streamable HTTP, and the old HTTP+SSE) or stdio (JSON-RPC lines on stdin/stdout, "
        "one client per process)",
    ),
    Option("host", str, "127.0.0.1", "address to bind"),
    Option("port", int, 8000, "TCP port"),
    Option("path", str, "/mcp", "path of the MCP endpoint"),
    Option("log_level", str, "info", "debug, info, warning or error"),
    Option("max_body_size", _size, 4 << 20, "largest request body, e.g. 4M (413 above)"),
    Option("max_header_size", _size, 16 << 10, "largest request head (431 above)"),
    Option("max_header_count", int, 100, "most header fields in a request (431 above)"),
    Option("max_url_size", _size, 8 << 10, "longest request target (414 above)"),
    Option("header_timeout", float, 10.0, "seconds to receive a request head"),
    Option("body_timeout", float, 30.0, "seconds to receive a request body"),
    Option("keepalive_timeout", float, 75.0, "seconds an idle keep-alive connection stays open"),
    Option("shutdown_timeout", float, 10.0, "seconds to let requests finish on SIGTERM"),
    Option("backlog", int, 2048, "listen backlog"),
    Option(
        "cache_size",
        int,
        10_000,
        "results the in-process cache keeps (tools/resources declared with cache_ttl, lists); 0: off",
    ),
    Option("cache_max_bytes", _size, 64 << 20, "bytes the result cache may hold, e.g. 64M"),
    Option("workers", int, 1, "processes serving the port (pre-forked, SO_REUSEPORT); one core each"),
    Option(
        "allowed_origins",
        _csv,
        [],
        "comma-separated Origins (or host names) allowed; '*' for any; default localhost",
    ),
    Option(
        "allowed_hosts",
        _csv,
        [],
        "comma-separated Host names accepted; default loopback names when bound to loopback, else any",
    ),
    Option(
        "legacy_sse",
        _bool,
        True,
        "also serve the old HTTP+SSE transport of MCP 2024-11-05 (--no-legacy-sse: off)",
    ),
    Option("legacy_sse_path", str, "/sse", "path of the old transport's SSE stream (GET)"),
    Option("legacy_messages_path", str, "/messages", "path the old transport's clients POST messages to"),
    Option("page_size", int, 100, "items per page of tools/resources/prompts lists"),
    Option(
        "health_path",
        str,
        "/health",
        "path of the liveness probe (200 while the server runs); '' turns it off",
    ),
    Option(
        "ready_path",
        str,
        "/ready",
        "path of the readiness probe (503 while draining on SIGTERM); '' turns it off",
    ),
    Option(
        "session_mode",
        _session_mode,
        "jwt",
        "jwt (signed stateless tokens: any instance serves any session), memory (in-process table), "
        "or none (issue no session)",
    ),
    Option("stateless", _bool, False, "issue no session at all (same as --session-mode none)"),
    Option(
        "session_secret",
        _csv,
        [],
        "comma-separated HS256 secrets: the first signs, all verify (rotation); "
        "default: a random one per process (sessions then work with one process only)",
    ),
    Option("session_algorithm", str, "HS256", "HS256, or RS256/ES256 with --session-private-key"),
    Option("session_private_key", str, "", "PEM file that signs session tokens (RS256/ES256)"),
    Option("session_public_keys", _csv, [], "comma-separated PEM files that verify session tokens"),
    Option("session_ttl", float, 86400.0, "seconds a session token stays valid"),
    Option(
        "fleet_dir",
        str,
        "",
        "directory shared by the instances of a fleet (e.g. a shared volume): sessions ended "
        "on one are refused by all, cancellations reach the instance running the request, answers "
        "to server-to-client requests reach the instance that asked; default: none (--workers "
        "share a private one)",
    ),
    Option("fleet_poll", float, 0.1, "seconds between looks at --fleet-dir for what other instances wrote"),
    Option("sse_keepalive", float, 15.0, "seconds between keep-alive comments on an idle SSE stream"),
    Option("write_timeout", float, 30.0, "seconds a stream may wait for a client that stopped reading"),
    Option(
        "max_stream_buffer",
        _size,
        1 << 20,
        "bytes of a stream waiting for a slow client before it is dropped",
    ),
    Option("http2", _bool, True, "serve HTTP/2 with prior knowledge (h2c) beside HTTP/1.1 on the port"),
    Option(
        "h2_max_concurrent_streams",
        int,
        100,
        "streams one HTTP/2 connection may have open at once (more are refused)",
    ),
    # -- security
    Option(
        "public_url",
        str,
        "",
        "the URL clients use for the MCP endpoint, e.g. https://mcp.example.com/mcp: the canonical "
        "resource URL of authorization (token audience, RFC 9728 metadata)",
    ),
    Option(
        "auth_jwks",
        str,
        "",
        "a JWKS file or URL whose keys verify bearer JWTs; turns authorization on (a URL is "
        "fetched again on an unknown kid, at most once a minute)",
    ),
    Option("auth_issuer", str, "", "the iss a token must carry (the authorization server's issuer)"),
    Option("auth_audience", str, "", "the aud a token must carry; default: --public-url"),
    Option("auth_algorithms", _csv, ["RS256", "ES256"], "comma-separated JWT signing algorithms accepted"),
    Option(
        "auth_server",
        str,
        [],
        "an authorization server's issuer URL for the RFC 9728 metadata (repeatable)",
        repeat=True,
    ),
    Option(
        "rate_limit",
        _rate,
        "",
        "requests per caller (principal, else session, else address), e.g. 100/60s; '' : none",
    ),
    Option(
        "idempotency_ttl",
        float,
        600.0,
        "seconds a tools/call result is kept for retries with the same Idempotency-Key; 0: off",
    ),
    Option(
        "cors_origins",
        _csv,
        [],
        "comma-separated origins browser clients may call from (CORS), or '*'; default: none",
    ),
    Option(
        "forwarded_allow_ips",
        _csv,
        [],
        "comma-separated proxy addresses/networks (or '*') whose X-Forwarded-For / X-Real-IP "
        "name the client; default: none",
    ),
    # -- observability
    Option("metrics", _bool, True, "serve Prometheus metrics at --metrics-path"),
    Option("metrics_path", str, "/metrics", "path of the Prometheus metrics"),
    Option(
        "tracing",
        _bool,
        True,
        "an OpenTelemetry server span per request when opentelemetry-api is installed and a "
        "tracer provider is configured",
    ),
    Option("access_log", str, "", "file (or - for stdout) for one JSON line per HTTP request"),
    Option("audit_log", str, "", "file (or - for stdout) for one JSON line per tools/call"),
    Option("audit_arguments", _bool, False, "write the raw tool arguments into the audit log too"),
)


@dataclass
class Config:
    app: str | None
    transport: str
    host: str
    port: int
    path: str
    log_level: str
    max_body_size: int
    max_header_size: int
    max_header_count: int
    max_url_size: int
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    shutdown_timeout: float
    backlog: int
    cache_size: int
    cache_max_bytes: int
    workers: int
    allowed_origins: list[str]
    allowed_hosts: list[str]
    legacy_sse: bool
    legacy_sse_path: str
    legacy_messages_path: str
    page_size: int
    health_path: str
    ready_path: str
    session_mode: str
    stateless: bool
    session_secret: list[str]
    session_algorithm: str
    session_private_key: str
    session_public_keys: list[str]
    session_ttl: float
    fleet_dir: str
    fleet_poll: float
    sse_keepalive: float
    write_timeout: float
    max_stream_buffer: int
    http2: bool
    h2_max_concurrent_streams: int
    # -- security
    public_url: str
    auth_jwks: str
    auth_issuer: str
    auth_audience: str
    auth_algorithms: list[str]
    auth_server: list[str]
    rate_limit: str
    idempotency_ttl: float
    cors_origins: list[str]
    forwarded_allow_ips: list[str]
    # -- observability
    metrics: bool
    metrics_path: str
    tracing: bool
    access_log: str
    audit_log: str
    audit_arguments: bool

    @property
    def effective_session_mode(self) -> str:
        return "none" if self.stateless else self.session_mode


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-fast",
        description=(
            "Serve an MCP server over Streamable HTTP (and the old HTTP+SSE transport) or stdio."
            " Every flag also reads MCP_FAST_<FLAG> from the environment."
        ),
    )
    parser.add_argument(
        "app",
        nargs="?",
        default=environ.get("MCP_FAST_APP"),
        help="module:attribute of an MCPServer (MCP_FAST_APP); default: the built-in demo app",
    )
    for option in OPTIONS:
        raw = environ.get(option.env)
        try:
            if option.repeat:
                default = _csv(raw) if raw is not None else list(option.default)
            else:
                default = option.type(raw) if raw is not None else option.default
        except ValueError:
            parser.error(f"{option.env}={raw!r} is not a valid value ({option.help})")
        if option.repeat:
            # Each --flag adds one value; given at all, the flags replace the env var's list.
            parser.add_argument(
                option.flag,
                dest=option.name,
                action="append",
                type=option.type,
                default=None,
                help=f"{option.help} [{option.env}, comma-separated]",
            )
            parser.set_defaults(**{"_default_" + option.name: default})
            continue
        if option.type is _bool:
            # --flag and --no-flag, so a setting that defaults to on can be turned off.
            parser.add_argument(
                option.flag,
                dest=option.name,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=f"{option.help} [{option.env}, default {'on' if option.default else 'off'}]",
            )
            continue
        parser.add_argument(
            option.flag,
            dest=option.name,
            type=option.type,
            default=default,
            help=f"{option.help} [{option.env}, default {option.default!r}]",
        )
    return parser


def load_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    namespace = build_parser(env).parse_args(argv)
    values = vars(namespace)
    for option in OPTIONS:
        if option.repeat:
            fallback = values.pop("_default_" + option.name)
            if values[option.name] is None:
                values[option.name] = fallback
    return Config(**values)
