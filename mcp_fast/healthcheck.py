"""``python -m mcp_fast.healthcheck [PATH]``: exit 0 when the server answers ``GET PATH`` with 200.

For a container's HEALTHCHECK: slim images have no curl, and the check should follow the
server's own settings. With no address given it reads the same ``MCP_FAST_*`` variables as the
server (``--uds``, or ``--host``/``--port``; a wildcard host means this machine's loopback), and
sends a ``Host`` the server accepts: the first of ``MCP_FAST_ALLOWED_HOSTS``, else ``localhost``.
PATH defaults to ``/health``. One line on stdout says what it found. With ``MCP_FAST_CERTFILE``
it speaks HTTPS; the certificate is not verified (it names the service, not the loopback address
probed), and a server that requires client certificates (``--ssl-cert-reqs required``) cannot be
probed this way.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import sys
from collections.abc import Mapping, Sequence

from mcp_fast.config import Config, ConfigError, parse_config

USAGE = "usage: python -m mcp_fast.healthcheck [PATH]   (PATH starts with /; default /health)"
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (``--uds``)."""

    def __init__(self, path: str, timeout: float, context: ssl.SSLContext | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path
        self._context = context

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock if self._context is None else self._context.wrap_socket(sock)


def probe_context() -> ssl.SSLContext:
    """TLS to this machine's own server: encrypted, its certificate not checked (see above)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def connection_for(config: Config, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection to the server ``config`` describes, and where that is (for messages)."""
    context = probe_context() if config.certfile else None
    if config.uds:
        return _UnixConnection(config.uds, timeout, context), f"unix:{config.uds}"
    host = WILDCARD_HOSTS.get(config.host, config.host)
    shown = f"[{host}]" if ":" in host else host
    if context is not None:
        https = http.client.HTTPSConnection(host, config.port, timeout=timeout, context=context)
        return https, f"https://{shown}:{config.port}"
    return http.client.HTTPConnection(host, config.port, timeout=timeout), f"{shown}:{config.port}"


def check(path: str, environ: Mapping[str, str], timeout: float = 3.0) -> tuple[bool, str]:
    """(healthy, one line saying why)."""
    try:
        config = parse_config([], environ)
    except ConfigError as exc:
        return False, f"unhealthy: {exc}"
    connection, where = connection_for(config, timeout)
    host = config.allowed_hosts[0] if config.allowed_hosts else "localhost"
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        response.read()
    except OSError as exc:
        return False, f"unhealthy: GET {path} on {where}: {exc.strerror or exc}"
    finally:
        connection.close()
    line = f"GET {path} on {where}: {response.status} {response.reason}"
    return response.status == 200, ("healthy: " if response.status == 200 else "unhealthy: ") + line


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if len(args) > 1 or (args and not args[0].startswith("/")):
        print(USAGE, file=sys.stderr)
        return 2
    path = args[0] if args else "/health"
    healthy, line = check(path, os.environ)
    print(line, flush=True)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
