"""Listening socket, connection sweeper and graceful shutdown (the only loop-owning code)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import TYPE_CHECKING

from mcp_fast.net.connection import App, ConnectionSet, HttpConnection, Timeouts
from mcp_fast.net.flow import FlowControl
from mcp_fast.net.tls import CertificateStore, TlsSettings
from mcp_fast.wire import h1

if TYPE_CHECKING:
    from mcp_fast.wire.h2 import H2Limits

logger = logging.getLogger("mcp_fast.net")

# Shutdown: after this long waiting for connections, the log says which (then again every
# _REPORT_EVERY seconds), naming up to _REPORT_KINDS kinds of them. A little over the idle
# connections' grace (1 s), so that a shutdown that only waits out the grace says nothing.
_REPORT_AFTER = 1.5
_REPORT_EVERY = 3.0
_REPORT_KINDS = 8


@dataclass
class NetSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    backlog: int = 2048
    limits: h1.H1Limits = field(default_factory=h1.H1Limits)
    timeouts: Timeouts = field(default_factory=Timeouts)
    shutdown_timeout: float = 10.0
    reuse_port: bool = False
    http2: bool = True  # h2c with prior knowledge; over TLS, h2 by ALPN
    h2_max_concurrent_streams: int = 100
    h2_max_connection_buffer: int = 16 << 20
    tls: TlsSettings | None = None  # None: cleartext
    # A Unix socket path to listen on instead of host:port (nginx on the same host). Made
    # group-accessible (0660): processes of the server's group (e.g. nginx's) may connect.
    uds: str | None = None

    def h2_limits(self) -> H2Limits:
        """The HTTP/1.1 size limits, applied to HTTP/2 requests too."""
        from mcp_fast.wire.h2 import H2Limits

        return H2Limits(
            max_header_bytes=self.limits.max_header_bytes,
            max_header_count=self.limits.max_header_count,
            max_target_bytes=self.limits.max_target_bytes,
            max_body_bytes=self.limits.max_body_bytes,
            max_concurrent_streams=self.h2_max_concurrent_streams,
            max_connection_buffer=self.h2_max_connection_buffer,
        )


class HttpServer:
    def __init__(self, app: App, settings: NetSettings) -> None:
        self.app = app
        self.settings = settings
        self.connections = ConnectionSet()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        # Made with the first HTTP/2 connection: the HTTP/2 layer (and hpack) is imported only
        # then, so a server no client speaks HTTP/2 to keeps its idle memory (about 1 MB less).
        self._h2_limits: H2Limits | None = None
        self._socket_inode: int | None = None  # of the --uds socket this server made
        # Read (and checked) here, so that bad files stop start-up (TlsConfigError).
        self.certificates = CertificateStore(settings.tls) if settings.tls is not None else None

    def _make_protocol(self) -> HttpConnection:
        return HttpConnection(
            self.app,
            self.settings.limits,
            self.settings.timeouts,
            self.connections,
            self._to_http2 if self.settings.http2 else None,
        )

    def _to_http2(self, transport: asyncio.Transport, flow: FlowControl, data: bytes) -> None:
        """A new connection began with the HTTP/2 preface: switch its protocol."""
        from mcp_fast.net.h2connection import Http2Connection

        if self._h2_limits is None:
            self._h2_limits = self.settings.h2_limits()
        protocol = Http2Connection(self.app, self._h2_limits, self.settings.timeouts, self.connections)
        transport.set_protocol(protocol)
        protocol.take_over(transport, flow, data)

    async def start(self, sock: socket.socket | None = None) -> None:
        loop = asyncio.get_running_loop()
        context = None if self.certificates is None else self.certificates.listening
        if sock is not None:
            self._server = await loop.create_server(
                self._make_protocol, sock=sock, backlog=self.settings.backlog, ssl=context
            )
        elif self.settings.uds is not None:
            self._server = await loop.create_unix_server(
                self._make_protocol, self.settings.uds, backlog=self.settings.backlog, ssl=context
            )
            os.chmod(self.settings.uds, 0o660)
            self._socket_inode = os.stat(self.settings.uds).st_ino
        else:
            self._server = await loop.create_server(
                self._make_protocol,
                self.settings.host,
                self.settings.port,
                backlog=self.settings.backlog,
                reuse_port=self.settings.reuse_port or None,
                ssl=context,
            )
        h1.set_date(formatdate(usegmt=True))
        self._sweeper = loop.create_task(self._sweep())

    def reload_certificate(self) -> None:
        """SIGHUP: new handshakes get the certificate now in the files; open connections
        keep theirs. Bad files are logged and the old certificate stays."""
        if self.certificates is None:
            logger.info("SIGHUP: no --certfile, nothing to reload")
            return
        self.certificates.reload()

    @property
    def sockets(self) -> list[socket.socket]:
        return [] if self._server is None else list(self._server.sockets)

    async def _sweep(self) -> None:
        """Once a second: the Date of response heads, and connections whose deadline passed
        (timeouts)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            h1.set_date(formatdate(usegmt=True))
            self._expire(loop.time())

    def _expire(self, now: float) -> None:
        """The connections whose deadline passed (a timeout, or a shutdown grace) act on it."""
        for connection in [c for c in self.connections if c.deadline <= now]:
            connection.on_deadline()

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (bounded), then close everything."""
        # From now on a connection made late (accepted a moment ago) shuts down as it starts.
        self.connections.draining = True
        if self._server is not None:
            held = self._hold_listeners()
            self._server.close()
            queued = await self._accept_queued(held)
        else:
            queued = 0
        for connection in list(self.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + self.settings.shutdown_timeout
        # Connections accepted just before: their connection_made runs within a few turns.
        await asyncio.sleep(0.01)
        late = self.connections.made_late - queued
        if late > 0:
            logger.info(
                "%d connection%s accepted just before shutdown began joined it as %s started",
                late,
                "s" if late != 1 else "",
                "they" if late != 1 else "it",
            )
        next_report = began + _REPORT_AFTER
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
            now = loop.time()
            # The sweeper's work, more often: an idle connection closes as its grace ends,
            # not up to a second later.
            self._expire(now)
            if self.connections and now >= next_report:
                logger.info(
                    "shutting down: after %.1f s, still waiting for %s", now - began, self._waiting_for()
                )
                next_report = now + _REPORT_EVERY
        if self.connections:
            logger.warning(
                "shutdown timeout (%g s): closing %s",
                self.settings.shutdown_timeout,
                self._waiting_for(),
            )
        for connection in list(self.connections):
            connection.cancel_application()
            connection.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            await self._server.wait_closed()
        self._remove_socket_file()

    def _waiting_for(self) -> str:
        """The open connections, counted by what they do: "3 connections: 2 GET /sse (a stream),
        1 idle"."""
        kinds = Counter(connection.describe() for connection in self.connections)
        total = sum(kinds.values())
        listed = ", ".join(f"{count} {what}" for what, count in kinds.most_common(_REPORT_KINDS))
        more = len(kinds) - _REPORT_KINDS
        if more > 0:
            listed += f", and {more} more kinds"
        return f"{total} connection{'s' if total != 1 else ''}: {listed}"

    def _hold_listeners(self) -> list[socket.socket]:
        """Duplicates of the listening sockets, kept open while ``stop`` closes the server's.

        Closing a listening socket resets the connections in its accept queue: connected,
        their request maybe sent (a proxy that opened a connection a moment ago), never
        accepted. A reset after the request went out is an error the client cannot retry
        safely (nginx answers a POST 502). Through a duplicate, what is queued is accepted and
        served (with Connection: close) like any connection open when shutdown began.
        """
        held = []
        for listening in self.sockets:
            with contextlib.suppress(OSError):
                duplicate = socket.socket(fileno=os.dup(listening.fileno()))
                duplicate.setblocking(False)
                held.append(duplicate)
        return held

    async def _accept_queued(self, held: list[socket.socket]) -> int:
        """Accept what waits in the listeners' queues; how many were."""
        loop = asyncio.get_running_loop()
        context = None if self.certificates is None else self.certificates.listening
        accepted = 0
        for listening in held:
            with listening:
                while True:
                    try:
                        sock, _ = listening.accept()
                    except OSError:  # BlockingIOError: the queue is empty
                        break
                    try:
                        await loop.connect_accepted_socket(self._make_protocol, sock, ssl=context)
                    except OSError as exc:  # (a failed TLS handshake, a peer gone meanwhile)
                        logger.info("a queued connection failed as it was accepted: %s", exc)
                        sock.close()
                    else:
                        accepted += 1
        if accepted:
            await asyncio.sleep(0)  # uvloop: their connection_made runs on the next turn
            logger.info("accepted %d queued connections while shutting down", accepted)
        return accepted

    def _remove_socket_file(self) -> None:
        """The --uds socket file goes with the server (unless another server replaced it)."""
        path = self.settings.uds
        if path is None or self._socket_inode is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == self._socket_inode:
                os.unlink(path)


def stop_on_signals(reload: Callable[[], None] | None = None) -> asyncio.Future[None]:
    """A future that SIGINT or SIGTERM completes. Made before anything slow starts (the app's
    lifespan, say), so that a signal during start-up stops the process in order too.
    ``reload`` (the server's certificate reload) is called on each SIGHUP."""
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, request_stop)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, reload)
    return stop


async def serve_forever(
    server: HttpServer,
    on_ready: str | Callable[[], str] | None = None,
    stop: asyncio.Future[None] | None = None,
) -> None:
    """Run until ``stop`` completes (by default: SIGINT/SIGTERM, and SIGHUP reloads the
    certificate), then shut down gracefully. ``on_ready`` is logged once the server listens (a
    callable is asked then, so it can name the address really bound)."""
    if stop is None:
        stop = stop_on_signals(server.reload_certificate)
    if stop.done():
        return  # stopped while starting up
    await server.start()
    if on_ready is not None:
        logger.info("%s", on_ready if isinstance(on_ready, str) else on_ready())
    await stop
    logger.info("shutting down")
    await server.stop()
