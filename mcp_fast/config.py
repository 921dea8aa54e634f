"""Every operator setting in one table: a CLI flag and an ``MCP_FAST_*`` env var each.

Precedence: command line, then environment, then the default. Every value is read and checked
when the process starts: a bad one stops it (exit code 2) with a message that names the flag (and
the environment variable, when the value came from there), the value, and what is allowed.

Adding a setting: one ``Option`` row in ``OPTIONS`` (its ``group`` decides where ``--help`` and
the README list it) and one field in ``Config``. Adding a group: one ``Group`` row in ``GROUPS``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NoReturn

from mcp_fast import __version__
from mcp_fast.fleet.redis_fleet import check_url
from mcp_fast.protocol.versions import SUPPORTED_VERSIONS


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it, its value and what is allowed."""


# -- kinds of values ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """How one kind of value is read from text, what is allowed, and how a default is shown.

    ``read`` raises ValueError for text it does not take; the message then says ``allowed``
    (never the reader's own words, which would name Python internals)."""

    allowed: str  # completes "must be ...", e.g. "an integer from 0 to 65535"
    read: Callable[[str], Any]
    show: Callable[[Any], str] = str
    metavar: str = "VALUE"


def integer(low: int, high: int | None = None, metavar: str = "N") -> Kind:
    """An integer in [low, high] (no upper bound when ``high`` is None)."""

    def read(text: str) -> int:
        value = int(text.strip(), 10)
        if value < low or (high is not None and value > high):
            raise ValueError(text)
        return value

    allowed = f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"
    return Kind(allowed, read, metavar=metavar)


_SECONDS = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?", re.IGNORECASE)
_SECOND_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def read_seconds(text: str) -> float:
    """A positive duration: seconds (``10``, ``2.5``) or with a unit (``500ms``, ``75s``, ``2m``,
    ``1h``)."""
    match = _SECONDS.fullmatch(text.strip())
    if match is None:
        raise ValueError(text)
    value = float(match[1]) * _SECOND_UNITS[(match[2] or "s").lower()]
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(text)
    return value


def show_seconds(value: float) -> str:
    if 0 < value < 1:
        return f"{value * 1000:g}ms"
    if value >= 3600 and value % 3600 == 0:
        return f"{value / 3600:g}h"
    if value >= 600 and value % 60 == 0:
        return f"{value / 60:g}m"
    return f"{value:g}s"


SECONDS = Kind("a positive duration, e.g. 10, 2.5, 500ms, 75s, 2m, 1h", read_seconds, show_seconds, "SECONDS")

_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([KMG])?(?:I?B)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def size(low: int) -> Kind:
    """Bytes, with an optional K/M/G suffix (powers of 1024), at least ``low``."""

    def read(text: str) -> int:
        match = _SIZE.fullmatch(text.strip())
        if match is None:
            raise ValueError(text)
        value = int(float(match[1]) * _SIZE_UNITS[(match[2] or "").upper()])
        if value < low:
            raise ValueError(text)
        return value

    least = f" of at least {show_size(low)}" if low > 1 else ""
    return Kind(f"a size in bytes{least}, e.g. 65536, 512K, 4M, 1G", read, show_size, "SIZE")


def show_size(value: int) -> str:
    for suffix, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= factor and value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)


def choice(*names: str, case_sensitive: bool = False) -> Kind:
    """One of ``names`` (read case-insensitively unless told otherwise)."""
    by_key = {name if case_sensitive else name.lower(): name for name in names}

    def read(text: str) -> str:
        key = text.strip() if case_sensitive else text.strip().lower()
        if key not in by_key:
            raise ValueError(text)
        return by_key[key]

    return Kind("one of " + ", ".join(names), read, metavar="{" + ",".join(names) + "}")


def read_bool(text: str) -> bool:
    key = text.strip().lower()
    if key in ("1", "true", "yes", "on"):
        return True
    if key in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(text)


BOOLEAN = Kind("one of 1/0, true/false, yes/no, on/off", read_bool, lambda on: "on" if on else "off")


def read_csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def names(metavar: str) -> Kind:
    """A comma-separated list (empty items dropped)."""
    return Kind("a comma-separated list", read_csv, ",".join, metavar)


def read_text(text: str) -> str:
    return text.strip()


def text(metavar: str) -> Kind:
    return Kind("text", read_text, str, metavar)


TEXT = text("TEXT")


def read_url_path(text: str) -> str:
    path = text.strip()
    if not path.startswith("/") or any(c in path for c in "?# \t") or not path.isascii():
        raise ValueError(text)
    return path


URL_PATH = Kind(
    "a URL path that starts with / (no query, fragment or spaces), e.g. /mcp", read_url_path, metavar="PATH"
)


def read_optional_url_path(text: str) -> str:
    """A URL path as read_url_path takes it, or the empty string (the feature is off)."""
    return "" if text.strip() == "" else read_url_path(text)


OPTIONAL_URL_PATH = Kind(
    "a URL path that starts with /, or '' to turn it off", read_optional_url_path, metavar="PATH"
)


def read_redis_url(text: str) -> str:
    """A redis:// or rediss:// URL naming a host (or '' : no Redis)."""
    url = text.strip()
    if url and check_url(url) is not None:
        raise ValueError(text)
    return url


REDIS_URL = Kind(
    "a redis:// or rediss:// (TLS) URL that names a host, e.g. redis://redis.internal:6379/0",
    read_redis_url,
    metavar="URL",
)

# Settings from before the kinds existed pass a plain reader; these are the ones it may be.
_KIND_OF_READER: dict[Callable[[str], Any], Kind] = {
    str: TEXT,
    int: integer(0),
    float: SECONDS,
    read_bool: BOOLEAN,
    read_csv: names("LIST"),
}


# -- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """A heading of ``--help`` (and of the README's table)."""

    key: str
    title: str
    description: str


GROUPS: tuple[Group, ...] = (
    Group("server", "server", "what to serve, where, and with how many processes"),
    Group("http", "HTTP limits", "sizes and timeouts of every connection (HTTP/1.1 and HTTP/2)"),
    Group("sessions", "sessions", "how MCP sessions are issued and checked"),
    Group("transports", "transports", "the old HTTP+SSE transport, HTTP/2, SSE streams"),
    Group("tls", "TLS", "certificates for HTTPS, and HTTP/2 by ALPN over it"),
    Group("fleet", "fleet", "what the instances of a fleet share"),
    Group(
        "security",
        "security",
        "who may connect and how often: DNS rebinding and browser protection, authorization, rate "
        "limits, idempotency keys, CORS, proxies",
    ),
    Group("observability", "observability", "logs, probes, metrics and tracing"),
)


def read_rate(text: str) -> str:
    """A rate such as 100/60s, or '' (none); checked here, the server parses it again."""
    from mcp_fast.registry import parse_rate

    if text.strip():
        parse_rate(text)
    return text.strip()


RATE = Kind("a rate COUNT/WINDOW, e.g. 100/60s, 10/m, 1000/h, or '' for none", read_rate, metavar="RATE")


def read_seconds_or_zero(text: str) -> float:
    """A duration as read_seconds takes it, or 0 (the feature is off)."""
    return 0.0 if text.strip() in ("0", "0s", "0.0") else read_seconds(text)


def read_cert_reqs(text: str) -> str:
    """none/optional/required, or uvicorn's 0/1/2 (ssl.CERT_NONE/CERT_OPTIONAL/CERT_REQUIRED)."""
    key = text.strip().lower()
    key = {"0": "none", "1": "optional", "2": "required"}.get(key, key)
    if key not in ("none", "optional", "required"):
        raise ValueError(text)
    return key


CERT_REQS = Kind(
    "one of none, optional, required (or 0, 1, 2)", read_cert_reqs, metavar="{none,optional,required}"
)

SECONDS_OR_OFF = Kind(
    "a duration, e.g. 600, 10m, 1h, or 0 to turn it off",
    read_seconds_or_zero,
    lambda value: "0 (off)" if value == 0 else show_seconds(value),
    "SECONDS",
)


@dataclass(frozen=True)
class Option:
    name: str  # attribute and flag: --max-body-size, MCP_FAST_MAX_BODY_SIZE
    type: Kind | Callable[[str], Any]  # a Kind, or a plain reader (str, int, float, ...)
    default: Any
    help: str
    group: str  # a GROUPS key
    # How --help and the README show the default, where the value alone does not say it.
    default_text: str | None = None
    # The environment variable, where it is not MCP_FAST_ + the name (--redis: MCP_FAST_REDIS_URL).
    env_name: str | None = None
    # May be given several times (the env var: comma-separated); the value is a list.
    repeat: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.type, Kind) and self.type not in _KIND_OF_READER:
            raise TypeError(
                f"option {self.name}: its type must be a Kind, or one of str, int, float, read_bool, read_csv"
            )

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return self.env_name or "MCP_FAST_" + self.name.upper()

    @property
    def kind(self) -> Kind:
        return self.type if isinstance(self.type, Kind) else _KIND_OF_READER[self.type]

    @property
    def is_switch(self) -> bool:
        """An on/off setting: ``--flag`` and ``--no-flag``."""
        return self.kind is BOOLEAN

    @property
    def shown_default(self) -> str:
        return self.default_text if self.default_text is not None else self.kind.show(self.default)


PORT = integer(0, 65535, "PORT")

OPTIONS: tuple[Option, ...] = (
    # server
    Option(
        "transport",
        choice("http", "stdio"),
        "http",
        "http (Streamable HTTP, and the old HTTP+SSE) or stdio (JSON-RPC lines on stdin/stdout, "
        "one client per process; the HTTP settings are ignored)",
        group="server",
    ),
    Option(
        "host",
        text("ADDRESS"),
        "127.0.0.1",
        "address to bind (0.0.0.0: every IPv4 address, :: every IPv6 one)",
        group="server",
    ),
    Option("port", PORT, 8000, "TCP port (0: one the system picks)", group="server"),
    Option(
        "uds",
        text("SOCKET"),
        "",
        "listen on this Unix socket instead of --host/--port (e.g. for nginx on the same host); "
        "the socket is made group-accessible (mode 0660)",
        group="server",
        default_text="none",
    ),
    Option("path", URL_PATH, "/mcp", "path of the MCP endpoint", group="server"),
    Option(
        "workers",
        integer(1, 512),
        1,
        "processes serving the port (pre-forked, SO_REUSEPORT); one core each",
        group="server",
    ),
    Option("backlog", integer(1, 65535), 2048, "listen backlog", group="server"),
    Option(
        "shutdown_timeout",
        SECONDS,
        10.0,
        "time requests in flight get to finish on SIGTERM (stdio: also when stdin ends)",
        group="server",
    ),
    Option(
        "offload_after",
        SECONDS,
        0.001,
        "how long a plain def handler may run on the event loop: one seen to take longer (twice "
        "within 64 calls) runs in the thread pool from then on",
        group="server",
    ),
    Option(
        "handler_threads",
        integer(1, 1024),
        32,
        "threads in the pool that runs plain def handlers seen to be slow (and offload=True ones, "
        "and def routes): how many such calls run at once per worker; more wait their turn",
        group="server",
    ),
    Option(
        "page_size",
        integer(1, 10_000),
        100,
        "items per page of tools/resources/prompts lists",
        group="server",
    ),
    Option(
        "cache_size",
        integer(0),
        10_000,
        "results the in-process cache keeps (tools/resources declared with cache_ttl, lists); 0: off",
        group="server",
    ),
    Option("cache_max_bytes", size(1), 64 << 20, "bytes the result cache may hold", group="server"),
    # HTTP limits
    Option("max_body_size", size(1), 4 << 20, "largest request body (413 above)", group="http"),
    Option("max_header_size", size(1 << 10), 16 << 10, "largest request head (431 above)", group="http"),
    Option(
        "max_header_count",
        integer(1, 10_000),
        100,
        "most header fields in a request (431 above)",
        group="http",
    ),
    Option("max_url_size", size(64), 8 << 10, "longest request target (414 above)", group="http"),
    Option("header_timeout", SECONDS, 10.0, "time to receive a request head (408 after)", group="http"),
    Option("body_timeout", SECONDS, 30.0, "time to receive a request body (408 after)", group="http"),
    Option("keepalive_timeout", SECONDS, 75.0, "time an idle keep-alive connection stays open", group="http"),
    Option(
        "write_timeout",
        SECONDS,
        30.0,
        "time an answer or stream may wait for a client that stopped reading",
        group="http",
    ),
    Option(
        "max_stream_buffer",
        size(1 << 10),
        1 << 20,
        "bytes of a stream waiting for a slow client before it is dropped",
        group="http",
    ),
    Option(
        "h2_max_concurrent_streams",
        integer(1, 2**31 - 1),
        100,
        "streams one HTTP/2 connection may have open at once (more are refused)",
        group="http",
    ),
    Option(
        "h2_max_connection_buffer",
        size(1 << 16),
        16 << 20,
        "bytes one HTTP/2 connection may hold (partial request bodies and answers waiting for the "
        "client's windows); past it answers are reset, new streams refused and the connection closed",
        group="http",
    ),
    # sessions
    Option(
        "session_mode",
        choice("jwt", "memory", "none"),
        "jwt",
        "jwt (signed stateless tokens: any instance serves any session), memory (in-process table), "
        "or none (issue no session)",
        group="sessions",
    ),
    Option(
        "stateless", BOOLEAN, False, "issue no session at all (same as --session-mode none)", group="sessions"
    ),
    Option(
        "session_secret",
        names("SECRETS"),
        [],
        "comma-separated HS256 secrets (32 bytes or more each): the first signs, all verify (rotation); "
        "they also sign 2026-07-28 input-required states",
        group="sessions",
        default_text="a random one per process (sessions then work with that process only)",
    ),
    Option(
        "session_algorithm",
        choice("HS256", "RS256", "ES256", case_sensitive=False),
        "HS256",
        "HS256 (shared secrets), or RS256/ES256 with --session-private-key and --session-public-keys",
        group="sessions",
    ),
    Option(
        "session_private_key",
        text("FILE"),
        "",
        "PEM file that signs session tokens (RS256/ES256)",
        group="sessions",
        default_text="none",
    ),
    Option(
        "session_public_keys",
        names("FILES"),
        [],
        "comma-separated PEM files that verify session tokens (RS256/ES256)",
        group="sessions",
        default_text="none",
    ),
    Option("session_ttl", SECONDS, 86400.0, "how long a session token stays valid", group="sessions"),
    # transports
    Option(
        "legacy_sse",
        BOOLEAN,
        True,
        "also serve the old HTTP+SSE transport of MCP 2024-11-05 (--no-legacy-sse: off)",
        group="transports",
    ),
    Option(
        "legacy_sse_path",
        URL_PATH,
        "/sse",
        "path of the old transport's SSE stream (GET)",
        group="transports",
    ),
    Option(
        "legacy_messages_path",
        URL_PATH,
        "/messages",
        "path the old transport's clients POST messages to",
        group="transports",
    ),
    Option(
        "http2",
        BOOLEAN,
        True,
        "serve HTTP/2 beside HTTP/1.1 on the port: h2c with prior knowledge, or chosen by ALPN over "
        "TLS (--certfile)",
        group="transports",
    ),
    Option(
        "sse_keepalive",
        SECONDS,
        15.0,
        "time between keep-alive comments on an idle SSE stream",
        group="transports",
    ),
    # TLS
    Option(
        "certfile",
        text("FILE"),
        "",
        "PEM certificate chain: serve HTTPS on the port (HTTP/2 and HTTP/1.1 by ALPN); SIGHUP "
        "reloads it and the key for new connections",
        group="tls",
        default_text="none (cleartext)",
    ),
    Option(
        "keyfile",
        text("FILE"),
        "",
        "PEM private key of --certfile",
        group="tls",
        default_text="in the --certfile file",
    ),
    Option(
        "keyfile_password",
        text("PASSWORD"),
        "",
        "password of an encrypted --keyfile",
        group="tls",
        default_text="none",
    ),
    Option(
        "ssl_ca_certs",
        text("FILE"),
        "",
        "PEM CA certificates that verify client certificates (mutual TLS)",
        group="tls",
        default_text="none",
    ),
    Option(
        "ssl_cert_reqs",
        CERT_REQS,
        "none",
        "client certificates: none, optional or required (verified with --ssl-ca-certs; 0/1/2 as "
        "uvicorn spells them)",
        group="tls",
    ),
    # fleet
    Option(
        "redis",
        REDIS_URL,
        "",
        "Redis that the instances of a fleet share (instances on several machines): ended sessions, "
        "cancellations, answers to server-to-client requests, resumable streams, tasks, "
        "list-changed and resource-updated notifications (needs the redis extra)",
        group="fleet",
        default_text="none (one process; --workers share a private --fleet-dir)",
        env_name="MCP_FAST_REDIS_URL",
    ),
    Option(
        "redis_prefix",
        text("PREFIX"),
        "mcp_fast:",
        "prefix of every Redis key and channel of this server (servers that share one Redis use "
        "different prefixes)",
        group="fleet",
    ),
    Option(
        "redis_timeout",
        SECONDS,
        0.5,
        "the longest one Redis operation may take: past it (or at once while Redis is known to be "
        "down) a request that needs Redis is answered 503",
        group="fleet",
    ),
    Option(
        "event_store_max_events",
        integer(1, 1_000_000),
        256,
        "events kept per resumable SSE stream for clients that reconnect with Last-Event-ID "
        "(in memory, and in Redis with --redis)",
        group="fleet",
    ),
    Option(
        "event_store_max_age",
        SECONDS,
        3600.0,
        "how long Redis keeps a resumable stream after its last event (--redis)",
        group="fleet",
    ),
    Option(
        "fleet_dir",
        text("DIR"),
        "",
        "directory the processes of one machine share (e.g. several mcp-fast services on one host; "
        "--workers make a private one): sessions ended on one are refused by all, cancellations "
        "reach the process running the request, answers to server-to-client requests reach the "
        "process that asked. Across machines use --redis",
        group="fleet",
        default_text="none (--workers share a private one)",
    ),
    Option(
        "fleet_poll",
        SECONDS,
        0.1,
        "time between looks at --fleet-dir for what other processes wrote",
        group="fleet",
    ),
    # security
    Option(
        "allowed_origins",
        names("ORIGINS"),
        [],
        "comma-separated Origins (or host names) browsers may send; '*' for any",
        group="security",
        default_text="localhost names",
    ),
    Option(
        "allowed_hosts",
        names("HOSTS"),
        [],
        "comma-separated Host names accepted (421 otherwise)",
        group="security",
        default_text="loopback names when bound to loopback, else any",
    ),
    # observability
    Option(
        "log_level",
        choice("debug", "info", "warning", "error"),
        "info",
        "the least important log messages written to stderr",
        group="observability",
    ),
    Option(
        "health_path",
        OPTIONAL_URL_PATH,
        "/health",
        "path of the liveness probe (200 while the process serves); '' turns it off",
        group="observability",
    ),
    Option(
        "ready_path",
        OPTIONAL_URL_PATH,
        "/ready",
        "path of the readiness probe (503 while draining on SIGTERM, or while --redis is unreachable); "
        "'' turns it off",
        group="observability",
    ),
    # security: authorization, rate limits, idempotency, CORS, proxies
    Option(
        "public_url",
        text("URL"),
        "",
        "the URL clients use for the MCP endpoint, e.g. https://mcp.example.com/mcp: the canonical "
        "resource URL of authorization (token audience, RFC 9728 metadata); required with it",
        group="security",
        default_text="none",
    ),
    Option(
        "auth_jwks",
        text("JWKS"),
        "",
        "a JWKS file or URL whose keys verify bearer JWTs; turns authorization on (a URL is "
        "fetched again on an unknown kid, at most once a minute)",
        group="security",
        default_text="none",
    ),
    Option(
        "auth_issuer",
        text("URL"),
        "",
        "the iss a token must carry (the authorization server's issuer)",
        group="security",
        default_text="none (not checked)",
    ),
    Option(
        "auth_audience",
        text("URL"),
        "",
        "the aud a token must carry (RFC 8707)",
        group="security",
        default_text="--public-url",
    ),
    Option(
        "auth_algorithms",
        names("ALGORITHMS"),
        ["RS256", "ES256"],
        "comma-separated JWT signing algorithms accepted (asymmetric only)",
        group="security",
    ),
    Option(
        "auth_server",
        text("URL"),
        [],
        "an authorization server's issuer URL, listed in the RFC 9728 metadata (repeatable; the "
        "variable: comma-separated)",
        group="security",
        default_text="none",
        repeat=True,
    ),
    Option(
        "rate_limit",
        RATE,
        "",
        "requests per caller (principal, else session, else address), e.g. 100/60s; 429 above "
        "(with --redis, across the fleet)",
        group="security",
        default_text="none",
    ),
    Option(
        "idempotency_ttl",
        SECONDS_OR_OFF,
        600.0,
        "how long a tools/call result is kept for retries with the same Idempotency-Key; 0 turns keys off",
        group="security",
    ),
    Option(
        "cors_origins",
        names("ORIGINS"),
        [],
        "comma-separated origins browser clients may call from (CORS), or '*'",
        group="security",
        default_text="none",
    ),
    Option(
        "forwarded_allow_ips",
        names("ADDRESSES"),
        [],
        "proxies (IPs, CIDR networks, '*') whose X-Forwarded-For / X-Real-IP name the client",
        group="security",
        default_text="none",
    ),
    # observability: metrics, tracing, access and audit logs
    Option("metrics", BOOLEAN, True, "Prometheus metrics at --metrics-path", group="observability"),
    Option(
        "metrics_path",
        OPTIONAL_URL_PATH,
        "/metrics",
        "path of the Prometheus metrics; '' turns the route off",
        group="observability",
    ),
    Option(
        "tracing",
        BOOLEAN,
        True,
        "an OpenTelemetry server span per request, when opentelemetry-api is installed and a "
        "tracer provider is configured",
        group="observability",
    ),
    Option(
        "access_log",
        text("PATH"),
        "",
        "file, or - for stdout: a JSON line per HTTP request",
        group="observability",
        default_text="none",
    ),
    Option(
        "audit_log",
        text("PATH"),
        "",
        "file, or - for stdout: a JSON line per tools/call",
        group="observability",
        default_text="none",
    ),
    Option(
        "audit_arguments",
        BOOLEAN,
        False,
        "also write the raw tool arguments into the audit log",
        group="observability",
    ),
)


@dataclass
class Config:
    app: str | None
    transport: str
    host: str
    port: int
    uds: str
    path: str
    workers: int
    backlog: int
    shutdown_timeout: float
    offload_after: float
    handler_threads: int
    page_size: int
    cache_size: int
    cache_max_bytes: int
    max_body_size: int
    max_header_size: int
    max_header_count: int
    max_url_size: int
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    write_timeout: float
    max_stream_buffer: int
    h2_max_concurrent_streams: int
    h2_max_connection_buffer: int
    session_mode: str
    stateless: bool
    session_secret: list[str]
    session_algorithm: str
    session_private_key: str
    session_public_keys: list[str]
    session_ttl: float
    legacy_sse: bool
    legacy_sse_path: str
    legacy_messages_path: str
    http2: bool
    sse_keepalive: float
    # -- TLS
    certfile: str
    keyfile: str
    keyfile_password: str
    ssl_ca_certs: str
    ssl_cert_reqs: str
    # -- fleet
    redis: str
    redis_prefix: str
    redis_timeout: float
    event_store_max_events: int
    event_store_max_age: float
    fleet_dir: str
    fleet_poll: float
    allowed_origins: list[str]
    allowed_hosts: list[str]
    log_level: str
    health_path: str
    ready_path: str
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


CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Config))


# -- reading and checking -------------------------------------------------------------------------


def read_option(option: Option, raw: str, source: str) -> Any:
    """``raw`` read as ``option``'s kind; a ConfigError naming ``source`` when it does not fit."""
    try:
        return option.kind.read(raw)
    except ValueError:
        raise ConfigError(f"{source}: must be {option.kind.allowed}") from None


def cli_source(option: Option, raw: str) -> str:
    return f"{option.flag} {_shown(raw)}"


def env_source(option: Option, raw: str) -> str:
    return f"{option.env}={_shown(raw)} (sets {option.flag})"


def _shown(raw: str) -> str:
    """The value as given; quoted where its edges or emptiness would not show."""
    plain = raw and raw.isprintable() and not any(c.isspace() for c in raw) and "'" not in raw
    return raw if plain else repr(raw)


def check_config(config: Config) -> None:
    """Settings that are each fine but do not go together."""
    if config.stateless and config.session_mode == "memory":
        raise ConfigError(
            "--stateless and --session-mode memory disagree: choose one (--stateless is --session-mode none)"
        )
    asymmetric = config.session_algorithm != "HS256"
    if asymmetric and not (config.session_private_key and config.session_public_keys):
        raise ConfigError(
            f"--session-algorithm {config.session_algorithm} needs --session-private-key (a PEM file that "
            "signs) and --session-public-keys (PEM files that verify)"
        )
    if not asymmetric and (config.session_private_key or config.session_public_keys):
        raise ConfigError(
            "--session-private-key and --session-public-keys are for --session-algorithm RS256 or ES256 "
            "(HS256 signs with --session-secret)"
        )
    if config.legacy_sse:
        paths = {"--path": config.path, "--legacy-sse-path": config.legacy_sse_path}
        paths["--legacy-messages-path"] = config.legacy_messages_path
        if len(set(paths.values())) < len(paths):
            shown = ", ".join(f"{flag} {path}" for flag, path in paths.items())
            raise ConfigError(
                f"the old HTTP+SSE transport's paths must differ from --path and each other ({shown})"
            )
    if config.redis and config.fleet_dir:
        raise ConfigError(
            "--redis and --fleet-dir are two ways to share a fleet's state: choose one (--redis "
            "works across machines)"
        )
    if not config.certfile:
        # (The password itself is never shown.)
        given = [
            f"{flag} {_shown(value)}" if flag != "--keyfile-password" else flag
            for flag, value in (
                ("--keyfile", config.keyfile),
                ("--keyfile-password", config.keyfile_password),
                ("--ssl-ca-certs", config.ssl_ca_certs),
            )
            if value
        ]
        if config.ssl_cert_reqs != "none":
            given.append(f"--ssl-cert-reqs {config.ssl_cert_reqs}")
        if given:
            raise ConfigError(
                f"{', '.join(given)}: TLS settings, which need --certfile (the server's certificate)"
            )
    elif config.ssl_cert_reqs != "none" and not config.ssl_ca_certs:
        raise ConfigError(
            f"--ssl-cert-reqs {config.ssl_cert_reqs} needs --ssl-ca-certs (the CA that verifies client "
            "certificates)"
        )
    if config.workers > 1 and config.uds:
        raise ConfigError(
            "--uds serves from one process: use --workers 1 (run one service per socket to use more cores)"
        )
    if config.workers > 1 and config.port == 0 and config.transport == "http":
        raise ConfigError(
            "--port 0 with --workers: each worker would listen on a port of its own; name a port"
        )


def version_text() -> str:
    return f"mcp-fast {__version__} (MCP {', '.join(SUPPORTED_VERSIONS)}; Python {platform.python_version()})"


class _Parser(argparse.ArgumentParser):
    """argparse, with one exit code (2) and one message form for every bad setting."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(mcp-fast --help lists every setting)\n")


def _help(option: Option) -> str:
    # argparse %-formats help texts: a literal % must be doubled.
    text = f"{option.help} [{option.env}; default: {option.shown_default}]"
    return text.replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mcp-fast",
        usage="mcp-fast [module:attribute] [options]   (or: python -m mcp_fast ...)",
        description=(
            "Serve an MCP server over Streamable HTTP (and the old HTTP+SSE transport) or stdio."
            " Every setting is also read from the environment variable in brackets; the command line"
            " wins. Sizes take K/M/G (powers of 1024), durations ms/s/m/h (plain numbers are seconds)."
        ),
        allow_abbrev=False,  # a mistyped flag is an error, never another flag
    )
    parser.add_argument(
        "app",
        nargs="?",
        default=None,
        metavar="module:attribute",
        help="an MCPServer, or a function that returns one, e.g. myapp:server (a myapp.py in the "
        "current directory is found) [MCP_FAST_APP; default: the built-in demo app]",
    )
    parser.add_argument("--version", action="version", version=version_text())
    sections = {group.key: parser.add_argument_group(group.title, group.description) for group in GROUPS}
    for option in OPTIONS:
        section = sections[option.group]
        if option.repeat:
            # Each --flag adds one value; given at all, the flags replace the variable's list.
            section.add_argument(
                option.flag,
                dest=option.name,
                action="append",
                default=None,
                metavar=option.kind.metavar,
                help=_help(option),
            )
        elif option.is_switch:
            section.add_argument(
                option.flag,
                dest=option.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=_help(option),
            )
        else:
            section.add_argument(
                option.flag, dest=option.name, default=None, metavar=option.kind.metavar, help=_help(option)
            )
    return parser


def parse_config(argv: Sequence[str] | None, environ: Mapping[str, str]) -> Config:
    """The settings from the command line, then the environment, then the defaults; a
    ConfigError for anything that cannot be used. (argparse exits itself for --help,
    --version, unknown flags and a flag without its value.)"""
    namespace = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {"app": namespace["app"] or environ.get("MCP_FAST_APP") or None}
    for option in OPTIONS:
        given = namespace[option.name]
        if isinstance(given, bool):  # --flag / --no-flag
            values[option.name] = given
        elif option.repeat:
            values[option.name] = _repeated(option, given, environ)
        elif given is not None:
            values[option.name] = read_option(option, given, cli_source(option, given))
        elif option.env in environ:
            raw = environ[option.env]
            values[option.name] = read_option(option, raw, env_source(option, raw))
        else:
            values[option.name] = option.default
    config = Config(**values)
    check_config(config)
    return config


def _repeated(option: Option, given: list[str] | None, environ: Mapping[str, str]) -> list[Any]:
    """A repeatable option's values: each flag's, else the variable's comma-separated items,
    else the default."""
    if given is not None:
        return [read_option(option, raw, cli_source(option, raw)) for raw in given]
    if option.env in environ:
        raw = environ[option.env]
        return [read_option(option, item, env_source(option, raw)) for item in read_csv(raw)]
    return list(option.default)


def load_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """``parse_config``, exiting with code 2 and the message on a setting that cannot be used."""
    env = os.environ if environ is None else environ
    try:
        return parse_config(argv, env)
    except ConfigError as exc:
        build_parser().error(str(exc))
