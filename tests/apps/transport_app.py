"""A user app for the stdio and HTTP+SSE transport tests.

It prints to stdout at import time and from a tool (the stdio transport must keep that off the
protocol stream), has a tool that blocks until it is cancelled (and counts cancellations), and a
slow tool with progress, and a cached tool that counts how often it really ran.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp_fast import Context, MCPServer

server = MCPServer("transport-app", "1.0.0")
_counters = {"started": 0, "cancelled": 0}
_remember_runs = [0]

print("noise at import time")  # a stray print: must reach stderr, never the protocol


@server.tool()
async def block(ctx: Context) -> str:
    """Report progress once, then wait until cancelled."""
    _counters["started"] += 1
    await ctx.report_progress(0, 1, "started")
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        _counters["cancelled"] += 1
        raise
    return "never"


@server.tool(inline=True)
def counters() -> dict[str, int]:
    """How many block calls started and how many were cancelled."""
    return dict(_counters)


@server.tool()
def noisy() -> str:
    """Write to stdout three ways (print, the sys.stdout buffer, fd 1), then answer."""
    print("noise from print()")
    sys.stdout.flush()
    os.write(1, b"noise written to fd 1\n")
    return "quiet"


@server.tool()
async def slow(seconds: float, ctx: Context) -> str:
    """Sleep, with a progress notification first."""
    await ctx.report_progress(0, 1, "sleeping")
    await asyncio.sleep(seconds)
    return f"slept {seconds:g}"


@server.tool()
async def ask_roots(ctx: Context) -> str:
    """Ask the client for its roots (a request from the server), and say how many it has."""
    roots = await ctx.list_roots(timeout=60)
    return f"{len(roots)} roots"


@server.tool(inline=True)
def echo(message: str) -> str:
    """Echo the message back."""
    return message


@server.tool(inline=True, cache_ttl=60)
def remember(key: str) -> str:
    """Private (the default scope), cached: answers how many times it really ran so far."""
    _remember_runs[0] += 1
    return f"{key}: run {_remember_runs[0]}"
