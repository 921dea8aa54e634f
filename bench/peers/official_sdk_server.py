"""Peer: the official MCP Python SDK (``mcp`` on PyPI, 2.x) in stateless JSON mode.

Run inside the peers virtualenv (``.bench-venv/``), never the project's own environment:

    .bench-venv/bin/python bench/peers/official_sdk_server.py --port 8001

In mcp 2.x ``FastMCP`` was renamed ``mcp.server.mcpserver.MCPServer`` and the transport options
moved from the constructor to ``streamable_http_app()``/``run()``:

* ``stateless_http=True``  -> a fresh transport per POST, no ``initialize`` or ``Mcp-Session-Id``
  needed (the SDK's "legacy stateless" path, taken when ``MCP-Protocol-Version`` is one of the
  handshake versions such as 2025-06-18);
* ``json_response=True``   -> ``application/json`` bodies instead of a one-event SSE stream.

The Starlette app carries a lifespan (it runs the session manager's task group), so uvicorn must
keep ``lifespan="on"``/``"auto"``. Served the way a production user would: uvicorn, uvloop +
httptools, one worker, no access log.
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.mcpserver import MCPServer

HOST_DEFAULT = "127.0.0.1"


def build_app(host: str):  # type: ignore[no-untyped-def]
    server = MCPServer(name="bench-official-sdk", log_level="WARNING")

    @server.tool()
    def echo(message: str) -> str:
        """Echo the message back."""
        return message

    # host= only decides the SDK's DNS-rebinding allow-list (127.0.0.1:* / localhost:*).
    return server.streamable_http_app(stateless_http=True, json_response=True, host=host)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=HOST_DEFAULT)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.host),
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
