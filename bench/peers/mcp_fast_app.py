"""The app mcp_fast serves in the benchmark: ``echo`` and ``lookup`` tools, as each peer has.

    python -m mcp_fast mcp_fast_app:server --port 8000        # with PYTHONPATH=bench/peers

The demo app (``python -m mcp_fast`` alone) has some 25 tools, so its ``tools/list`` answer would
be far larger than the peers'; with this app every server lists the same two tools. ``echo`` is
declared as in ``mcp_fast/demo.py`` less its annotations (the peers' have none), with
``inline=True``: a plain ``def`` called on the loop, as the SDK and FastMCP call a sync tool.
"""

from __future__ import annotations

import hashlib

from mcp_fast.server import MCPServer

server = MCPServer("mcp-fast-bench", "0.1.0")


@server.tool(inline=True)
def echo(message: str) -> str:
    """Echo the message back."""
    return message


@server.tool(inline=True, cache_ttl=60, cache_scope="public")
def lookup(key: str) -> str:
    """Look a key up (stands for real work: 400 rounds of PBKDF2, about 0.1 ms here). Declared
    cacheable, so mcp_fast's result cache answers repeated lookups: the cache-hit workload."""
    return hashlib.pbkdf2_hmac("sha256", key.encode(), b"mcp-fast-bench", 400).hex()
