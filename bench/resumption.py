"""The cost of a resumption: a client whose SSE stream broke resumes it with Last-Event-ID.

    python bench/resumption.py [--rounds 50] [--json bench/results/resumption.json]

``bench/run.py`` runs this (``--resumption``); run alone it is the same measurement without the
rest of the benchmark. Loopback only; standard library only.

A redis-server (Debian's package; installed with apt-get when missing) on a free port, and two
mcp_fast instances A and B sharing it (``--redis``, one secret, the bench app's ``burst`` tool).
Each round: initialize on A, POST ``burst`` (10 progress notifications at once, then the result
a second later) to A, read the priming event and the first notification, drop the connection,
let A write the rest; then GET with ``Last-Event-ID`` (the first notification's id) and time
from sending the GET to the 9 missed notifications received. On A the events come from its own
memory; on B from Redis (XRANGE; the stream's live end comes by XREAD BLOCK afterwards). The
figure is B's time, next to A's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
SECRET = "bench-only-resumption-secret-0123456789abcdef"
BURST = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    """redis-server, installed from Debian's package when missing."""
    for candidate in (shutil.which("redis-server"), "/usr/bin/redis-server", "/usr/sbin/redis-server"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(
        ["apt-get", "install", "-y", "-q", "redis-server"], env=env, capture_output=True
    ).returncode:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "redis-server"], env=env, capture_output=True, check=True
        )
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(found, os.X_OK):
        raise RuntimeError("redis-server is not available (Debian package redis-server)")
    return found


@contextlib.contextmanager
def running_redis(cpus: str | None = None) -> Iterator[str]:
    """A throw-away redis-server on a free loopback port (nothing saved); yields its URL."""
    port = free_port()
    command = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout:g}s")


@contextlib.contextmanager
def instance(python: str, redis_url: str, cpus: str | None) -> Iterator[int]:
    port = free_port()
    command = [
        python, "-m", "mcp_fast", "mcp_fast_app:stream_server", "--port", str(port), "--redis", redis_url,
        "--session-secret", SECRET, "--log-level", "warning",
    ]  # fmt: skip
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PEERS), str(ROOT)])}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_listening(port, process)
        deadline = time.monotonic() + 30
        while b'"status":"ready"' not in request(port, "GET", "/ready", b"", {})[2]:
            if time.monotonic() > deadline:
                raise RuntimeError("the instance never became ready (is Redis reachable?)")
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def request(
    port: int, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        lines = [
            f"{method} {path} HTTP/1.1",
            "Host: 127.0.0.1",
            "Connection: close",
            f"Content-Length: {len(body)}",
        ]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers_out = {
        k.strip().lower().decode(): v.strip().decode()
        for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    }
    return status, headers_out, rest


def initialize(port: int) -> str:
    body = json.dumps({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
    }).encode()  # fmt: skip
    _, headers, _ = request(
        port,
        "POST",
        "/mcp",
        body,
        {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"},
    )
    return headers["mcp-session-id"]


class Stream:
    """One SSE response read from a raw socket: event ids as they come."""

    def __init__(self, port: int, method: str, body: bytes, headers: dict[str, str]) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        lines = [f"{method} /mcp HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        self.buffer = b""

    def events(self, count: int) -> list[tuple[str | None, str]]:
        """The next ``count`` events (id, data), keep-alive comments skipped. (The chunked
        framing is left in the buffer: an event's lines are found between the chunk sizes.)"""
        found: list[tuple[str | None, str]] = []
        while len(found) < count:
            while b"\n\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise RuntimeError(f"the stream ended after {len(found)} events")
                self.buffer += chunk
            block, _, self.buffer = self.buffer.partition(b"\n\n")
            lines = block.decode().splitlines()
            ids = [line[3:].strip() for line in lines if line.startswith("id:")]
            data = "".join(line[5:].strip() for line in lines if line.startswith("data:"))
            if ids or data:
                found.append((ids[0] if ids else None, data))
        return found

    def close(self) -> None:
        self.sock.close()


def one_round(post_port: int, resume_port: int, session: str) -> float:
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Mcp-Session-Id": session,
        "MCP-Protocol-Version": "2025-11-25",
    }
    body = json.dumps({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "burst", "arguments": {"count": BURST, "hold": 1.0}, "_meta": {"progressToken": "b"}},
    }).encode()  # fmt: skip
    posted = Stream(post_port, "POST", body, headers)
    _priming, (first_id, _) = posted.events(2)
    posted.close()
    time.sleep(0.05)  # the burst is written (and, written behind, in Redis) meanwhile
    resume_headers = {
        "Accept": "text/event-stream",
        "Mcp-Session-Id": session,
        "MCP-Protocol-Version": "2025-11-25",
        "Last-Event-ID": str(first_id),
    }
    started = time.perf_counter()
    resumed = Stream(resume_port, "GET", b"", resume_headers)
    missed = resumed.events(BURST - 1)
    elapsed = time.perf_counter() - started
    resumed.close()
    assert all('"notifications/progress"' in data for _, data in missed), missed
    return elapsed


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 3),
        "min_ms": round(ordered[0] * 1000, 3),
    }


def measure(rounds: int = 50, python: str = sys.executable, cpus: str | None = None) -> dict[str, Any]:
    """Median and p90 of a resumption on the instance that wrote the stream and on another."""
    with running_redis() as url, instance(python, url, cpus) as port_a, instance(python, url, cpus) as port_b:
        local, remote = [], []
        for index in range(rounds + 3):  # three rounds of warm-up
            session = initialize(port_a)
            same = one_round(port_a, port_a, session)
            other = one_round(port_a, port_b, session)
            if index >= 3:
                local.append(same)
                remote.append(other)
    return {
        "rounds": rounds,
        "missed_events": BURST - 1,
        "same_instance": summary(local),
        "other_instance": summary(remote),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--cpus", default=None, help="taskset CPU list for the instances")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = measure(args.rounds, cpus=args.cpus)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
