"""Put the floors together: config -> network adapter -> router -> transports -> pipeline -> server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mcp_fast import __version__
from mcp_fast.call import Gate, Middleware
from mcp_fast.checks import StartupError, check_startup, tls_settings
from mcp_fast.config import Config
from mcp_fast.dispatch.cache import ResultCache
from mcp_fast.dispatch.runner import running_in_threads
from mcp_fast.fleet.base import ENDED, Fleet, LocalFleet
from mcp_fast.fleet.event_store import MemoryEventStore
from mcp_fast.fleet.redis_fleet import RedisFleet, RedisSettings, shown_url

# Re-exported: the app is loaded here, and callers (tests, bench) import it from here.
from mcp_fast.loading import AppLoadError as AppLoadError
from mcp_fast.loading import load_app as load_app
from mcp_fast.net.connection import Timeouts
from mcp_fast.net.server import HttpServer, NetSettings, serve_forever, stop_on_signals
from mcp_fast.ops.metrics import MetricsShare
from mcp_fast.ops.probes import Probes
from mcp_fast.pipeline import Pipeline, PipelineSettings
from mcp_fast.production import Production, build_production, count_metrics, front_of, start_tracing
from mcp_fast.protocol.versions import SUPPORTED_VERSIONS
from mcp_fast.routes import Route, check_route
from mcp_fast.server import MCPServer
from mcp_fast.transport.http_sse import HttpSseSettings, HttpSseTransport
from mcp_fast.transport.origin import LOOPBACK_NAMES, HostPolicy
from mcp_fast.transport.router import App, HttpRouter, RouteEndpoint
from mcp_fast.transport.sessions import JwtSessions, JwtSettings, MemorySessions, SessionStore
from mcp_fast.transport.stdio import StdioSettings, claim_standard_streams, serve_stdio
from mcp_fast.transport.streamable import StreamableHTTP, StreamableSettings
from mcp_fast.wire.h1 import H1Limits

logger = logging.getLogger("mcp_fast")

# A worker that dies within this long of its start is restarted after a pause (one that fails
# as it starts would otherwise be forked again and again); one that ran longer, at once.
_CRASH_LOOP_SECONDS = 1.0


def fleet_dir(config: Config) -> Path | None:
    """--fleet-dir (None: not set), made if missing; a ValueError naming the flag when it
    cannot be used."""
    if not config.fleet_dir:
        return None
    path = Path(config.fleet_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--fleet-dir {config.fleet_dir}: not a directory")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--fleet-dir {config.fleet_dir}: {exc.strerror or exc}") from exc
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise ValueError(f"--fleet-dir {config.fleet_dir}: this process cannot read and write it")
    return path


def build_fleet(config: Config) -> Fleet:
    """What the instances share: Redis (--redis), or nothing beyond this process (also over
    stdio: one client per process, nobody to share with)."""
    if not config.redis or config.transport == "stdio":
        return LocalFleet(MemoryEventStore(max_events=config.event_store_max_events))
    return RedisFleet(
        RedisSettings(
            url=config.redis,
            prefix=config.redis_prefix,
            timeout=config.redis_timeout,
            max_events=config.event_store_max_events,
            max_age=config.event_store_max_age,
        )
    )


def build_sessions(config: Config, fleet: Path | None = None) -> SessionStore | None:
    """``fleet``: the checked --fleet-dir, whose ended/ the JWT sessions share."""
    mode = config.effective_session_mode
    if mode == "none":
        return None
    if mode == "memory":
        return MemorySessions(ttl_seconds=config.session_ttl)
    settings = JwtSettings(
        secrets=tuple(config.session_secret),
        algorithm=config.session_algorithm,
        private_key_file=Path(config.session_private_key) if config.session_private_key else None,
        public_key_files=tuple(Path(path) for path in config.session_public_keys),
        ttl_seconds=config.session_ttl,
        denylist_dir=fleet / "ended" if fleet is not None else None,
        denylist_poll_seconds=config.fleet_poll,
    )
    sessions = JwtSessions(settings)
    if sessions.generated_secret:
        logger.warning(
            "no --session-secret given: sessions are signed with a random per-process secret, "
            "so only this process can serve them; set MCP_FAST_SESSION_SECRET for a fleet"
        )
    return sessions


def build_http_sse(
    pipeline: Pipeline, host_policy: HostPolicy, config: Config, gate: Gate | None = None
) -> HttpSseTransport:
    """The old HTTP+SSE transport on two more paths, on the same pipeline as the endpoint."""
    settings = HttpSseSettings(
        sse_path=config.legacy_sse_path.encode(),
        messages_path=config.legacy_messages_path.encode(),
        host_policy=host_policy,
        keepalive_interval=config.sse_keepalive,
        gate=gate,
    )
    if config.path.encode() in (settings.sse_path, settings.messages_path):
        raise ValueError("the old HTTP+SSE transport's paths must differ from --path")
    return HttpSseTransport(pipeline, settings)


def build_cache(config: Config) -> ResultCache | None:
    """The in-process result cache (``--cache-size 0``: none)."""
    if config.cache_size <= 0:
        return None
    return ResultCache(config.cache_size, config.cache_max_bytes)


def build_pipeline(
    server: MCPServer, config: Config, fleet: Path | None = None, production: Production | None = None
) -> Pipeline:
    """The request path every transport of this process shares (its fleet is started by
    ``Pipeline.start`` once the loop runs)."""
    server.registry.offload_after = config.offload_after
    production = production or Production()
    idempotency: Middleware | None = production.idempotency
    shared = build_fleet(config)
    if production.rate_limits is not None and shared.shared:
        production.rate_limits.share(shared)  # --redis: a caller is limited across the fleet
    return Pipeline(
        server,
        PipelineSettings(
            page_size=config.page_size,
            # One secret for sessions and input-required states: a fleet shares it.
            state_secrets=tuple(config.session_secret),
            cache=build_cache(config),
            fleet_dir=fleet,
            fleet_poll=config.fleet_poll,
            fleet=shared,
            checks=production.checks,
            idempotency=idempotency,
            observer=production.observer,
        ),
    )


def build_endpoint(
    server: MCPServer,
    config: Config,
    pipeline: Pipeline,
    host_policy: HostPolicy,
    fleet: Path | None,
    probes: Probes | None = None,
    production: Production | None = None,
) -> StreamableHTTP:
    """Paths to what serves them: the MCP endpoint (the application the network adapter calls),
    and through its router the old HTTP+SSE transport, the built-in routes and the app's routes."""
    production = production or Production()
    others: dict[bytes, App] = {}
    http_sse: HttpSseTransport | None = None
    if config.legacy_sse:
        http_sse = build_http_sse(pipeline, host_policy, config, production.gate)
        others[http_sse.settings.sse_path] = http_sse
        others[http_sse.settings.messages_path] = http_sse
    probes = probes or Probes()
    for name, check in server.readiness_checks.items():
        probes.add_check(name, check)
    if production.gate is not None and production.gate.keys is not None:
        keys = production.gate.keys
        probes.add_check("auth-jwks", lambda: keys.ready)
    shared = pipeline.fleet
    if shared.shared:
        probes.add_check("redis", lambda: shared.available)
    builtin: list[tuple[str, Route | None]] = [
        ("--health-path", probes.health_route(config.health_path)),
        ("--ready-path", probes.ready_route(config.ready_path)),
    ]
    if production.metrics is not None and config.metrics_path:
        path = config.metrics_path
        handler = production.metrics.handle
        builtin.append(("--metrics-path", Route(path, check_route(path, ["GET"]), handler, False, True)))
    if production.metadata is not None:
        metadata = production.metadata
        for path in metadata.paths():
            builtin.append(("--public-url", Route(path, check_route(path, ["GET"]), metadata.handle, False)))
    for flag, route in builtin:
        if route is None:
            continue  # turned off with an empty path
        key = route.path.encode()
        if key == config.path.encode() or key in others or route.path in server.routes:
            raise ValueError(
                f"{flag} {route.path}: that path is taken (--path, an old HTTP+SSE path or an app route)"
            )
        others[key] = RouteEndpoint(route, host_policy)
    for path, route in server.routes.items():
        key = path.encode()
        if key == config.path.encode() or key in others:
            raise ValueError(f"the route {path} clashes with an MCP path (--path or the old HTTP+SSE paths)")
        others[key] = RouteEndpoint(route, host_policy)
    sessions = build_sessions(config, fleet)
    if isinstance(sessions, JwtSessions) and shared.shared:
        shared.subscribe(ENDED, sessions.ended_elsewhere)
    endpoint = StreamableHTTP(
        pipeline,
        StreamableSettings(
            path=config.path.encode(),
            others=HttpRouter(config.path.encode(), others),
            host_policy=host_policy,
            sessions=sessions,
            keepalive_interval=config.sse_keepalive,
            event_store=shared.event_store,
            gate=production.gate,
        ),
    )
    production.http_sse = http_sse
    return endpoint


def build_http_server(
    server: MCPServer,
    config: Config,
    pipeline: Pipeline | None = None,
    probes: Probes | None = None,
    production: Production | None = None,
) -> HttpServer:
    """The HTTP server of one process; ``pipeline`` may be given (its fleet directory then is
    the one it was built with, and ``production`` what it was built with)."""
    fleet = fleet_dir(config)
    if production is None:
        production = build_production(server, config)
    if pipeline is None:
        pipeline = build_pipeline(server, config, fleet, production)
    origins = list(config.allowed_origins)
    if config.cors_origins:
        # The DNS-rebinding Origin check lets the CORS origins in too (the default stays).
        origins = [*(origins or LOOPBACK_NAMES), *config.cors_origins]
    host_policy = HostPolicy.build(config.host, config.allowed_hosts, origins)
    endpoint = build_endpoint(server, config, pipeline, host_policy, fleet, probes, production)
    settings = NetSettings(
        host=config.host,
        port=config.port,
        backlog=config.backlog,
        limits=H1Limits(
            max_header_bytes=config.max_header_size,
            max_header_count=config.max_header_count,
            max_target_bytes=config.max_url_size,
            max_body_bytes=config.max_body_size,
        ),
        timeouts=Timeouts(
            header=config.header_timeout,
            body=config.body_timeout,
            keep_alive=config.keepalive_timeout,
            write=config.write_timeout,
            max_stream_buffer=config.max_stream_buffer,
        ),
        shutdown_timeout=config.shutdown_timeout,
        uds=config.uds or None,
        http2=config.http2,
        h2_max_concurrent_streams=config.h2_max_concurrent_streams,
        h2_max_connection_buffer=config.h2_max_connection_buffer,
        tls=tls_settings(config),
    )
    http = HttpServer(front_of(endpoint, config, production), settings)
    if production.metrics is not None:
        count_metrics(production.metrics, http, endpoint, pipeline, production)
    return http


def install_event_loop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; this guards exotic platforms
        logger.warning("uvloop is not available; using the default asyncio loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def use_handler_threads(config: Config) -> None:
    """The running loop's default executor, where offloaded def handlers and def routes run:
    ``--handler-threads`` threads, named so a thread dump says what they are. Threads start on
    demand, so an idle server has none."""
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=config.handler_threads, thread_name_prefix="mcp_fast-handler")
    )


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run(config: Config) -> int:
    configure_logging(config.log_level)
    try:
        check_startup(config)
    except StartupError as exc:
        logger.error("cannot start: %s", exc)
        return 2
    streams: tuple[int, int] | None = None
    if config.transport == "stdio":
        # Take stdin/stdout before the app is imported, so what it prints goes to stderr.
        try:
            streams = claim_standard_streams()
        except OSError as exc:  # stdin or stdout is not open at all
            logger.error("cannot serve stdio: %s", exc)
            return 2
    try:
        server = load_app(config.app)
    except AppLoadError as exc:
        logger.error("cannot start: %s", exc)
        return 2
    if streams is not None:
        return run_stdio(server, config, *streams)
    if config.workers > 1:
        return run_workers(server, config)
    return serve_one(server, config, reuse_port=False)


class LifespanFailed(Exception):
    """The server's ``@server.lifespan`` function failed: start-up stops (exit code 1)."""


@contextlib.asynccontextmanager
async def lifespan_of(server: MCPServer) -> AsyncIterator[None]:
    """The server's lifespan around serving: a failure to start is reported (LifespanFailed), one
    while shutting down is logged."""
    manager = server.running()
    try:
        await manager.__aenter__()
    except Exception as exc:
        logger.error("the lifespan of %r failed at start-up: %s: %s", server.name, type(exc).__name__, exc)
        logger.debug("the lifespan's traceback", exc_info=exc)  # for --log-level debug
        raise LifespanFailed(str(exc)) from None
    try:
        yield
    finally:
        try:
            await manager.__aexit__(None, None, None)
        except Exception:  # the user's clean-up code: logged; the process still stops
            logger.exception("the lifespan of %r failed while shutting down", server.name)


def serve_one(server: MCPServer, config: Config, *, reuse_port: bool, metrics_dir: Path | None = None) -> int:
    """One process, one event loop (a worker, or the whole server). ``metrics_dir``: where the
    workers of ``--workers`` share their metrics."""
    install_event_loop()
    probes = Probes()
    try:
        production = build_production(server, config)
        pipeline = build_pipeline(server, config, fleet_dir(config), production)
        http = build_http_server(server, config, pipeline, probes, production)
    except (OSError, ValueError) as exc:  # unreadable key file, bad algorithm, clashing paths, TLS files
        logger.error("cannot start: %s", exc)
        return 2
    http.settings.reuse_port = reuse_port
    # A worker says nothing when it listens: the parent logs the summary once for all of them.
    ready = None if reuse_port else (lambda: startup_summary(server, config, listening_address(config, http)))

    async def main() -> None:
        use_handler_threads(config)
        # Before the lifespan: a SIGTERM while it starts is orderly too. SIGHUP: the certificate.
        stop = stop_on_signals(http.reload_certificate)
        stop.add_done_callback(lambda _: setattr(probes, "draining", True))  # /ready: 503 from now on
        await pipeline.start()  # the fleet: an unreachable Redis is logged, /ready says so
        try:
            async with lifespan_of(server):
                start_tracing(pipeline, production, config)
                share = None
                if metrics_dir is not None and production.metrics is not None:
                    share = production.metrics.share = MetricsShare(metrics_dir, production.metrics)
                    share.start()
                if production.lag is not None:
                    production.lag.start()
                freeze_startup_objects()
                try:
                    await serve_forever(http, ready, stop)
                finally:
                    if production.lag is not None:
                        production.lag.stop()
                    if share is not None:
                        share.stop()
                    say_what_threads_hold()
        finally:
            await pipeline.stop()

    try:
        asyncio.run(main())
    except LifespanFailed:
        return 1
    except OSError as exc:
        logger.error("cannot listen on %s: %s", listening_address(config), exc.strerror or exc)
        return 1
    finally:
        pipeline.close()  # nothing waits any more for what lands in its mailbox
        production.close()  # the logs' last lines
    return 0


def say_what_threads_hold() -> None:
    """At shutdown, the handlers still running in the thread pool: the process exits only once
    they return (a thread cannot be stopped; their answers are dropped)."""
    running = running_in_threads()
    if running:
        logger.warning(
            "shutting down: %d handler thread%s still running (%s); the process exits when %s",
            len(running),
            "s" if len(running) != 1 else "",
            ", ".join(f"{name!r} x{count}" for name, count in Counter(running).most_common()),
            "they return" if len(running) != 1 else "it returns",
        )


def freeze_startup_objects() -> None:
    """What exists once the server is built (modules, the app, its schemas: tens of thousands
    of objects) lives as long as the process: out of the cyclic collector's reach
    (``gc.freeze``), so that its full collections, which run every few seconds under load,
    scan only what requests made. Each such collection held the event loop about 8 ms longer
    (bench/soak.py: its lag spikes)."""
    gc.collect()
    gc.freeze()


def startup_summary(server: MCPServer, config: Config, address: str, *, shared_secret: bool = False) -> str:
    """The one line an operator reads at start: where, what, which versions, how many
    processes, which sessions."""
    transports = f"Streamable HTTP on {config.path}"
    if config.legacy_sse:
        transports += f", the old HTTP+SSE on {config.legacy_sse_path} and {config.legacy_messages_path}"
    if config.certfile:
        transports += "; HTTP/1.1 and h2 by ALPN" if config.http2 else "; HTTP/1.1"
    else:
        transports += "; HTTP/1.1 and h2c" if config.http2 else "; HTTP/1.1"
    versions = f"MCP {SUPPORTED_VERSIONS[0]} to {SUPPORTED_VERSIONS[-1]}"
    processes = f"{config.workers} workers" if config.workers > 1 else f"1 process (pid {os.getpid()})"
    fleet = f"; fleet: Redis at {shown_url(config.redis)} ({config.redis_prefix!r})" if config.redis else ""
    return (
        f"mcp_fast {__version__} serving {server.name!r} on {address} ({transports}; {versions}; "
        f"{processes}; sessions: {_session_summary(config, shared_secret)}{fleet})"
    )


def _session_summary(config: Config, shared_secret: bool) -> str:
    mode = config.effective_session_mode
    if mode != "jwt":
        return {"none": "none (stateless)", "memory": "memory (this process)"}.get(mode, mode)
    if config.session_algorithm != "HS256":
        return f"jwt {config.session_algorithm}, signed with {config.session_private_key}"
    if shared_secret:
        return "jwt HS256, a random secret the workers share"
    if not config.session_secret:
        return "jwt HS256, a random per-process secret"
    rotation = f" ({len(config.session_secret)} secrets)" if len(config.session_secret) > 1 else ""
    return f"jwt HS256, --session-secret{rotation}"


def listening_address(config: Config, http: HttpServer | None = None) -> str:
    """``http://127.0.0.1:8000`` (``https://`` with --certfile; the port really bound, when
    ``http`` listens) or ``unix:PATH`` (``unix:PATH over TLS``)."""
    if config.uds:
        return f"unix:{config.uds} over TLS" if config.certfile else f"unix:{config.uds}"
    port = config.port
    if http is not None and http.sockets:
        port = int(http.sockets[0].getsockname()[1])
    host = f"[{config.host}]" if ":" in config.host else config.host
    scheme = "https" if config.certfile else "http"
    return f"{scheme}://{host}:{port}"


def run_stdio(server: MCPServer, config: Config, input_fd: int, output_fd: int) -> int:
    """One client on stdin/stdout until it closes stdin (or SIGTERM); then exit 0."""
    if config.workers > 1:
        logger.warning("--workers is ignored with --transport stdio (one client per process)")
    install_event_loop()
    settings = StdioSettings(max_message_size=config.max_body_size, shutdown_timeout=config.shutdown_timeout)
    try:
        production = build_production(server, config, http=False)
    except (OSError, ValueError) as exc:
        logger.error("cannot start: %s", exc)
        return 2
    pipeline = build_pipeline(server, config, None, production)
    logger.info("mcp_fast serving %r over stdio", server.name)

    async def main() -> str:
        use_handler_threads(config)
        async with lifespan_of(server):
            start_tracing(pipeline, production, config)
            return await serve_stdio(pipeline, settings, input_fd, output_fd)

    try:
        reason = asyncio.run(main())
    except LifespanFailed:
        return 1
    finally:
        production.close()
    logger.info("mcp_fast stopped: %s", reason)
    return 0


def run_workers(server: MCPServer, config: Config) -> int:
    """Pre-fork ``--workers`` processes that share the port (SO_REUSEPORT: the kernel spreads
    connections). The parent restarts a worker that dies and passes SIGTERM/SIGINT on, and
    SIGHUP (certificate reload)."""
    shared_secret = config.effective_session_mode == "jwt" and not config.session_secret
    if (
        config.effective_session_mode == "jwt"
        and not config.session_secret
        and not config.session_private_key
    ):
        # One secret for all workers, so each serves the sessions of the others.
        config.session_secret = [secrets.token_urlsafe(32)]
    private_fleet_dir = config.effective_session_mode == "jwt" and not config.fleet_dir and not config.redis
    if private_fleet_dir:
        # And one fleet directory: a session DELETEd on one worker ends on all of them, and an
        # answer to a server-to-client request finds the worker that asked.
        config.fleet_dir = tempfile.mkdtemp(prefix="mcp_fast-fleet-")
    if config.effective_session_mode == "memory":
        logger.warning("--session-mode memory with several workers: a session works only on its own worker")
    if config.legacy_sse:
        logger.warning(
            "the old HTTP+SSE transport with several workers: a client's POSTs reach its stream only "
            "when they land on the same worker; run one worker per instance behind a load balancer "
            "that routes by session_id, or --no-legacy-sse"
        )
    stopping = False
    children: set[int] = set()
    started: dict[int, float] = {}  # worker pid -> when it was forked
    # One scrape shows the whole server: the workers publish their metrics here (MetricsShare).
    metrics_dir = Path(tempfile.mkdtemp(prefix="mcp_fast-metrics-")) if config.metrics else None

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # the worker; it must never return into the parent's loop below
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until its loop handles it (stop_on_signals)
            code = 70  # EX_SOFTWARE: serve_one raised
            try:
                code = serve_one(server, config, reuse_port=True, metrics_dir=metrics_dir)
            except BaseException:
                logger.exception("worker %d failed", os.getpid())
            finally:
                os._exit(code)
        children.add(pid)
        started[pid] = time.monotonic()

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def pass_on(signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, pass_on)
    status = 0
    try:
        for _ in range(config.workers):
            spawn()
        logger.info(
            "%s", startup_summary(server, config, listening_address(config), shared_secret=shared_secret)
        )
        while children:
            try:
                pid, code = os.wait()
            except ChildProcessError:
                break
            children.discard(pid)
            exit_code = os.waitstatus_to_exitcode(code)
            if stopping:
                continue
            if exit_code in (1, 2):  # cannot listen, bad configuration: restarting won't help
                logger.error("worker %d exited with %d; stopping", pid, exit_code)
                status = exit_code
                stop(signal.SIGTERM, None)
                continue
            logger.error("worker %d exited with %d; starting a new one", pid, exit_code)
            if time.monotonic() - started.pop(pid, 0.0) < _CRASH_LOOP_SECONDS:
                time.sleep(0.5)  # it died as it started: no fork loop
            if not stopping:  # SIGTERM may have come during the pause
                spawn()
    finally:
        if private_fleet_dir:
            shutil.rmtree(config.fleet_dir, ignore_errors=True)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return status
