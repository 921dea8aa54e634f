"""The old HTTP+SSE transport (2024-11-05) over raw sockets: exact requests, exact answers.

Spec: docs/specification/2024-11-05/basic/transports.mdx "HTTP with SSE" (the `endpoint`
event, POSTs to that URI, server messages as `message` events, Origin validation).
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import RunningServer, start_server, stop_server
from httpclient import RawClient, client_request_bytes

JSON = {"Content-Type": "application/json"}
INIT = {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
INIT_LATEST = {**INIT, "protocolVersion": "2025-11-25"}  # structuredContent from 2025-06-18 on


class SseStream:
    """A GET on the SSE path, read event by event from its chunked body."""

    def __init__(self, port: int, path: str = "/sse", headers: dict[str, str] | None = None) -> None:
        self.client = RawClient(port)
        self.client.send(
            client_request_bytes("GET", path, b"", {"Accept": "text/event-stream", **(headers or {})})
        )
        head = self.client._read_until(b"\r\n\r\n").decode("latin-1")
        self.status = int(head.split(" ", 2)[1])
        self.headers = {
            name.strip().lower(): value.strip()
            for name, value in (line.split(":", 1) for line in head.split("\r\n")[1:])
        }
        self._text = ""

    def _more(self) -> None:
        size = int(self.client._read_until(b"\r\n").split(b";")[0], 16)
        if size == 0:
            raise EOFError("the stream ended")
        self._text += self.client._read_exact(size).decode()
        assert self.client._read_exact(2) == b"\r\n"

    def event(self) -> tuple[str, str]:
        """The next event as (event name, data); comments are skipped."""
        while True:
            while "\n\n" not in self._text:
                self._more()
            block, self._text = self._text.split("\n\n", 1)
            lines = block.split("\n")
            if all(line.startswith(":") for line in lines):
                continue
            name = next((line[7:] for line in lines if line.startswith("event: ")), "message")
            data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
            return name, data

    def message(self) -> Any:
        name, data = self.event()
        assert name == "message", (name, data)
        return orjson.loads(data)

    def close(self) -> None:
        self.client.close()


def post(port: int, uri: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    with RawClient(port) as client:
        client.send(client_request_bytes("POST", uri, body, JSON if headers is None else headers))
        response = client.read_response()
        return response.status, response.body


def rpc(request_id: Any, method: str, params: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if request_id is not None:
        message["id"] = request_id
    if params is not None:
        message["params"] = params
    return orjson.dumps(message)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("legacy-raw"), "tests.apps.transport_app:server", "--sse-keepalive", "0.2"
    )
    try:
        yield running
    finally:
        stop_server(running)
    assert "Traceback" not in running.log(), running.log()


@pytest.fixture
def stream(server: RunningServer) -> Iterator[tuple[SseStream, str]]:
    """An open stream and the messages URI its endpoint event named."""
    opened = SseStream(server.port)
    name, uri = opened.event()
    assert name == "endpoint"
    try:
        yield opened, uri
    finally:
        opened.close()


def test_stream_starts_with_the_endpoint_event(server: RunningServer) -> None:
    opened = SseStream(server.port)
    try:
        assert opened.status == 200
        assert opened.headers["content-type"] == "text/event-stream"
        name, uri = opened.event()
        assert name == "endpoint"
        assert re.fullmatch(r"/messages\?session_id=[0-9a-f]{32}", uri), uri
    finally:
        opened.close()


def test_messages_are_accepted_and_answered_on_the_stream(
    server: RunningServer, stream: tuple[SseStream, str]
) -> None:
    events, uri = stream
    assert post(server.port, uri, rpc(1, "tools/list")) == (202, b"")
    before = events.message()  # lifecycle: only ping before initialize
    assert before["id"] == 1 and before["error"]["code"] == -32600
    assert post(server.port, uri, rpc(2, "ping")) == (202, b"")
    assert events.message() == {"jsonrpc": "2.0", "id": 2, "result": {}}
    assert post(server.port, uri, rpc(3, "initialize", INIT))[0] == 202
    assert events.message()["result"]["protocolVersion"] == "2024-11-05"
    assert post(server.port, uri, rpc(None, "notifications/initialized"))[0] == 202
    assert (
        post(server.port, uri, rpc(4, "tools/call", {"name": "echo", "arguments": {"message": "m"}}))[0]
        == 202
    )
    assert events.message()["result"]["content"][0]["text"] == "m"
    assert post(server.port, uri, rpc(5, "no/such/method"))[0] == 202
    assert events.message()["error"]["code"] == -32601  # a method error is a response, on the stream


def test_the_result_cache_keeps_private_results_per_session(server: RunningServer) -> None:
    """The server's result cache serves HTTP+SSE sessions too; a private result is per session."""

    def remember(events: SseStream, uri: str, request_id: int, key: str) -> str:
        body = rpc(request_id, "tools/call", {"name": "remember", "arguments": {"key": key}})
        assert post(server.port, uri, body)[0] == 202
        answer = events.message()
        assert answer["id"] == request_id
        return str(answer["result"]["content"][0]["text"])

    sessions = [SseStream(server.port), SseStream(server.port)]
    try:
        uris = []
        for events in sessions:
            uri = events.event()[1]
            assert post(server.port, uri, rpc(0, "initialize", INIT))[0] == 202
            events.message()
            uris.append(uri)
        first = remember(sessions[0], uris[0], 1, "k")
        assert remember(sessions[0], uris[0], 2, "k") == first  # kept for this session
        other = remember(sessions[1], uris[1], 1, "k")
        assert other != first  # ran again for the other session
        assert remember(sessions[1], uris[1], 2, "k") == other
    finally:
        for events in sessions:
            events.close()


def test_refusals(server: RunningServer, stream: tuple[SseStream, str]) -> None:
    _, uri = stream
    ping = rpc(1, "ping")
    assert post(server.port, "/messages", ping)[0] == 400  # no session_id
    assert post(server.port, "/messages?session_id=" + "0" * 32, ping)[0] == 404
    assert post(server.port, uri, ping, {"Content-Type": "text/plain"})[0] == 415
    status, body = post(server.port, uri, b"{not json")
    assert (
        status == 400 and orjson.loads(body)["error"]["code"] == -32700 and orjson.loads(body)["id"] is None
    )
    status, body = post(server.port, uri, b'{"jsonrpc":"2.0","id":9,"method":7}')
    assert status == 400 and orjson.loads(body)["id"] == 9 and orjson.loads(body)["error"]["code"] == -32600
    status, body = post(server.port, uri, b"[]")  # no batches before initialize (nor in 2024-11-05)
    assert status == 400 and orjson.loads(body)["error"]["code"] == -32600
    with RawClient(server.port) as client:
        client.send(client_request_bytes("GET", uri, b""))
        response = client.read_response()
        assert response.status == 405 and response.headers["allow"] == "POST"
    assert post(server.port, "/sse", ping)[0] == 405
    status, body = post(server.port, "/elsewhere", ping)
    assert status == 404 and b"/mcp" in body


def test_dns_rebinding_protection(server: RunningServer, stream: tuple[SseStream, str]) -> None:
    """Security Warning: Origin is validated on every connection, as on the Streamable endpoint."""
    _, uri = stream
    evil = {"Origin": "http://evil.example.com"}
    assert post(server.port, uri, rpc(1, "ping"), {**JSON, **evil})[0] == 403
    opened = SseStream(server.port, headers=evil)
    assert opened.status == 403
    opened.close()
    with RawClient(server.port) as client:
        client.send(client_request_bytes("GET", "/sse", b"", host="evil.example.com"))
        assert client.read_response().status == 421
    assert post(server.port, uri, rpc(2, "ping"), {**JSON, "Origin": "http://localhost:3000"})[0] == 202


def test_idle_stream_gets_keepalive_comments(server: RunningServer, stream: tuple[SseStream, str]) -> None:
    events, _ = stream
    deadline = time.monotonic() + 10
    while ": keep-alive" not in events._text:
        assert time.monotonic() < deadline
        events._more()


def test_closing_the_stream_ends_the_session_and_cancels_its_requests(server: RunningServer) -> None:
    events = SseStream(server.port)
    _, uri = events.event()
    assert post(server.port, uri, rpc(0, "initialize", INIT_LATEST))[0] == 202
    events.message()
    counters = rpc(1, "tools/call", {"name": "counters", "arguments": {}})
    assert post(server.port, uri, counters)[0] == 202
    before = events.message()["result"]["structuredContent"]
    block = rpc(2, "tools/call", {"name": "block", "arguments": {}, "_meta": {"progressToken": "t"}})
    assert post(server.port, uri, block)[0] == 202
    assert events.message()["method"] == "notifications/progress"  # it runs
    events.close()
    deadline = time.monotonic() + 10
    while (status := post(server.port, uri, rpc(3, "ping"))[0]) != 404:  # noticed at once
        assert status == 202 and time.monotonic() < deadline
        time.sleep(0.01)
    # A new session sees the cancellation of the old one's request.
    fresh = SseStream(server.port)
    try:
        _, fresh_uri = fresh.event()
        post(server.port, fresh_uri, rpc(0, "initialize", INIT_LATEST))
        fresh.message()
        post(server.port, fresh_uri, counters)
        after = fresh.message()["result"]["structuredContent"]
    finally:
        fresh.close()
    assert after == {"started": before["started"] + 1, "cancelled": before["cancelled"] + 1}


def test_sigterm_sends_what_a_session_owes_before_its_stream_ends(tmp_path: Path) -> None:
    """The stream is where a session's answers go: at shutdown it ends once the requests
    running then are answered (not at once, as a Streamable HTTP GET stream does), and the
    process exits without waiting for the shutdown timeout."""
    running = start_server(tmp_path, "tests.apps.transport_app:server", "--shutdown-timeout", "10")
    try:
        events = SseStream(running.port)
        _, uri = events.event()
        assert post(running.port, uri, rpc(0, "initialize", INIT_LATEST))[0] == 202
        events.message()
        slow = rpc(1, "tools/call", {"name": "slow", "arguments": {"seconds": 1.0}})
        assert post(running.port, uri, slow)[0] == 202
        began = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        answer = events.message()
        assert answer["id"] == 1 and answer["result"]["isError"] is False, answer
        with pytest.raises(EOFError):  # and then the stream ends
            events.event()
        events.close()
        assert running.process.wait(timeout=10) == 0
        assert time.monotonic() - began < 5
    finally:
        stop_server(running)


def test_sigterm_fails_what_waits_for_an_answer_the_client_can_no_longer_send(tmp_path: Path) -> None:
    """A request waiting for the client's answer to ours (roots/list here) would hold the stream,
    and the process, until the shutdown timeout: once shutdown began the client cannot reach
    this process (the listener is closed, idle connections close after a second's grace). After
    that grace, what waits for the client fails as if the client had left; the request is
    answered, the stream ends, the process exits."""
    running = start_server(tmp_path, "tests.apps.transport_app:server", "--shutdown-timeout", "10")
    try:
        events = SseStream(running.port)
        _, uri = events.event()
        init = {**INIT_LATEST, "capabilities": {"roots": {}}}
        assert post(running.port, uri, rpc(0, "initialize", init))[0] == 202
        events.message()
        assert post(running.port, uri, rpc(1, "tools/call", {"name": "ask_roots", "arguments": {}}))[0] == 202
        asked = events.message()
        assert asked["method"] == "roots/list", asked  # never answered
        began = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        answer = events.message()
        assert answer["id"] == 1, answer
        with pytest.raises(EOFError):  # and then the stream ends
            events.event()
        events.close()
        assert running.process.wait(timeout=15) == 0
        assert time.monotonic() - began < 5, "the process waited for the shutdown timeout"
    finally:
        stop_server(running)


def test_options_move_the_paths_or_turn_the_transport_off(tmp_path: Path) -> None:
    moved = start_server(tmp_path, "--legacy-sse-path", "/events", "--legacy-messages-path", "/rpc")
    off = start_server(tmp_path, "--no-legacy-sse")
    try:
        events = SseStream(moved.port, "/events")
        name, uri = events.event()
        events.close()
        assert name == "endpoint" and uri.startswith("/rpc?session_id=")
        with RawClient(off.port) as client:
            client.send(client_request_bytes("GET", "/sse", b""))
            assert client.read_response().status == 404
    finally:
        stop_server(moved)
        stop_server(off)


def test_paths_that_clash_with_the_endpoint_are_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import ROOT

    done = subprocess.run(
        [sys.executable, "-m", "mcp_fast", "--legacy-sse-path", "/mcp", "--port", "1"],
        cwd=ROOT, capture_output=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and b"must differ" in done.stderr
