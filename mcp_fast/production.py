"""The production features of one process, built from the configuration and wired to the
pipeline and the transports: authorization, rate limits, idempotency keys, metrics, audit and
access logs, tracing, CORS and forwarded addresses (the parts live in ``mcp_fast/ops/``; this
module decides which run and hands them to ``app.py``'s builders)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mcp_fast.call import RequestCheck, RequestObserver
from mcp_fast.config import Config
from mcp_fast.net.server import HttpServer
from mcp_fast.ops.auth import (
    AuthSettings,
    BearerGate,
    JwksKeys,
    ResourceMetadata,
    ScopeCheck,
    canonical_resource,
)
from mcp_fast.ops.cors import CorsPolicy
from mcp_fast.ops.forwarded import ForwardedAddresses
from mcp_fast.ops.idempotency import Idempotency
from mcp_fast.ops.logs import AccessLog, AuditLog, DebugRequestLog, JsonLines, debug_requests
from mcp_fast.ops.metrics import LoopLag, Metrics
from mcp_fast.ops.observers import combined
from mcp_fast.ops.ratelimit import RateLimits
from mcp_fast.ops.tracing import Tracing, tracing_available
from mcp_fast.pipeline import Pipeline
from mcp_fast.registry import parse_rate
from mcp_fast.server import MCPServer
from mcp_fast.transport.front import AccessLogFront, CorsFront, ForwardedFront
from mcp_fast.transport.http_sse import HttpSseTransport
from mcp_fast.transport.router import App
from mcp_fast.transport.streamable import StreamableHTTP

logger = logging.getLogger("mcp_fast")

# Signing algorithms a JWKS's public keys can verify (RFC 7518); HS* would need a shared secret.
_ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


@dataclass
class Production:
    """What the production features built for one process (``build_production``): the
    pipeline's checks and observers, the transports' gate, the routes and the HTTP fronts."""

    gate: BearerGate | None = None
    metadata: ResourceMetadata | None = None
    scope_check: ScopeCheck | None = None
    rate_limits: RateLimits | None = None
    idempotency: Idempotency | None = None
    metrics: Metrics | None = None
    lag: LoopLag | None = None  # the event loop's lag, for the metrics: started once serving
    observers: list[RequestObserver] = field(default_factory=list)
    cors: CorsPolicy | None = None
    forwarded: ForwardedAddresses | None = None
    access_log: AccessLog | None = None
    logs: list[JsonLines] = field(default_factory=list)
    http_sse: HttpSseTransport | None = None  # set by build_endpoint (metrics count its streams)

    @property
    def checks(self) -> tuple[RequestCheck, ...]:
        return tuple(check for check in (self.scope_check, self.rate_limits) if check is not None)

    @property
    def observer(self) -> RequestObserver | None:
        return combined(self.observers)

    def close(self) -> None:
        for lines in self.logs:
            lines.close()


def build_auth(server: MCPServer, config: Config) -> tuple[BearerGate, ResourceMetadata] | None:
    """Authorization, when --auth-jwks or MCPServer(token_verifier=...) asks for it; a ValueError
    naming the flag for a configuration that cannot work."""
    if not config.auth_jwks and server.token_verifier is None:
        for flag, value in (
            ("--auth-issuer", config.auth_issuer),
            ("--auth-audience", config.auth_audience),
            ("--auth-server", config.auth_server),
        ):
            if value:
                raise ValueError(f"{flag} needs --auth-jwks (or an MCPServer(token_verifier=...))")
        return None
    if not config.public_url:
        raise ValueError(
            "authorization needs --public-url, the URL clients use for this endpoint "
            "(e.g. https://mcp.example.com/mcp): tokens name it as their audience (RFC 8707)"
        )
    resource = canonical_resource(config.public_url, config.path)
    algorithms = tuple(config.auth_algorithms)
    wrong = sorted(set(algorithms) - _ASYMMETRIC)
    if not algorithms or wrong:
        expected = ", ".join(sorted(_ASYMMETRIC))
        raise ValueError(f"--auth-algorithms {','.join(wrong) or '(none)'}: expected some of {expected}")
    for issuer in config.auth_server:
        if not issuer.startswith(("https://", "http://")):
            raise ValueError(f"--auth-server {issuer!r}: expected the authorization server's issuer URL")
    if not config.auth_server:
        logger.warning("no --auth-server: the RFC 9728 metadata names no authorization server for clients")
    settings = AuthSettings(
        resource=resource,
        audience=config.auth_audience or resource,
        jwks=config.auth_jwks,
        issuer=config.auth_issuer,
        algorithms=algorithms,
        authorization_servers=tuple(config.auth_server),
    )
    keys = None
    if config.auth_jwks:
        keys = JwksKeys(config.auth_jwks)
        keys.load()  # a file that cannot be used stops start-up; a URL is retried later
    gate = BearerGate(settings, keys, server.token_verifier)
    return gate, ResourceMetadata(settings, server.registry)


def build_production(server: MCPServer, config: Config, *, http: bool = True) -> Production:
    """Every production feature the configuration asks for (``http`` False: stdio, where there is
    no gate, no route and no front). ValueError naming the flag for a bad setting."""
    production = Production()
    registry = server.registry
    if http:
        auth = build_auth(server, config)
        if auth is not None:
            production.gate, production.metadata = auth
    if production.gate is not None or any(tool.scopes for tool in registry.tools.values()):
        metadata = production.gate.metadata if production.gate is not None else ""
        production.scope_check = ScopeCheck(registry, metadata)
        if http and production.gate is None:
            logger.warning(
                "some tools declare scopes but no authorization is configured (--auth-jwks or "
                "a token_verifier): HTTP clients, having no token, cannot call them"
            )
    try:
        rate = parse_rate(config.rate_limit) if config.rate_limit else None
    except ValueError as exc:
        raise ValueError(f"--rate-limit: {exc}") from None
    if rate is not None or any(tool.rate_limit is not None for tool in registry.tools.values()):
        production.rate_limits = RateLimits(registry, rate)
    if config.idempotency_ttl < 0:
        raise ValueError("--idempotency-ttl must be 0 (off) or a number of seconds")
    if config.idempotency_ttl > 0 and http:
        production.idempotency = Idempotency(config.idempotency_ttl)
    if config.metrics and http:
        production.metrics = Metrics(registry)
        production.observers.append(production.metrics.requests)
        production.lag = LoopLag()
        production.metrics.loop_lag(production.lag)
    if config.audit_log:
        audit = JsonLines(config.audit_log, "--audit-log")
        audit.open()
        production.logs.append(audit)
        production.observers.append(AuditLog(audit, config.audit_arguments))
    if http and config.access_log:
        access = JsonLines(config.access_log, "--access-log")
        access.open()
        production.logs.append(access)
        production.access_log = AccessLog(access)
    if debug_requests():
        production.observers.append(DebugRequestLog())
    if http and config.cors_origins:
        production.cors = CorsPolicy(config.cors_origins)
    if http and config.forwarded_allow_ips:
        production.forwarded = ForwardedAddresses(config.forwarded_allow_ips)
    return production


def start_tracing(pipeline: Pipeline, production: Production, config: Config) -> None:
    """--tracing: once serving starts (the app may install its tracer provider in its lifespan),
    add the span observer if OpenTelemetry is there to take spans."""
    if config.tracing and tracing_available():
        production.observers.append(Tracing())
        pipeline.observer = production.observer
        logger.info("OpenTelemetry tracing: a server span per request")


def front_of(endpoint: App, config: Config, production: Production) -> App:
    """What runs before the endpoint, outermost first: the client's address behind a trusted
    proxy, the access log, CORS. Nothing configured: the endpoint itself."""
    app = endpoint
    if production.cors is not None:
        app = CorsFront(app, production.cors)
    if production.access_log is not None:
        mcp_paths = {config.path.encode()}
        if config.legacy_sse:
            mcp_paths.add(config.legacy_messages_path.encode())
        app = AccessLogFront(app, production.access_log, frozenset(mcp_paths))
    if production.forwarded is not None:
        app = ForwardedFront(app, production.forwarded)
    return app


def count_metrics(
    metrics: Metrics, http: HttpServer, endpoint: StreamableHTTP, pipeline: Pipeline, production: Production
) -> None:
    """What a scrape reads besides the request table: numbers the components keep anyway."""
    metrics.gauge(
        "mcp_server_open_connections",
        "Open client connections (HTTP/1.1 and HTTP/2).",
        lambda: len(http.connections),
    )
    http_sse = production.http_sse

    def streams() -> float:
        count = len(endpoint.streams.open_streams()) + len(endpoint.streams.live)
        return count + (len(http_sse.sessions) if http_sse is not None else 0)

    metrics.gauge(
        "mcp_server_open_streams",
        "Open SSE streams (GET streams, streamed POST answers, old HTTP+SSE sessions).",
        streams,
    )
    metrics.counter(
        "mcp_server_sessions_created_total",
        "Sessions started (Streamable HTTP initialize, old HTTP+SSE streams).",
        lambda: endpoint.sessions_created + (http_sse.sessions_created if http_sse is not None else 0),
    )
    caching = pipeline.caching
    if caching is not None:
        cache = caching.cache
        metrics.counter(
            "mcp_server_cache_hits_total", "Requests answered from the result cache.", lambda: cache.hits
        )
        metrics.counter(
            "mcp_server_cache_misses_total",
            "Cacheable requests the result cache did not have.",
            lambda: cache.misses,
        )
        metrics.counter(
            "mcp_server_cache_evictions_total",
            "Results the cache dropped to stay within its bounds.",
            lambda: cache.evictions,
        )
        metrics.gauge("mcp_server_cache_entries", "Results in the cache.", lambda: len(cache))
    limits = production.rate_limits
    metrics.counter(
        "mcp_server_rate_limited_total",
        "Requests refused with 429, by tool ('' : the server-wide --rate-limit).",
        lambda: {(tool,): count for tool, count in limits.refusals.items()} if limits is not None else {},
        ("gen_ai_tool_name",),
    )
    gate = production.gate
    scope_check = production.scope_check

    def auth_failures() -> dict[tuple[str, ...], float]:
        failures: dict[tuple[str, ...], float] = {}
        if gate is not None:
            failures.update({(reason,): count for reason, count in gate.counters.failures.items()})
        if scope_check is not None and scope_check.refusals:
            failures[("insufficient_scope",)] = scope_check.refusals
        return failures

    metrics.counter(
        "mcp_server_auth_failures_total",
        "Requests refused by authorization (401 by reason, 403 insufficient_scope).",
        auth_failures,
        ("reason",),
    )
    idempotency = production.idempotency
    if idempotency is not None:
        metrics.counter(
            "mcp_server_idempotent_replays_total",
            "tools/call retries answered with the first call's result (Idempotency-Key).",
            lambda: idempotency.replays,
        )
    logs = production.logs
    if logs:
        metrics.counter(
            "mcp_server_log_lines_dropped_total",
            "Access and audit log lines that could not be written.",
            lambda: {(lines.what,): lines.dropped for lines in logs},
            ("log",),
        )
