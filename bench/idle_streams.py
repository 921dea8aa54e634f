"""Idle-stream memory: server RSS per open, idle SSE stream (GET /mcp of a session).

    python bench/idle_streams.py [--streams 1000 10000] [--json bench/results/idle_streams.json]

``bench/run.py`` runs this as its idle-stream workload (``--idle-streams``); run alone it is the
same measurement without the rest of the benchmark.

For each count N: start mcp_fast (JWT sessions, the demo app), initialize N sessions, open one
GET stream per session and read its first bytes (so each stream is really open on the server),
wait for the server to settle, and report (RSS with N streams - RSS before) / N. A stream costs a
socket, a transport, a connection object, a coroutine and its session state. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INIT = (
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    b'"capabilities":{},"clientInfo":{"name":"idle-bench","version":"1"}}}'
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def initialize(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Accept: application/json, text/event-stream\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(INIT), INIT)
    )
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"mcp-session-id:"):
            return line.split(b":", 1)[1].strip().decode()
    raise RuntimeError(f"no session id in {head!r}")


async def open_stream(port: int, session_id: str) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        b"MCP-Protocol-Version: 2025-11-25\r\nMcp-Session-Id: " + session_id.encode() + b"\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"GET failed: {head[:80]!r}")
    return writer


async def measure(count: int, *, python: str = sys.executable, cpus: str | None = None) -> dict[str, float]:
    """Open ``count`` idle streams on a fresh mcp_fast; ``cpus`` pins it (``taskset -c``)."""
    port = free_port()
    pin = ["taskset", "-c", cpus] if cpus else []
    server = subprocess.Popen(
        [*pin, python, "-m", "mcp_fast", "--port", str(port), "--log-level", "warning",
         "--session-secret", "idle-bench-secret", "--sse-keepalive", "3600"],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        # Warm the code paths once so their memory is not counted per stream.
        warm = await open_stream(port, await initialize(port))
        await asyncio.sleep(0.5)
        before = rss_kib(server.pid)
        sessions = [await initialize(port) for _ in range(count)]
        writers = []
        for start in range(0, count, 200):
            batch = sessions[start : start + 200]
            writers += await asyncio.gather(*(open_stream(port, sid) for sid in batch))
        await asyncio.sleep(1.0)
        after = rss_kib(server.pid)
        for writer in [warm, *writers]:
            writer.close()
        return {
            "streams": count,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_stream": round((after - before) / count, 2),
        }
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "idle_streams.json")
    args = parser.parse_args()
    results = []
    for count in args.streams:
        result = asyncio.run(measure(count))
        results.append(result)
        print(
            f"{count:>6} idle SSE streams: RSS {result['rss_before_kib'] / 1024:.1f} -> "
            f"{result['rss_after_kib'] / 1024:.1f} MiB, {result['kib_per_stream']:.2f} KiB per stream"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
