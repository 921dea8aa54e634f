"""Peer: FastMCP (``fastmcp`` on PyPI, jlowin/PrefectHQ) on uvicorn.

Run inside the peers virtualenv (``.bench-venv/``):

    .bench-venv/bin/python bench/peers/fastmcp_server.py --port 8003            # stateless JSON
    .bench-venv/bin/python bench/peers/fastmcp_server.py --port 8003 --sse      # stateless SSE
    .bench-venv/bin/python bench/peers/fastmcp_server.py --port 8003 --stateful # sessions, JSON

FastMCP 4.x builds on the official SDK's Streamable HTTP transport (``mcp`` 2.x) with its own
server, tool and middleware layers. ``FastMCP.http_app(stateless_http=..., json_response=...)``
returns a Starlette app with a lifespan; served the same way as the SDK peer: uvicorn, uvloop +
httptools, one worker, no access log. Its Host/Origin guard is left at its default ("auto":
loopback Host names allowed).
"""

from __future__ import annotations

import argparse
import hashlib

import uvicorn
from fastmcp import FastMCP

HOST_DEFAULT = "127.0.0.1"


def build_app(*, stateful: bool = False, sse: bool = False):  # type: ignore[no-untyped-def]
    server = FastMCP(name="bench-fastmcp")

    @server.tool
    def echo(message: str) -> str:
        """Echo the message back."""
        return message

    @server.tool
    def lookup(key: str) -> str:
        """Look a key up (the cache-hit workload; the same work as mcp_fast's bench app)."""
        return hashlib.pbkdf2_hmac("sha256", key.encode(), b"mcp-fast-bench", 400).hex()

    return server.http_app(path="/mcp", stateless_http=not stateful, json_response=not sse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=HOST_DEFAULT)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stateful", action="store_true", help="sessions (initialize, Mcp-Session-Id)")
    parser.add_argument("--sse", action="store_true", help="answer requests with text/event-stream")
    args = parser.parse_args()
    uvicorn.run(
        build_app(stateful=args.stateful, sse=args.sse),
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
