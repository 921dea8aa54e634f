"""A user's own app served with `python -m mcp_fast module:attr`, changing its tools at run time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import start_server, stop_server
from httpclient import MCP_HEADERS, RawClient, client_request_bytes


def post(port: int, session: str | None, method: str, params: dict[str, Any] | None = None) -> tuple[Any, dict[str, str]]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    headers = {**MCP_HEADERS, "MCP-Protocol-Version": "2025-11-25"}
    if session:
        headers["Mcp-Session-Id"] = session
    with RawClient(port) as client:
        client.send(client_request_bytes("POST", "/mcp", orjson.dumps(message), headers))
        response = client.read_response()
    return response.json(), response.headers


def test_tools_added_at_run_time_are_listed_and_announced(tmp_path: Path) -> None:
    server = start_server(tmp_path, app="tests.apps.dynamic_app:server")
    try:
        init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        result, headers = post(server.port, None, "initialize", init)
        assert result["result"]["serverInfo"]["name"] == "dynamic-app"
        assert result["result"]["capabilities"]["tools"] == {"listChanged": True}
        session = headers["mcp-session-id"]
        stream = RawClient(server.port)
        stream.send(
            client_request_bytes(
                "GET", "/mcp", b"", {"Accept": "text/event-stream", "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
            )
        )
        assert stream._read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 200")
        post(server.port, session, "tools/call", {"name": "add_tool", "arguments": {"name": "fresh"}})
        seen = b""
        deadline = time.monotonic() + 5
        while b"notifications/tools/list_changed" not in seen and time.monotonic() < deadline:
            seen += stream.sock.recv(65536)
        assert b"notifications/tools/list_changed" in seen
        names = [tool["name"] for tool in post(server.port, session, "tools/list")[0]["result"]["tools"]]
        assert "fresh" in names
        called = post(server.port, session, "tools/call", {"name": "fresh", "arguments": {}})[0]
        assert called["result"]["content"][0]["text"] == "I am fresh"
        post(server.port, session, "tools/call", {"name": "remove_tool", "arguments": {"name": "fresh"}})
        names = [tool["name"] for tool in post(server.port, session, "tools/list")[0]["result"]["tools"]]
        assert "fresh" not in names
        stream.close()
    finally:
        stop_server(server)
    assert "Traceback" not in server.log(), server.log()


def test_a_bad_app_argument_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "mcp_fast", "no_such_module_here:server"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "no module named 'no_such_module_here'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("where", ["a-file", "a-file/below"])
def test_an_unusable_fleet_dir_is_a_clear_error(tmp_path: Path, where: str) -> None:
    import subprocess
    import sys

    from conftest import ROOT

    (tmp_path / "a-file").write_text("not a directory")
    fleet_dir = tmp_path / where
    result = subprocess.run(
        [sys.executable, "-m", "mcp_fast", "--port", "0", "--fleet-dir", str(fleet_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"cannot start: --fleet-dir {fleet_dir}: " in result.stderr
    assert "Traceback" not in result.stderr
