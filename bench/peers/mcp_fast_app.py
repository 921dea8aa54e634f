"""The apps mcp_fast serves in the benchmark: ``echo`` and ``lookup`` tools, as each peer has.

    python -m mcp_fast mcp_fast_app:server --port 8000        # with PYTHONPATH=bench/peers

``server`` is the app as the README teaches it: ``echo`` a plain ``@server.tool()`` on a ``def``
with default options (the headline). The variants differ in how ``echo`` is declared, for the
extra rows: ``async_server`` (``async def``), ``inline_server`` (``inline=True``: always on
the event loop) and ``offload_server`` (``offload=True``: always in the thread pool, as every
plain ``def`` ran before handlers earned their place on the loop). Every app lists the same two tools, as the peers do (the demo app, with more
tools, would make mcp_fast's tools/list answer larger than theirs).
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from mcp_fast.context import Context
from mcp_fast.server import MCPServer


def lookup_answer(key: str) -> str:
    """Stands for real work: 400 rounds of PBKDF2, about 0.1 ms here."""
    return hashlib.pbkdf2_hmac("sha256", key.encode(), b"mcp-fast-bench", 400).hex()


def _app(echo_style: str) -> MCPServer:
    app = MCPServer("mcp-fast-bench", "0.1.0")
    if echo_style == "def":

        @app.tool()
        def echo(message: str) -> str:
            """Echo the message back."""
            return message

    elif echo_style == "async":

        @app.tool()
        async def echo(message: str) -> str:
            """Echo the message back."""
            return message

    elif echo_style == "offload":

        @app.tool(offload=True)
        def echo(message: str) -> str:
            """Echo the message back."""
            return message

    else:

        @app.tool(inline=True)
        def echo(message: str) -> str:
            """Echo the message back."""
            return message

    @app.tool(cache_ttl=60, cache_scope="public")
    def lookup(key: str) -> str:
        """Look a key up. Declared cacheable, so mcp_fast's result cache answers repeated lookups:
        the cache-hit workload."""
        return lookup_answer(key)

    return app


server = _app("def")
async_server = _app("async")
inline_server = _app("inline")
offload_server = _app("offload")

# The blocking figure (bench/run.py run_blocking): a plain def that really blocks.
blocking_server = _app("def")


@blocking_server.tool()
def block(seconds: float) -> str:
    """Sleep in the handler itself (a blocking call: a database driver, a file on a slow disk)."""
    time.sleep(seconds)
    return f"slept {seconds:g}"

# The resumption figure (bench/resumption.py): a tool whose POST stream carries a burst of
# notifications, then stays open a while before its result (a client that lost the stream
# resumes it meanwhile, on the same instance or on another one of a --redis fleet).
stream_server = _app("def")


@stream_server.tool()
async def burst(ctx: Context, count: int = 10, hold: float = 1.0) -> str:
    """``count`` progress notifications at once, then the result after ``hold`` seconds."""
    for step in range(count):
        await ctx.report_progress(step, count)
    await asyncio.sleep(hold)
    return f"sent {count}"
