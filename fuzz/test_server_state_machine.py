"""The whole server as a state machine over real sockets (Hypothesis RuleBasedStateMachine).

Random interleavings of initialize, tool calls (2025 sessions and 2026 sessionless), notifications,
GET streams opened and dropped, DELETE, requests cut off mid-way and pipelined garbage, against one
running `python -m mcp_fast`. Invariants: every request gets exactly one answer with its own id,
an ended session stays ended, the server never logs a traceback, and its memory stays bounded.
"""

from __future__ import annotations

import itertools
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from fuzz._support import examples, load_tests_conftest, load_tests_httpclient

_conftest = load_tests_conftest()
_http = load_tests_httpclient()
start_server, stop_server = _conftest.start_server, _conftest.stop_server
MCP_HEADERS, RawClient, client_request_bytes = _http.MCP_HEADERS, _http.RawClient, _http.client_request_bytes

SERVER: Any = None
IDS = itertools.count(1)
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def post(message: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, str], list[Any]]:
    assert SERVER is not None
    with RawClient(SERVER.port, timeout=10) as client:
        client.send(client_request_bytes("POST", "/mcp", orjson.dumps(message), {**MCP_HEADERS, **headers}))
        response = client.read_response()
    if response.headers.get("content-type") == "text/event-stream":
        return response.status, response.headers, response.sse_messages()
    return response.status, response.headers, [response.json()] if response.body else []


class ServerMachine(RuleBasedStateMachine):
    sessions = Bundle("sessions")
    streams = Bundle("streams")

    def __init__(self) -> None:
        super().__init__()
        self.ended: set[str] = set()
        self.sockets: list[socket.socket] = []

    @rule(target=sessions, version=st.sampled_from(["2025-03-26", "2025-06-18", "2025-11-25"]))
    def initialize(self, version: str) -> str:
        request_id = next(IDS)
        params = {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "fsm", "version": "1"},
        }
        status, headers, messages = post(
            {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params}, {}
        )
        assert status == 200 and messages[-1]["id"] == request_id
        assert messages[-1]["result"]["protocolVersion"] == version
        return headers["mcp-session-id"]

    @rule(
        session=sessions,
        tool=st.sampled_from(["echo", "add", "test_tool_with_progress", "test_error_handling", "nope"]),
    )
    def call(self, session: str, tool: str) -> None:
        request_id = next(IDS)
        arguments = {"echo": {"message": "m"}, "add": {"a": 1, "b": 2}}.get(tool, {})
        message = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": {"progressToken": "p"}},
        }
        status, _, messages = post(message, {"Mcp-Session-Id": session})
        if session in self.ended:
            assert status == 404
            return
        assert status == 200
        answers = [m for m in messages if "id" in m]
        assert len(answers) == 1 and answers[0]["id"] == request_id, messages
        assert ("error" in answers[0]) == (tool == "nope")

    @rule(tool=st.sampled_from(["echo", "test_logging_tool", "test_input_required_result_elicitation"]))
    def call_sessionless(self, tool: str) -> None:
        request_id = next(IDS)
        arguments = {"message": "m"} if tool == "echo" else {}
        message = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": MODERN_META},
        }
        status, _, messages = post(
            message, {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": tool}
        )
        assert status == 200 and len(messages) == 1 and messages[0]["id"] == request_id
        assert messages[0]["result"]["resultType"] in ("complete", "input_required")

    @rule(session=sessions)
    def notify(self, session: str) -> None:
        status, _, _ = post(
            {"jsonrpc": "2.0", "method": "notifications/initialized"}, {"Mcp-Session-Id": session}
        )
        assert status == (404 if session in self.ended else 202)

    @rule(target=streams, session=sessions)
    def open_stream(self, session: str) -> tuple[str, socket.socket | None]:
        assert SERVER is not None
        sock = socket.create_connection(("127.0.0.1", SERVER.port), timeout=10)
        headers = {"Accept": "text/event-stream", "Mcp-Session-Id": session}
        sock.sendall(client_request_bytes("GET", "/mcp", b"", headers))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        status = int(head.split(b" ", 2)[1]) if head else 0
        if session in self.ended:
            assert status == 404
        else:
            assert status in (200, 409)  # one GET stream per session
        self.sockets.append(sock)
        return session, sock

    @rule(stream=consumes(streams))
    def drop_stream(self, stream: tuple[str, socket.socket | None]) -> None:
        if stream[1] is not None:
            stream[1].close()

    @rule(session=consumes(sessions))
    def delete(self, session: str) -> None:
        assert SERVER is not None
        with RawClient(SERVER.port) as client:
            client.send(client_request_bytes("DELETE", "/mcp", b"", {"Mcp-Session-Id": session}))
            status = client.read_response().status
        assert status == (404 if session in self.ended else 200)
        self.ended.add(session)
        status, _, _ = post(
            {"jsonrpc": "2.0", "id": next(IDS), "method": "tools/list"}, {"Mcp-Session-Id": session}
        )
        assert status == 404

    @rule(cut=st.integers(min_value=1, max_value=120))
    def disconnect_mid_request(self, cut: int) -> None:
        assert SERVER is not None
        request = client_request_bytes(
            "POST", "/mcp", b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', MCP_HEADERS
        )
        with socket.create_connection(("127.0.0.1", SERVER.port), timeout=10) as sock:
            sock.sendall(request[: min(cut, len(request) - 1)])

    @rule(garbage=st.binary(min_size=1, max_size=64))
    def pipelined_garbage(self, garbage: bytes) -> None:
        assert SERVER is not None
        good = client_request_bytes(
            "POST",
            "/mcp",
            b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"g"}}}',
            {**MCP_HEADERS},
        )
        with RawClient(SERVER.port, timeout=10) as client:
            client.send(good + garbage)
            first = client.read_response()  # the valid request is answered first
            assert first.status in (200, 400) and (first.status == 400 or first.json()["id"] == 7)

    @invariant()
    def server_is_healthy(self) -> None:
        assert SERVER is not None
        assert SERVER.process.poll() is None, "the server exited"
        assert "Traceback" not in SERVER.log(), SERVER.log()[-3000:]
        assert rss_kib(SERVER.process.pid) < 400 * 1024

    def teardown(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.fixture(scope="module", autouse=True)
def running_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    global SERVER
    # Stateless mode would make session rules vacuous: JWT sessions with a fixed secret.
    SERVER = start_server(
        tmp_path_factory.mktemp("fsm"), "--session-secret", "fsm-secret", "--sse-keepalive", "1"
    )
    yield SERVER
    stop_server(SERVER)
    assert "Traceback" not in SERVER.log(), SERVER.log()
    SERVER = None


ServerMachine.TestCase.settings = settings(
    max_examples=examples(20),
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestServerMachine = ServerMachine.TestCase
