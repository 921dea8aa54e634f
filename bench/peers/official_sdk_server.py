"""Peer: the official MCP Python SDK (``mcp`` on PyPI, 2.x) on uvicorn.

Run inside the peers virtualenv (``.bench-venv/``), never the project's own environment:

    .bench-venv/bin/python bench/peers/official_sdk_server.py --port 8001            # stateless JSON
    .bench-venv/bin/python bench/peers/official_sdk_server.py --port 8001 --sse      # stateless SSE
    .bench-venv/bin/python bench/peers/official_sdk_server.py --port 8001 --stateful # sessions, JSON

In mcp 2.x ``FastMCP`` was renamed ``mcp.server.mcpserver.MCPServer`` and the transport options
moved from the constructor to ``streamable_http_app()``/``run()``:

* ``stateless_http=True``  -> a fresh transport per POST, no ``initialize`` or ``Mcp-Session-Id``
  needed (the SDK's "legacy stateless" path, taken when ``MCP-Protocol-Version`` is one of the
  handshake versions such as 2025-06-18; a 2026-07-28 request takes its "modern" path);
  ``stateless_http=False`` (``--stateful``) -> ``initialize`` creates a session (``Mcp-Session-Id``)
  that later requests carry; one session may be used by many connections at once;
* ``json_response=True``   -> ``application/json`` bodies; ``False`` (``--sse``) -> every answer
  to a request is a ``text/event-stream`` (one ``message`` event), and the client must accept both
  ``application/json`` and ``text/event-stream``.

The Starlette app carries a lifespan (it runs the session manager's task group), so uvicorn must
keep ``lifespan="on"``/``"auto"``. Served the way a production user would: uvicorn, uvloop +
httptools, one worker, no access log.
"""

from __future__ import annotations

import argparse
import hashlib

import uvicorn
from mcp.server.mcpserver import MCPServer

HOST_DEFAULT = "127.0.0.1"


def build_app(host: str, *, stateful: bool = False, sse: bool = False):  # type: ignore[no-untyped-def]
    server = MCPServer(name="bench-official-sdk", log_level="WARNING")

    @server.tool()
    def echo(message: str) -> str:
        """Echo the message back."""
        return message

    @server.tool()
    def lookup(key: str) -> str:
        """Look a key up (the cache-hit workload; the same work as mcp_fast's bench app)."""
        return hashlib.pbkdf2_hmac("sha256", key.encode(), b"mcp-fast-bench", 400).hex()

    # host= only decides the SDK's DNS-rebinding allow-list (127.0.0.1:* / localhost:*).
    return server.streamable_http_app(stateless_http=not stateful, json_response=not sse, host=host)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=HOST_DEFAULT)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stateful", action="store_true", help="sessions (initialize, Mcp-Session-Id)")
    parser.add_argument("--sse", action="store_true", help="answer requests with text/event-stream")
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.host, stateful=args.stateful, sse=args.sse),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=False,
        log_level="warning",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
