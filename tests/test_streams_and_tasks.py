"""Tasks (2025-11-25, experimental), resource subscriptions and resumable streams over real sockets."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from conftest import RunningServer, start_server, stop_server
from httpclient import MCP_HEADERS, RawClient, client_request_bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("tasks"), "--session-secret", "tasks-test")
    try:
        yield running
    finally:
        stop_server(running)
    assert "Traceback" not in running.log(), running.log()


class Session:
    def __init__(self, server: RunningServer, version: str = "2025-11-25") -> None:
        self.server = server
        self.version = version
        init = self.post("initialize", {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}, session=False)
        self.session_id = init[1]["mcp-session-id"]
        self.capabilities = init[0]["result"]["capabilities"]

    def post(self, method: str, params: dict[str, Any] | None = None, session: bool = True) -> tuple[Any, dict[str, str]]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            message["params"] = params
        headers = {**MCP_HEADERS, "MCP-Protocol-Version": self.version}
        if session:
            headers["Mcp-Session-Id"] = self.session_id
        with RawClient(self.server.port) as client:
            client.send(client_request_bytes("POST", "/mcp", orjson.dumps(message), headers))
            response = client.read_response()
        body = response.sse_messages()[-1] if response.headers.get("content-type") == "text/event-stream" else response.json()
        return body, response.headers

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.post(method, params)[0]


def test_capability_and_task_support_are_advertised(server: RunningServer) -> None:
    session = Session(server)
    assert session.capabilities["tasks"] == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
    tools = {tool["name"]: tool for tool in session.call("tools/list")["result"]["tools"]}
    assert tools["slow_report"]["execution"] == {"taskSupport": "optional"}
    assert tools["batch_job"]["execution"] == {"taskSupport": "required"}
    assert "execution" not in tools["echo"]
    older = Session(server, "2025-06-18")
    assert "tasks" not in older.capabilities
    assert all("execution" not in tool for tool in older.call("tools/list")["result"]["tools"])


def test_task_lifecycle_get_and_result(server: RunningServer) -> None:
    session = Session(server)
    started = time.monotonic()
    created = session.call("tools/call", {"name": "slow_report", "arguments": {"seconds": 0.4}, "task": {"ttl": 60000}})
    assert time.monotonic() - started < 0.35, "CreateTaskResult must come before the work is done"
    task = created["result"]["task"]
    assert task["status"] == "working" and task["ttl"] == 60000
    assert task["createdAt"].endswith("Z") and "lastUpdatedAt" in task and task["pollInterval"] > 0
    polled = session.call("tasks/get", {"taskId": task["taskId"]})["result"]
    assert polled["taskId"] == task["taskId"] and polled["status"] in ("working", "completed")
    result = session.call("tasks/result", {"taskId": task["taskId"]})["result"]  # waits for the end
    assert result["content"] == [{"type": "text", "text": "report ready after 0.4 s"}]
    assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task["taskId"]}
    assert session.call("tasks/get", {"taskId": task["taskId"]})["result"]["status"] == "completed"
    listed = session.call("tasks/list")["result"]["tasks"]
    assert task["taskId"] in [item["taskId"] for item in listed]


def test_task_negotiation_errors(server: RunningServer) -> None:
    session = Session(server)
    error = session.call("tools/call", {"name": "batch_job", "arguments": {}})["error"]
    assert error["code"] == -32601 and "task" in error["message"]
    error = session.call("tools/call", {"name": "echo", "arguments": {"message": "x"}, "task": {}})["error"]
    assert error["code"] == -32601
    created = session.call("tools/call", {"name": "batch_job", "arguments": {"items": 5}, "task": {}})["result"]["task"]
    result = session.call("tasks/result", {"taskId": created["taskId"]})["result"]
    assert result["structuredContent"] == {"processed": 5}
    for method in ("tasks/get", "tasks/result", "tasks/cancel"):
        error = session.call(method, {"taskId": "no-such-task"})["error"]
        assert error["code"] == -32602 and "not found" in error["message"]


def test_tasks_belong_to_their_session(server: RunningServer) -> None:
    owner, other = Session(server), Session(server)
    created = owner.call("tools/call", {"name": "batch_job", "arguments": {}, "task": {}})["result"]["task"]
    assert other.call("tasks/get", {"taskId": created["taskId"]})["error"]["code"] == -32602
    assert created["taskId"] not in [t["taskId"] for t in other.call("tasks/list")["result"]["tasks"]]


def test_cancel_running_and_terminal_tasks(server: RunningServer) -> None:
    session = Session(server)
    created = session.call("tools/call", {"name": "slow_report", "arguments": {"seconds": 5}, "task": {}})["result"]["task"]
    cancelled = session.call("tasks/cancel", {"taskId": created["taskId"]})["result"]
    assert cancelled["status"] == "cancelled"
    assert session.call("tasks/get", {"taskId": created["taskId"]})["result"]["status"] == "cancelled"
    error = session.call("tasks/cancel", {"taskId": created["taskId"]})["error"]
    assert error["code"] == -32602 and "terminal" in error["message"]
    error = session.call("tasks/result", {"taskId": created["taskId"]})["error"]
    assert error["code"] == -32602


def test_status_notifications_reach_the_get_stream(server: RunningServer) -> None:
    session = Session(server)
    stream = RawClient(server.port)
    headers = {"Accept": "text/event-stream", "Mcp-Session-Id": session.session_id, "MCP-Protocol-Version": "2025-11-25"}
    stream.send(client_request_bytes("GET", "/mcp", b"", headers))
    head = stream._read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    created = session.call("tools/call", {"name": "batch_job", "arguments": {}, "task": {}})["result"]["task"]
    session.call("tasks/result", {"taskId": created["taskId"]})
    deadline = time.monotonic() + 5
    seen = b""
    while b"notifications/tasks/status" not in seen and time.monotonic() < deadline:
        seen += stream.sock.recv(65536)
    stream.close()
    assert b"notifications/tasks/status" in seen and created["taskId"].encode() in seen
    assert b'"status":"completed"' in seen


def test_resource_subscription_updates_reach_the_get_stream(server: RunningServer) -> None:
    session, bystander = Session(server), Session(server)
    assert session.call("resources/subscribe", {"uri": "test://watched-resource"})["result"] == {}
    streams = []
    for who in (session, bystander):
        stream = RawClient(server.port)
        headers = {"Accept": "text/event-stream", "Mcp-Session-Id": who.session_id, "MCP-Protocol-Version": "2025-11-25"}
        stream.send(client_request_bytes("GET", "/mcp", b"", headers))
        assert stream._read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 200")
        streams.append(stream)
    session.call("tools/call", {"name": "update_watched_resource", "arguments": {}})
    seen = b""
    deadline = time.monotonic() + 5
    while b"notifications/resources/updated" not in seen and time.monotonic() < deadline:
        seen += streams[0].sock.recv(65536)
    assert b'"uri":"test://watched-resource"' in seen
    streams[1].sock.settimeout(0.5)
    other = b""
    with contextlib.suppress(TimeoutError):
        other = streams[1].sock.recv(65536)
    assert b"notifications/resources/updated" not in other  # not subscribed
    assert session.call("resources/unsubscribe", {"uri": "test://watched-resource"})["result"] == {}
    for stream in streams:
        stream.close()


def test_server_closed_stream_resumes_with_last_event_id(server: RunningServer) -> None:
    """2025-11-25 polling: the server ends the POST's stream early; GET + Last-Event-ID gets the rest."""
    session = Session(server)
    message = {"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": {"name": "test_reconnection", "arguments": {}}}
    headers = {**MCP_HEADERS, "MCP-Protocol-Version": "2025-11-25", "Mcp-Session-Id": session.session_id}
    with RawClient(server.port) as client:
        client.send(client_request_bytes("POST", "/mcp", orjson.dumps(message), headers))
        response = client.read_response()  # the stream ends without the result
    assert response.headers["content-type"] == "text/event-stream"
    text = response.body.decode()
    assert "retry:" in text and "id:" in text
    assert '"id":41' not in text
    last_id = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("id:")][-1]
    get_headers = {
        "Accept": "text/event-stream",
        "Mcp-Session-Id": session.session_id,
        "MCP-Protocol-Version": "2025-11-25",
        "Last-Event-ID": last_id,
    }
    with RawClient(server.port) as client:
        client.send(client_request_bytes("GET", "/mcp", b"", get_headers))
        resumed = client.read_response()  # ends after the result
    results = [m for m in resumed.sse_messages() if m.get("id") == 41]
    assert results and results[0]["result"]["content"][0]["text"] == "Reconnection test completed successfully"
    # Another session cannot resume this stream: refused, nothing replayed.
    other = Session(server)
    get_headers["Mcp-Session-Id"] = other.session_id
    with RawClient(server.port) as client:
        client.send(client_request_bytes("GET", "/mcp", b"", get_headers))
        refused = client.read_response()
    assert refused.status == 400 and b'"id":41' not in refused.body


def sse_events(body: bytes) -> list[tuple[str, str]]:
    """(id, data) of every SSE event of a body that carries data (the priming event has none)."""
    events = []
    for block in body.decode().split("\n\n"):
        lines = block.splitlines()
        data = "\n".join(line[5:].lstrip() for line in lines if line.startswith("data:"))
        ids = [line[3:].strip() for line in lines if line.startswith("id:")]
        if data:
            events.append((ids[-1], data))
    return events


def post_stream(session: Session, request_id: int, count: int) -> list[tuple[str, str]]:
    """``emit_notifications`` on a POST of ``session``: its SSE events (count notifications,
    then the result), each with the id the event store gave it."""
    message = {
        "jsonrpc": "2.0", "id": request_id, "method": "tools/call",
        "params": {"name": "emit_notifications", "arguments": {"count": count, "size": 1}},
    }  # fmt: skip
    headers = {**MCP_HEADERS, "MCP-Protocol-Version": session.version, "Mcp-Session-Id": session.session_id}
    with RawClient(session.server.port) as client:
        client.send(client_request_bytes("POST", "/mcp", orjson.dumps(message), headers))
        response = client.read_response()
    assert response.headers["content-type"] == "text/event-stream"
    events = sse_events(response.body)
    assert len(events) == count + 1 and orjson.loads(events[-1][1])["id"] == request_id
    return events


def resume(session: Session, last_event_id: str) -> Any:
    headers = {
        "Accept": "text/event-stream",
        "Mcp-Session-Id": session.session_id,
        "MCP-Protocol-Version": session.version,
        "Last-Event-ID": last_event_id,
    }
    with RawClient(session.server.port, timeout=5) as client:
        client.send(client_request_bytes("GET", "/mcp", b"", headers))
        return client.read_response()  # a finished POST's stream: the replay, then the end


def test_a_resumed_stream_sends_only_the_events_after_last_event_id(server: RunningServer) -> None:
    """Resumability (basic/transports): the server replays what "would have been sent after the
    last event ID, on the stream that was disconnected" -- not the events the client has."""
    session = Session(server)
    events = post_stream(session, 51, 6)
    for seen in (0, 3, 5):
        resumed = resume(session, events[seen][0])
        assert resumed.status == 200
        assert sse_events(resumed.body) == events[seen + 1 :], f"resumed after event {seen}"
    # After the last event there is nothing more to send.
    resumed = resume(session, events[-1][0])
    assert resumed.status == 200 and sse_events(resumed.body) == []


def test_a_resume_from_an_evicted_event_is_refused(server: RunningServer) -> None:
    """The event store keeps the last 256 events of a stream. A client that resumes from an event
    the store has let go of is refused (400): served, it would silently miss what was dropped.
    Resuming from the last event before the kept ones still loses nothing and is served."""
    session = Session(server)
    events = post_stream(session, 52, 300)  # 301 events; the first 45 are gone
    kept = events[-256:]
    resumed = resume(session, events[-257][0])  # the client has everything before the kept ones
    assert resumed.status == 200 and sse_events(resumed.body) == kept
    for gone in (events[-258][0], events[0][0], events[0][0].rsplit("_", 1)[0] + "_0"):
        refused = resume(session, gone)
        assert refused.status == 400, gone
        error = refused.json()["error"]
        assert error["code"] == -32600 and "Last-Event-ID" in error["message"]
    # An id that never was (or belongs to no stream of this session) is refused the same way.
    for unknown in ("nosuchstream_3", "garbage", events[5][0].replace("_6", "_x")):
        assert resume(session, unknown).status == 400, unknown
