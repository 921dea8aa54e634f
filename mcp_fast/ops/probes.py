"""Health and readiness probes: ``GET /health`` and ``GET /ready`` (paths configurable).

- ``/health`` (liveness): 200 while the event loop runs; a probe that times out means the
  process is stuck and may be restarted.
- ``/ready`` (readiness): 200 with a JSON body naming each check; 503 while the server drains
  on SIGTERM (load balancers stop sending new requests) or while a check fails. Checks are the
  app's (``@server.readiness_check(name)``) and the dependencies the server was configured
  with (``auth-jwks``: the keys of a ``--auth-jwks`` URL are loaded). A check that raises or
  takes longer than ``CHECK_TIMEOUT`` fails.
Neither needs an MCP handshake, and the DNS-rebinding check does not apply to them: kubelets
and load balancers call them by IP address.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Final

import orjson

from mcp_fast.routes import HttpRequest, Response, Route, check_route
from mcp_fast.server import ReadinessCheck

logger = logging.getLogger("mcp_fast.ops")

CHECK_TIMEOUT: Final = 2.0  # seconds; a kubelet's default probe timeout is 1 s, 2 s for ours


class Probes:
    """The two probes of one process, and what readiness depends on."""

    def __init__(self) -> None:
        self.draining = False
        self.checks: dict[str, ReadinessCheck] = {}

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    async def health(self, request: HttpRequest) -> dict[str, Any]:
        return {"status": "ok"}

    async def ready(self, request: HttpRequest) -> Response | dict[str, Any]:
        results: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                outcome = check()
                ok = (
                    await asyncio.wait_for(outcome, CHECK_TIMEOUT)
                    if inspect.isawaitable(outcome)
                    else outcome
                )
            except TimeoutError:
                logger.warning("readiness check %r took longer than %s s", name, CHECK_TIMEOUT)
                ok = False
            except Exception:
                logger.warning("readiness check %r failed", name, exc_info=True)
                ok = False
            results[name] = "ok" if ok else "failing"
        if self.draining:
            results["draining"] = "failing"
        ready = all(state == "ok" for state in results.values())
        body = {"status": "ready" if ready else "not ready", "checks": results}
        if ready:
            return body
        return Response(503, orjson.dumps(body), content_type="application/json")

    def health_route(self, path: str) -> Route | None:
        """The liveness probe at ``path`` (None: an empty path turns it off)."""
        return Route(path, check_route(path, ["GET"]), self.health, check_host=False) if path else None

    def ready_route(self, path: str) -> Route | None:
        """The readiness probe at ``path`` (None: an empty path turns it off)."""
        return Route(path, check_route(path, ["GET"]), self.ready, check_host=False) if path else None
