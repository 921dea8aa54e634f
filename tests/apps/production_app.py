"""A user app for the production tests (tests/test_production.py): scopes, rate limits, a slow
tool that counts its runs (idempotency), an opaque-token verifier and a readiness check.

- ``echo``: plain; ``write_file``: needs the scope ``files:write``; ``limited``: at most 2 calls
  per caller per minute; ``slow_count``: sleeps 0.5 s and returns how often it ran; ``whoami``:
  the caller's principal; ``fails``: an ``isError`` result.
- tokens ``opaque-alice`` / ``opaque-bob`` are accepted by the token verifier (subjects alice
  and bob, scope ``files:read``); any other non-JWT token is refused.
- the readiness check ``dependency`` fails while the file named by ``$PRODUCTION_APP_DOWN``
  exists.
- ``$PRODUCTION_APP_SPANS``: an OpenTelemetry SDK tracer provider writes every finished span as a
  JSON line to that file (how an app that traces configures OpenTelemetry).
"""

from __future__ import annotations

import asyncio
import os

from mcp_fast import Context, MCPServer, ToolError
from mcp_fast.call import Principal

RUNS = {"slow_count": 0}

if os.environ.get("PRODUCTION_APP_SPANS"):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    _spans = open(os.environ["PRODUCTION_APP_SPANS"], "a", buffering=1)  # noqa: SIM115 - for the process
    _provider = TracerProvider()
    _provider.add_span_processor(
        SimpleSpanProcessor(
            ConsoleSpanExporter(out=_spans, formatter=lambda span: span.to_json(indent=None) + "\n")
        )
    )
    trace.set_tracer_provider(_provider)


async def verify(token: str) -> Principal | None:
    if token in ("opaque-alice", "opaque-bob"):
        return Principal(token.removeprefix("opaque-"), frozenset({"files:read"}), {"kind": "opaque"})
    return None


server = MCPServer(
    "production-app", "1.0.0", token_verifier=verify if os.environ.get("PRODUCTION_APP_OPAQUE") else None
)


@server.tool(inline=True)
def echo(message: str) -> str:
    return message


@server.tool(inline=True, scopes=["files:write"])
def write_file(path: str) -> str:
    return f"wrote {path}"


@server.tool(inline=True, rate_limit="2/60s")
def limited() -> str:
    return "ok"


@server.tool()
async def slow_count(label: str) -> str:
    RUNS["slow_count"] += 1
    await asyncio.sleep(0.5)
    return f"{label}: run {RUNS['slow_count']}"


@server.tool()
async def whoami(ctx: Context) -> dict[str, object]:
    principal = ctx.call.principal
    return {
        "subject": principal.subject if principal else None,
        "scopes": sorted(principal.scopes) if principal else [],
        "client": ctx.call.client[0] if ctx.call.client else None,
    }


@server.tool(inline=True)
def fails() -> str:
    raise ToolError("it failed")


@server.readiness_check("dependency")
def dependency_up() -> bool:
    marker = os.environ.get("PRODUCTION_APP_DOWN")
    return not (marker and os.path.exists(marker))
