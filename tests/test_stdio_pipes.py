"""The stdio transport over raw pipes: exact lines in, exact lines out.

What a well-behaved client never sends (garbage, oversize lines, batches, duplicate ids), and how
the process ends (EOF with requests in flight, SIGTERM, the shutdown timeout), backpressure on
stdout, and stdin/stdout that are files rather than pipes.

Spec: docs/specification/2025-11-25/basic/transports.mdx "stdio" and basic/lifecycle.mdx
"Shutdown"; JSON-RPC 2.0 sections 5.1 (id null when the id cannot be read) and 6 (batches).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import CONFORMANCE_APP, rss_kib, with_app

ROOT = Path(__file__).resolve().parent.parent
TRANSPORT_APP = "tests.apps.transport_app:server"
TIMEOUT_S = 20.0


def init_params(version: str = "2025-11-25") -> dict[str, Any]:
    return {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}


class StdioServer:
    """`python -m mcp_fast --transport stdio` with its stdin/stdout as pipes we hold."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.log_path = tmp_path / f"stdio-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mcp_fast", *with_app(args), "--transport", "stdio"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._reader: threading.Thread | None = None

    def send_raw(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(orjson.dumps(message) + b"\n")

    def request(self, request_id: Any, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def _read_lines(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(b"")  # EOF

    def read(self, timeout: float = TIMEOUT_S) -> Any:
        """The next message on stdout (None at EOF); every line must be one JSON value."""
        if self._reader is None:
            self._reader = threading.Thread(target=self._read_lines, daemon=True)
            self._reader.start()
        line = self._lines.get(timeout=timeout)
        if not line:
            return None
        assert line.endswith(b"\n") and line.count(b"\n") == 1, line
        return orjson.loads(line)

    def read_until(self, request_id: Any) -> tuple[Any, list[Any]]:
        """Messages up to the response for ``request_id``: (that response, what came before)."""
        before: list[Any] = []
        while True:
            message = self.read()
            assert message is not None, f"EOF before the response to {request_id!r}: {before}"
            if isinstance(message, dict) and message.get("id") == request_id and "method" not in message:
                return message, before
            before.append(message)

    def initialize(self, version: str = "2025-11-25") -> None:
        self.request(0, "initialize", init_params(version))
        assert self.read_until(0)[0]["result"]["protocolVersion"] == version
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def wait(self, timeout: float = TIMEOUT_S) -> int:
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()


@pytest.fixture
def start(tmp_path: Path) -> Any:
    servers: list[StdioServer] = []

    def starter(*args: str) -> StdioServer:
        server = StdioServer(tmp_path, *args)
        servers.append(server)
        return server

    yield starter
    for server in servers:
        server.stop()
        assert "Traceback" not in server.log(), server.log()


def error_of(message: Any) -> tuple[Any, int]:
    return message["id"], message["error"]["code"]


def test_garbage_lines_get_errors_and_the_process_keeps_serving(start: Any) -> None:
    server = start()
    server.send_raw(b"not json\n")
    assert error_of(server.read()) == (None, -32700)  # JSON-RPC 2.0 5.1: id null
    server.send_raw(b"\xff\xfe{}\n")  # not UTF-8
    assert error_of(server.read()) == (None, -32700)
    server.send_raw(b'{"jsonrpc":"1.0","id":5,"method":"ping"}\n')
    assert error_of(server.read()) == (5, -32600)  # the id is echoed when it can be read
    server.send_raw(b'"a string"\n')
    assert error_of(server.read()) == (None, -32600)
    server.send_raw(b"\n   \n")  # blank lines are not messages: no answer
    # Lifecycle: before initialize only ping is served.
    server.request(6, "tools/list")
    assert error_of(server.read()) == (6, -32600)
    server.request(7, "ping")
    assert server.read() == {"jsonrpc": "2.0", "id": 7, "result": {}}
    server.initialize()
    server.request(0, "initialize", init_params())
    assert error_of(server.read()) == (0, -32600)  # once per session
    server.request("x", "no/such/method")
    assert error_of(server.read()) == ("x", -32601)
    server.request(8, "tools/call", {"name": "echo", "arguments": {"message": "still here"}})
    assert server.read()["result"]["content"][0]["text"] == "still here"


def test_oversize_line_is_refused_without_buffering_it(start: Any) -> None:
    server = start("--max-body-size", "1K")
    server.initialize()
    server.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"' + b"x" * 200_000 + b'"}}\n')
    reply = server.read()
    assert error_of(reply) == (None, -32600)
    assert "1024 bytes" in reply["error"]["message"]
    # Framing goes on after the oversize line; a line at the limit is fine.
    message = "y" * 900
    server.request(2, "tools/call", {"name": "echo", "arguments": {"message": message}})
    assert server.read()["result"]["content"][0]["text"] == message


def test_2026_requests_are_checked_like_http_without_headers(start: Any) -> None:
    """A request with the 2026-07-28 _meta envelope is served statelessly, next to the session."""
    server = start()
    envelope = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    server.request(1, "server/discover", {"_meta": envelope})
    discover = server.read()["result"]
    assert discover["resultType"] == "complete" and "2026-07-28" in discover["supportedVersions"]
    server.request(2, "tools/list", {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}})
    assert error_of(server.read()) == (2, -32602)  # clientCapabilities missing
    server.request(
        3, "tools/list", {"_meta": {**envelope, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}}
    )
    reply = server.read()
    assert error_of(reply) == (3, -32022)
    assert "2026-07-28" in reply["error"]["data"]["supported"]
    server.request(4, "tools/call", {"name": "echo", "arguments": {"message": "m"}, "_meta": envelope})
    assert server.read()["result"]["resultType"] == "complete"


def test_eof_lets_requests_in_flight_finish_then_exits_0(start: Any) -> None:
    server = start(TRANSPORT_APP)
    server.initialize()
    server.request(
        1, "tools/call", {"name": "slow", "arguments": {"seconds": 0.5}, "_meta": {"progressToken": "p"}}
    )
    assert server.read()["method"] == "notifications/progress"  # the call is running
    server.close_stdin()
    response, _ = server.read_until(1)
    assert response["result"]["content"][0]["text"] == "slept 0.5"
    assert server.read() is None  # stdout closed
    assert server.wait() == 0


def test_sigterm_lets_requests_in_flight_finish_then_exits_0(start: Any) -> None:
    server = start(TRANSPORT_APP)
    server.initialize()
    server.request(
        1, "tools/call", {"name": "slow", "arguments": {"seconds": 0.5}, "_meta": {"progressToken": "p"}}
    )
    assert server.read()["method"] == "notifications/progress"
    server.process.send_signal(signal.SIGTERM)
    response, _ = server.read_until(1)
    assert response["result"]["content"][0]["text"] == "slept 0.5"
    assert server.wait() == 0


def test_shutdown_timeout_bounds_what_runs_after_eof(start: Any) -> None:
    server = start(TRANSPORT_APP, "--shutdown-timeout", "0.3")
    server.initialize()
    server.request(1, "tools/call", {"name": "block", "arguments": {}, "_meta": {"progressToken": "p"}})
    assert server.read()["method"] == "notifications/progress"
    began = time.monotonic()
    server.close_stdin()
    assert server.read() is None  # cancelled after the timeout: no answer for it
    assert server.wait() == 0
    assert time.monotonic() - began < 10


def test_cancelled_request_gets_no_response(start: Any) -> None:
    server = start(TRANSPORT_APP)
    server.initialize()
    server.request("b", "tools/call", {"name": "block", "arguments": {}, "_meta": {"progressToken": 1}})
    assert server.read()["method"] == "notifications/progress"
    server.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "b"}})
    seen: list[Any] = []
    for attempt in range(1000):
        server.request(attempt + 10, "tools/call", {"name": "counters", "arguments": {}})
        response, before = server.read_until(attempt + 10)
        seen += before
        if response["result"]["structuredContent"]["cancelled"] == 1:
            break
    else:
        raise AssertionError("the handler was never cancelled")
    server.request("last", "ping")
    _, before = server.read_until("last")
    assert all(message.get("id") != "b" for message in seen + before)  # MUST NOT answer it


def test_duplicate_id_in_flight_is_refused(start: Any) -> None:
    server = start(TRANSPORT_APP)
    server.initialize()
    call = {"name": "slow", "arguments": {"seconds": 0.3}}
    server.request(1, "tools/call", call)
    server.request(1, "tools/call", call)
    first = server.read()
    assert error_of(first) == (1, -32600)
    assert server.read()["result"]["content"][0]["text"] == "slept 0.3"


def test_batches_follow_the_version_policy(start: Any) -> None:
    """JSON-RPC batches: only 2025-03-26 allows them; the answer is one line holding an array."""
    old = start()
    old.initialize("2025-03-26")
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "countdown", "arguments": {"steps": 1}},
        },
        {"jsonrpc": "2.0", "id": 3, "method": "initialize", "params": init_params()},
    ]
    old.send_raw(orjson.dumps(batch) + b"\n")
    answer = old.read()
    while isinstance(answer, dict):  # countdown's log messages come first, on their own lines
        assert answer["method"] == "notifications/message"
        answer = old.read()
    by_id = {item["id"]: item for item in answer}
    assert set(by_id) == {1, 2, 3}
    assert by_id[1]["result"] == {} and by_id[2]["result"]["content"][0]["text"] == "liftoff"
    assert by_id[3]["error"]["code"] == -32600
    new = start()
    new.initialize("2025-11-25")
    new.send_raw(orjson.dumps(batch[:1]) + b"\n")
    assert error_of(new.read()) == (None, -32600)


def test_a_batch_can_cancel_its_own_earlier_request(start: Any) -> None:
    """The batch's items are taken in order: the cancellation finds the request already running,
    and the array holds the other answers only (a cancelled request is not answered)."""
    server = start(TRANSPORT_APP)
    server.initialize("2025-03-26")
    batch = [
        {"jsonrpc": "2.0", "id": "b", "method": "tools/call", "params": {"name": "block", "arguments": {}}},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "b"}},
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
    ]
    server.send_raw(orjson.dumps(batch) + b"\n")
    assert server.read() == [{"jsonrpc": "2.0", "id": 1, "result": {}}]


def test_stdout_backpressure_bounds_memory(start: Any) -> None:
    """A client that stops reading: handlers wait for stdout to drain instead of buffering 40 MB."""
    server = start()
    server.initialize()
    rss_before = rss_kib(server.process.pid)
    server.request(
        1, "tools/call", {"name": "emit_notifications", "arguments": {"count": 40_000, "size": 1000}}
    )
    deadline = time.monotonic() + 1.5
    peak = rss_before
    while time.monotonic() < deadline:  # not reading stdout meanwhile
        peak = max(peak, rss_kib(server.process.pid))
        time.sleep(0.05)
    assert peak - rss_before < 16_000, (rss_before, peak)
    response, before = server.read_until(1)
    assert response["result"]["content"][0]["text"] == "sent 40000 notifications"
    assert len(before) == 40_000


def test_a_client_that_does_not_read_is_not_read_either(start: Any) -> None:
    """Pings flooded in without reading the answers: once stdout is blocked the server stops
    reading stdin, so the client's writes block instead of the server buffering 8 MB."""
    server = start()
    total = 200_000
    ping = b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n'
    written = [0]

    def flood() -> None:
        for _ in range(total):
            server.send_raw(ping)
            written[0] += 1

    writer = threading.Thread(target=flood, daemon=True)
    writer.start()
    last = -1
    deadline = time.monotonic() + 10
    while written[0] != last and time.monotonic() < deadline:  # until the writer is stuck
        last = written[0]
        time.sleep(0.2)
    assert written[0] < total // 4, written[0]
    answers = 0
    while answers < total:
        assert server.read() == {"jsonrpc": "2.0", "id": 1, "result": {}}
        answers += 1
    writer.join(TIMEOUT_S)
    assert written[0] == total


def test_files_instead_of_pipes(tmp_path: Path) -> None:
    """stdin from a file and stdout to a file (no event-loop pipes): a reader thread, blocking writes."""
    requests = tmp_path / "in.jsonl"
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init_params()},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": "f"}},
        },
    ]
    # The last message has no newline: it still counts at the end of input.
    requests.write_bytes(
        b"".join(orjson.dumps(line) + b"\n" for line in lines) + b'{"jsonrpc":"2.0","id":3,"method":"ping"}'
    )
    output = tmp_path / "out.jsonl"
    with open(requests, "rb") as stdin, open(output, "wb") as stdout:
        done = subprocess.run(
            [sys.executable, "-m", "mcp_fast", CONFORMANCE_APP, "--transport", "stdio"],
            cwd=ROOT, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, timeout=TIMEOUT_S,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    assert [answer["id"] for answer in answers] == [1, 2, 3]
    assert answers[1]["result"]["content"][0]["text"] == "f"


def test_2026_subscriptions_listen_shares_stdout_and_ends_on_cancel(start: Any) -> None:
    """draft stdio.mdx "Receiving Messages": listen deliveries are multiplexed onto stdout, tagged
    with the listen request's id; cancelling the listen stops them (no further messages for it)."""
    server = start()
    envelope = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    server.request(
        "listen", "subscriptions/listen", {"notifications": {"toolsListChanged": True}, "_meta": envelope}
    )
    ack = server.read()
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "listen"
    server.request(1, "tools/call", {"name": "test_trigger_tool_change", "arguments": {}, "_meta": envelope})
    changed, _ = server.read_until(1)[1][0], None
    assert changed["method"] == "notifications/tools/list_changed"
    assert changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "listen"
    server.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "listen"}})
    server.request(2, "tools/call", {"name": "test_trigger_tool_change", "arguments": {}, "_meta": envelope})
    response, before = server.read_until(2)
    assert before == [] and response["result"]["resultType"] == "complete"
    server.close_stdin()
    assert server.read() is None and server.wait() == 0


def test_the_result_cache_serves_stdio_too(start: Any) -> None:
    """A cache_ttl tool runs once per arguments; a private result is kept for the process's one
    client; --cache-size 0 turns the cache off."""
    server = start(TRANSPORT_APP)
    server.initialize()
    texts = []
    for request_id, key in ((1, "a"), (2, "a"), (3, "b"), (4, "a")):
        server.request(request_id, "tools/call", {"name": "remember", "arguments": {"key": key}})
        texts.append(server.read_until(request_id)[0]["result"]["content"][0]["text"])
    assert texts == ["a: run 1", "a: run 1", "b: run 2", "a: run 1"]
    uncached = start(TRANSPORT_APP, "--cache-size", "0")
    uncached.initialize()
    for request_id in (1, 2):
        uncached.request(request_id, "tools/call", {"name": "remember", "arguments": {"key": "a"}})
        text = uncached.read_until(request_id)[0]["result"]["content"][0]["text"]
        assert text == f"a: run {request_id}"
