"""--workers: pre-forked processes share the port and the session secret; SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from conftest import start_server
from httpclient import MCP_HEADERS, OpenStream, RawClient, client_request_bytes, rpc_bytes


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


def initialize_session(port: int, capabilities: dict[str, Any]) -> str:
    params = {"protocolVersion": "2025-11-25", "capabilities": capabilities, "clientInfo": {"name": "t", "version": "1"}}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}
    with RawClient(port) as client:
        client.send(client_request_bytes("POST", "/mcp", orjson.dumps(init), MCP_HEADERS))
        return client.read_response().headers["mcp-session-id"]


def ping_on_new_connections(port: int, session: str, count: int) -> list[int]:
    """The status of a ping on each of ``count`` new connections (the kernel picks the worker)."""
    statuses = []
    headers = {**MCP_HEADERS, "Mcp-Session-Id": session}
    for _ in range(count):
        with RawClient(port) as client:
            client.send(client_request_bytes("POST", "/mcp", b'{"jsonrpc":"2.0","id":2,"method":"ping"}', headers))
            statuses.append(client.read_response().status)
    return statuses


def test_workers_share_sessions_and_stop_together(tmp_path: Path) -> None:
    fleet_dirs_before = set(Path(tempfile.gettempdir()).glob("mcp_fast-fleet-*"))
    server = start_server(tmp_path, "--workers", "2")
    try:
        deadline = time.monotonic() + 5
        while len(workers := children_of(server.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) == 2, server.log()
        session = initialize_session(server.port, {})
        # New connections land on either worker; each serves the session (shared secret).
        assert ping_on_new_connections(server.port, session, 30) == [200] * 30
        # A tool's sampling request goes out on its worker's stream; the answer, POSTed on a new
        # connection, often reaches the other worker, which passes it on (the shared fleet
        # directory). The kernel picks each connection's worker: a dozen calls cross many times.
        asking = initialize_session(server.port, {"sampling": {}})
        for attempt in range(12):
            with RawClient(server.port) as client:
                params = {"name": "test_sampling", "arguments": {"prompt": f"p{attempt}"}}
                client.send(rpc_bytes("tools/call", params, 10 + attempt, **{"Mcp-Session-Id": asking}))
                stream = OpenStream(client)
                request = stream.next_message()
                assert request["method"] == "sampling/createMessage", request
                content = {"type": "text", "text": f"a{attempt}"}
                answer = {"jsonrpc": "2.0", "id": request["id"], "result": {"role": "assistant", "content": content, "model": "m"}}
                with RawClient(server.port) as other:
                    headers = {**MCP_HEADERS, "Mcp-Session-Id": asking}
                    other.send(client_request_bytes("POST", "/mcp", orjson.dumps(answer), headers))
                    assert other.read_response().status == 202
                [final] = stream.rest()
                assert final["result"]["content"][0]["text"] == f"LLM response: a{attempt}", final
        # ... and a session DELETEd on one worker is ended on both (they share a private
        # denylist directory): every new connection, whichever worker takes it, gets 404.
        with RawClient(server.port) as client:
            client.send(client_request_bytes("DELETE", "/mcp", b"", {**MCP_HEADERS, "Mcp-Session-Id": session}))
            assert client.read_response().status == 200
        time.sleep(0.3)  # the workers look at the directory every 0.1 s
        assert ping_on_new_connections(server.port, session, 30) == [404] * 30
        [fleet_dir] = set(Path(tempfile.gettempdir()).glob("mcp_fast-fleet-*")) - fleet_dirs_before
        assert (fleet_dir / "ended").is_dir()
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
    assert not fleet_dir.exists()  # the parent removes the private directory when it stops
