"""A user app for the request-pipeline tests: middleware, lifespan and routes.

- ``record`` (middleware, outermost) writes down what each request looked like on arrival;
  the tool ``seen`` and the route ``/seen`` return that list, ``/seen/reset`` clears it.
- ``guard`` (middleware) raises ``McpError(-32050, ...)`` for the tool ``forbidden`` and
  answers the tool ``short`` itself, without calling on.
- the lifespan writes ``enter``/``exit`` lines to ``$PIPELINE_APP_MARKER`` (when set), and its
  value is what ``ctx.lifespan`` shows; ``$PIPELINE_APP_FAIL`` makes it fail at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from mcp_fast import Context, McpError, MCPServer
from mcp_fast.call import Call, CallNext
from mcp_fast.routes import HttpRequest, Response

server = MCPServer("pipeline-app", "1.0.0")
SEEN: list[dict[str, Any]] = []


def _mark(line: str) -> None:
    marker = os.environ.get("PIPELINE_APP_MARKER")
    if marker:
        with open(marker, "a") as file:
            file.write(f"{line} {os.getpid()}\n")


@server.lifespan
@contextlib.asynccontextmanager
async def lifespan(app: MCPServer) -> AsyncIterator[dict[str, Any]]:
    if os.environ.get("PIPELINE_APP_FAIL"):
        raise RuntimeError("the database is not reachable")
    _mark("enter")
    try:
        yield {"name": app.name, "pid": os.getpid()}
    finally:
        _mark("exit")


@server.middleware
async def record(call: Call, call_next: CallNext) -> Any:
    SEEN.append(
        {
            "transport": call.transport,
            "method": call.method,
            "tool": call.tool_name,
            "version": call.protocol_version,
            "session": call.session_id is not None,
            "header": call.headers.get("x-test"),
            "client": call.client is not None,
            "principal": call.principal,
        }
    )
    return await call_next(call)


@server.middleware
async def guard(call: Call, call_next: CallNext) -> Any:
    if call.tool_name == "forbidden":
        raise McpError(-32050, "Forbidden by a middleware", {"tool": "forbidden"})
    if call.tool_name == "short":
        return {"content": [{"type": "text", "text": "answered by a middleware"}], "isError": False}
    result = await call_next(call)
    if call.tool_name == "echo":
        result = dict(result)
        result.setdefault("_meta", {})["middleware"] = "saw the result"
    return result


@server.tool()
def echo(message: str) -> str:
    """Echo the message back."""
    return message


@server.tool()
def forbidden() -> str:
    """Never runs: the guard refuses it."""
    raise AssertionError("the guard must have refused this call")


@server.tool()
def short() -> str:
    """Never runs: the guard answers it."""
    raise AssertionError("the guard must have answered this call")


@server.tool()
async def lifespan_value(ctx: Context) -> dict[str, Any]:
    """What the lifespan yielded, and what the handler sees of its request."""
    call = ctx.call
    return {"lifespan": ctx.lifespan, "transport": call.transport, "tool": call.tool_name}


@server.tool()
async def slow(seconds: float) -> str:
    """Take a while."""
    await asyncio.sleep(seconds)
    return f"slept {seconds:g}"


@server.tool(inline=True)
def seen() -> list[dict[str, Any]]:
    """What the record middleware saw, in order."""
    return list(SEEN)


@server.route("/seen")
async def seen_route(request: HttpRequest) -> list[dict[str, Any]]:
    return list(SEEN)


@server.route("/seen/reset", methods=["POST"])
def reset_route(request: HttpRequest) -> None:
    SEEN.clear()


@server.route("/hello", methods=["GET", "POST"], check_host=False)
def hello(request: HttpRequest) -> Response:
    who = request.query.get("name", ["world"])[0]
    return Response(201, f"hello {who}; {len(request.body)} bytes from {request.method}", headers={"X-Route": "hello"})


@server.route("/broken")
def broken(request: HttpRequest) -> str:
    raise ValueError("a bug in a route")
