"""--workers: pre-forked processes share the port and the session secret; SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
from conftest import start_server
from httpclient import MCP_HEADERS, RawClient, client_request_bytes


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_workers_share_sessions_and_stop_together(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--workers", "2")
    try:
        deadline = time.monotonic() + 5
        while len(workers := children_of(server.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) == 2, server.log()
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        with RawClient(server.port) as client:
            client.send(client_request_bytes("POST", "/mcp", orjson.dumps(init), MCP_HEADERS))
            session = client.read_response().headers["mcp-session-id"]
        # New connections land on either worker; each serves the session (shared secret).
        statuses = []
        for _ in range(30):
            with RawClient(server.port) as client:
                headers = {**MCP_HEADERS, "Mcp-Session-Id": session}
                client.send(client_request_bytes("POST", "/mcp", b'{"jsonrpc":"2.0","id":2,"method":"ping"}', headers))
                statuses.append(client.read_response().status)
        assert statuses == [200] * 30
        # A worker that dies is replaced.
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = children_of(server.process.pid)  # one snapshot: a zombie may vanish between reads
            if len(now) == 2 and workers[0] not in now:
                break
            time.sleep(0.1)
        assert len(now) == 2 and workers[0] not in now, server.log()
    finally:
        server.process.terminate()
        server.process.wait(timeout=15)
    assert server.process.returncode == 0
    assert "Traceback" not in server.log(), server.log()
