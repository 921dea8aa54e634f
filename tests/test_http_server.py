"""The running server over real sockets: HTTP/1.1 behaviour and Streamable HTTP POST rules."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import orjson
import pytest
from conftest import RunningServer, start_server, stop_server
from httpclient import MCP_HEADERS, RawClient, client_request_bytes, rpc_bytes

from mcp_fast.wire.events import Request
from mcp_fast.wire.responder import Responder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("http"), "--max-body-size", "64K", "--stateless")
    try:
        yield running
    finally:
        stop_server(running)
    assert "Traceback" not in running.log(), running.log()


def call(server: RunningServer, data: bytes) -> tuple[int, dict[str, str], bytes]:
    with RawClient(server.port) as client:
        client.send(data)
        response = client.read_response()
        return response.status, response.headers, response.body


# -- JSON-RPC over POST ---------------------------------------------------------------


def test_tools_call_echo_answers_json(server: RunningServer) -> None:
    status, headers, body = call(
        server, rpc_bytes("tools/call", {"name": "echo", "arguments": {"message": "hi"}})
    )
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert orjson.loads(body) == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"content": [{"type": "text", "text": "hi"}], "isError": False},
    }


def test_responses_carry_a_current_date(server: RunningServer) -> None:
    """RFC 9110 section 6.6.1: an origin server with a clock sends Date (IMF-fixdate)."""
    with RawClient(server.port) as client:
        client.send(rpc_bytes("ping"))
        response = client.read_response()
    sent = parsedate_to_datetime(response.headers["date"])
    assert response.headers["date"].endswith(" GMT")
    assert abs(sent.timestamp() - time.time()) < 5


def test_initialize_negotiates_version(server: RunningServer) -> None:
    params = {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    }
    status, _, body = call(server, rpc_bytes("initialize", params))
    result = orjson.loads(body)["result"]
    assert status == 200
    assert result["protocolVersion"] == "2025-06-18"
    assert result["serverInfo"]["name"] == "mcp-fast-conformance"
    assert {"tools", "resources", "prompts", "logging", "completions"} <= set(result["capabilities"])
    params["protocolVersion"] = "1999-01-01"
    _, _, body = call(server, rpc_bytes("initialize", params))
    assert orjson.loads(body)["result"]["protocolVersion"] == "2025-11-25"


def test_notification_and_response_get_202(server: RunningServer) -> None:
    status, _, body = call(server, rpc_bytes("notifications/initialized", request_id=None))
    assert (status, body) == (202, b"")
    response = orjson.dumps({"jsonrpc": "2.0", "id": 7, "result": {}})
    status, _, body = call(server, client_request_bytes("POST", "/mcp", response, MCP_HEADERS))
    assert (status, body) == (202, b"")


def test_progress_and_logs_switch_the_answer_to_sse(server: RunningServer) -> None:
    params = {"name": "test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": "p1"}}
    with RawClient(server.port) as client:
        client.send(rpc_bytes("tools/call", params))
        response = client.read_response()
    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    messages = response.sse_messages()
    progress = [m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"]
    assert progress == [0, 50, 100]
    assert messages[-1]["id"] == 1 and "result" in messages[-1]


def test_json_only_client_gets_json_even_when_tool_notifies(server: RunningServer) -> None:
    params = {"name": "test_tool_with_logging", "arguments": {}}
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    status, response_headers, body = call(
        server,
        client_request_bytes(
            "POST",
            "/mcp",
            orjson.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": params}),
            headers,
        ),
    )
    assert status == 200
    assert response_headers["content-type"] == "application/json"
    assert orjson.loads(body)["result"]["content"][0]["text"] == "Logging test completed"


@pytest.mark.parametrize(
    ("body", "code", "status"),
    [
        (b"{not json", -32700, 400),
        (b'{"jsonrpc":"2.0","id":1,"method":"x"', -32700, 400),
        (b'"just a string"', -32600, 400),
        (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', -32600, 400),
        (b'{"jsonrpc":"2.0","id":1,"method":5}', -32600, 400),
        (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', -32600, 400),
        (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', -32600, 400),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}', -32600, 400),
        (b'{"jsonrpc":"2.0","id":1,"method":"no/such/method"}', -32601, 200),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"nope"}}', -32602, 200),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}', -32602, 200),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"test://missing"}}',
            -32002,
            200,
        ),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"bogus"}}', -32602, 200),
        (b'{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"loud"}}', -32602, 200),
        (b"[" * 5000 + b"]" * 5000, -32700, 400),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","x":NaN}', -32700, 400),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","x":"\xff\xfe"}', -32700, 400),
    ],
)
def test_bad_messages_get_the_right_error(server: RunningServer, body: bytes, code: int, status: int) -> None:
    got_status, headers, response = call(server, client_request_bytes("POST", "/mcp", body, MCP_HEADERS))
    assert got_status == status
    assert headers["content-type"] == "application/json"
    error = orjson.loads(response)["error"]
    assert error["code"] == code
    assert error["message"] and "Traceback" not in error["message"]


def test_error_echoes_the_request_id(server: RunningServer) -> None:
    _, _, body = call(server, rpc_bytes("no/such", request_id="abc"))
    assert orjson.loads(body)["id"] == "abc"
    _, _, body = call(
        server, client_request_bytes("POST", "/mcp", b'{"jsonrpc":"1.0","id":9,"method":"x"}', MCP_HEADERS)
    )
    assert orjson.loads(body)["id"] == 9


def test_invalid_tool_arguments_follow_the_version(server: RunningServer) -> None:
    params = {"name": "echo", "arguments": {"message": 5}}
    _, _, body = call(server, rpc_bytes("tools/call", params, **{"MCP-Protocol-Version": "2025-11-25"}))
    result = orjson.loads(body)["result"]
    assert result["isError"] is True
    assert "message" in result["content"][0]["text"]
    _, _, body = call(server, rpc_bytes("tools/call", params, **{"MCP-Protocol-Version": "2025-06-18"}))
    error = orjson.loads(body)["error"]
    assert error["code"] == -32602 and "message" in error["message"]


def test_structured_output_only_from_2025_06_18(server: RunningServer) -> None:
    params = {"name": "add", "arguments": {"a": 2, "b": 3}}
    _, _, body = call(server, rpc_bytes("tools/call", params, **{"MCP-Protocol-Version": "2025-06-18"}))
    result = orjson.loads(body)["result"]
    assert result["structuredContent"] == {"a": 2, "b": 3, "sum": 5}
    assert orjson.loads(result["content"][0]["text"]) == {"a": 2, "b": 3, "sum": 5}
    _, _, body = call(server, rpc_bytes("tools/call", params))  # no header: 2025-03-26
    assert "structuredContent" not in orjson.loads(body)["result"]


def test_batch_only_under_2025_03_26(server: RunningServer) -> None:
    batch = orjson.dumps(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "ping"},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": "b"}},
            },
            {"jsonrpc": "2.0", "id": 3},
        ]
    )
    status, _, body = call(server, client_request_bytes("POST", "/mcp", batch, MCP_HEADERS))
    assert status == 200
    answers = {item["id"]: item for item in orjson.loads(body)}
    assert answers[1]["result"] == {}
    assert answers[2]["result"]["content"][0]["text"] == "b"
    assert answers[3]["error"]["code"] == -32600
    headers = {**MCP_HEADERS, "MCP-Protocol-Version": "2025-06-18"}
    status, _, body = call(server, client_request_bytes("POST", "/mcp", batch, headers))
    assert status == 400 and orjson.loads(body)["error"]["code"] == -32600
    status, _, body = call(server, client_request_bytes("POST", "/mcp", b"[]", MCP_HEADERS))
    assert status == 400


def test_pagination_with_cursors(tmp_path: Path) -> None:
    running = start_server(tmp_path, "--page-size", "3", "--stateless")
    try:
        names: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"cursor": cursor} if cursor else {}
            _, _, body = call(running, rpc_bytes("tools/list", params))
            result = orjson.loads(body)["result"]
            assert len(result["tools"]) <= 3
            names += [tool["name"] for tool in result["tools"]]
            pages += 1
            cursor = result.get("nextCursor")
            if cursor is None:
                break
        assert pages > 2 and len(names) == len(set(names)) and "echo" in names
    finally:
        stop_server(running)


# -- Streamable HTTP header rules ------------------------------------------------------


def test_unsupported_protocol_version_is_400_with_jsonrpc_body(server: RunningServer) -> None:
    status, _, body = call(server, rpc_bytes("ping", **{"MCP-Protocol-Version": "2030-01-01"}))
    assert status == 400
    error = orjson.loads(body)["error"]
    # UnsupportedProtocolVersionError (named in 2026-07-28, also the clearest answer for 2025 clients).
    assert error["code"] == -32022
    assert error["data"]["requested"] == "2030-01-01"
    assert "2025-11-25" in error["data"]["supported"]


def test_content_type_and_accept_checks(server: RunningServer) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    status, _, _ = call(server, client_request_bytes("POST", "/mcp", body, {"Content-Type": "text/plain"}))
    assert status == 415
    status, _, _ = call(server, client_request_bytes("POST", "/mcp", body, {"Accept": "application/json"}))
    assert status == 415  # no Content-Type at all
    headers = {"Content-Type": "application/json", "Accept": "text/html"}
    status, _, _ = call(server, client_request_bytes("POST", "/mcp", body, headers))
    assert status == 406
    headers = {"Content-Type": "application/json; charset=utf-8"}  # no Accept: anything goes
    status, _, response = call(server, client_request_bytes("POST", "/mcp", body, headers))
    assert status == 200 and orjson.loads(response)["result"] == {}


def test_sse_only_client_gets_sse(server: RunningServer) -> None:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    with RawClient(server.port) as client:
        client.send(
            client_request_bytes("POST", "/mcp", b'{"jsonrpc":"2.0","id":4,"method":"ping"}', headers)
        )
        response = client.read_response()
    assert response.headers["content-type"] == "text/event-stream"
    assert response.sse_messages() == [{"jsonrpc": "2.0", "id": 4, "result": {}}]


def test_origin_and_host_validation(server: RunningServer) -> None:
    evil = {**MCP_HEADERS, "Origin": "http://evil.example.com"}
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    status, _, _ = call(server, client_request_bytes("POST", "/mcp", body, evil))
    assert status == 403
    status, _, _ = call(
        server, client_request_bytes("POST", "/mcp", body, MCP_HEADERS, host="evil.example.com")
    )
    assert status == 421
    good = {**MCP_HEADERS, "Origin": f"http://localhost:{server.port}"}
    status, _, _ = call(
        server, client_request_bytes("POST", "/mcp", body, good, host=f"localhost:{server.port}")
    )
    assert status == 200


def test_get_and_delete_are_405_with_allow(server: RunningServer) -> None:
    for method in ("GET", "DELETE", "PUT"):
        status, headers, _ = call(server, client_request_bytes(method, "/mcp"))
        assert status == 405
        assert headers["allow"] == "POST"


def test_unknown_path_is_404(server: RunningServer) -> None:
    status, _, body = call(server, client_request_bytes("POST", "/other", b"{}", MCP_HEADERS))
    assert status == 404 and b"/mcp" in body


# -- HTTP/1.1 connection behaviour ---------------------------------------------------------


def test_keep_alive_and_pipelining_keep_order(server: RunningServer) -> None:
    slow = rpc_bytes("tools/call", {"name": "test_tool_with_logging", "arguments": {}}, request_id=1)
    fast = rpc_bytes("tools/call", {"name": "echo", "arguments": {"message": "second"}}, request_id=2)
    with RawClient(server.port) as client:
        client.send(slow + fast + rpc_bytes("ping", request_id=3))
        first = client.read_response()
        second = client.read_response()
        third = client.read_response()
    assert first.sse_messages()[-1]["id"] == 1
    assert second.json()["id"] == 2 and second.json()["result"]["content"][0]["text"] == "second"
    assert third.json() == {"jsonrpc": "2.0", "id": 3, "result": {}}


def test_pipelined_requests_beyond_the_buffer_limit_all_get_answers(server: RunningServer) -> None:
    """While a slow request runs, the server stops reading once 256 KiB of further pipelined
    requests wait; when it has answered those it must read again (regression: it stayed paused
    and the client hung)."""
    slow = rpc_bytes("tools/call", {"name": "slow_report", "arguments": {"seconds": 0.3}}, request_id=0)
    pings = [rpc_bytes("ping", request_id=n) for n in range(1, 4001)]
    assert sum(map(len, pings)) > 2 * 256 * 1024
    with RawClient(server.port, timeout=20) as client:
        sender = threading.Thread(target=client.send, args=(slow + b"".join(pings),), daemon=True)
        sender.start()
        first = client.read_response()
        ids = [client.read_response().json()["id"] for _ in pings]
        sender.join(timeout=20)
    assert (
        first.sse_messages()[-1]["id"] == 0
        if first.headers["content-type"] == "text/event-stream"
        else first.json()["id"] == 0
    )
    assert ids == list(range(1, 4001))


def test_chunked_request_body(server: RunningServer) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:])) + b"0\r\n\r\n"
    head = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    status, _, response = call(server, head + chunked)
    assert status == 200 and orjson.loads(response)["result"] == {}


def test_expect_100_continue(server: RunningServer) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    head = (
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with RawClient(server.port) as client:
        client.send(head)
        interim = client._read_until(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100")
        client.send(body)
        response = client.read_response()
    assert response.status == 200 and response.json()["result"] == {}


def test_connection_close_and_http10(server: RunningServer) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    request = client_request_bytes("POST", "/mcp", body, {**MCP_HEADERS, "Connection": "close"})
    with RawClient(server.port) as client:
        client.send(request)
        assert client.read_response().status == 200
        assert client.expect_closed()
    http10 = (
        b"POST /mcp HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
    with RawClient(server.port) as client:
        client.send(http10)
        response = client.read_response()
        assert response.status == 200 and response.json()["result"] == {}
        assert client.expect_closed()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        (b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /mcp HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (b"GET /mcp HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /mcp HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400),
        (b"GET /mcp HTTP/1.1\r\nHost: x\r\n folded: 1\r\n\r\n", 400),
        (b"GET /mcp HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400),
        # A bare LF (RFC 9112 section 2.2; also test_bare_cr_or_lf_is_refused_at_once).
        (b"GET /mcp HTTP/1.1\nHost: x\r\n\r\n", 400),
        (b"GET /mcp HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400),
        (b"GET /mcp HTTP/1.1\r\n\r\n", 400),
    ],
)
def test_bad_http_gets_status_and_close(server: RunningServer, raw: bytes, status: int) -> None:
    with RawClient(server.port) as client:
        client.send(raw)
        response = client.read_response()
        assert response.status == status
        assert response.headers.get("connection") == "close"
        assert client.expect_closed()


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /mcp HTTP/1.1\nHost: x\n\n",
        b"POST /mcp HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: 2\n\n{}",
        b"GET /mcp HTTP/1.1\r\nHost: x\r\n\n",
        b"GET /mcp HTTP/1.1\rHost: x\r\r",
        b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\n{}\n0\n\n",
        b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX: y\n\n",
    ],
)
def test_bare_cr_or_lf_is_refused_at_once(server: RunningServer, raw: bytes) -> None:
    """Lines that end in a bare LF or CR (RFC 9112 section 2.2) get 400 as soon as they arrive.
    Such a head never holds a CRLFCRLF: it used to wait for the header timeout (10 s here, then
    408). The client's 3 s socket timeout would fail the read long before that."""
    with RawClient(server.port, timeout=3) as client:
        client.send(raw)
        response = client.read_response()
        assert response.status == 400
        assert response.headers.get("connection") == "close"
        assert client.expect_closed(timeout=3)


def test_body_over_limit_chunked_is_413(server: RunningServer) -> None:
    head = b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"a" * 40000
    with RawClient(server.port) as client:
        client.send(head + b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2)
        assert client.read_response().status == 413


def test_a_refused_body_still_sent_does_not_destroy_the_413(server: RunningServer) -> None:
    """Lingering close (RFC 9112 section 9.6): the client goes on sending a body the server
    refused; it must read the 413, not a connection reset, and then see the connection end."""
    chunk = b"a" * 65536
    head = b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    for _ in range(3):
        with RawClient(server.port) as client:

            def send_everything() -> None:
                with contextlib.suppress(OSError):
                    client.send(head + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 48)  # 3 MiB

            sender = threading.Thread(target=send_everything, daemon=True)
            sender.start()
            sender.join(timeout=10)  # all of it is read (and dropped) while the server lingers
            assert client.read_response().status == 413
            assert client.expect_closed()


def test_shutdown_still_serves_a_request_on_an_idle_keep_alive_connection(tmp_path: Path) -> None:
    """A proxy's pooled connection may carry a request just as the server begins to shut down:
    for a moment it is answered, with Connection: close, instead of being reset."""
    running = start_server(tmp_path, "--stateless")
    try:
        with RawClient(running.port) as client:
            client.send(rpc_bytes("ping"))
            assert client.read_response().status == 200  # now idle, keep-alive
            running.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # shutdown has begun once the listener is gone
                try:
                    socket.create_connection(("127.0.0.1", running.port), timeout=0.2).close()
                except OSError:
                    break
                time.sleep(0.01)
            client.send(rpc_bytes("ping", request_id=2))
            response = client.read_response()
            assert response.status == 200 and response.json()["id"] == 2
            assert response.headers.get("connection") == "close"
            assert client.expect_closed()
        assert running.process.wait(timeout=10) == 0
    finally:
        stop_server(running)


def test_a_get_stream_asked_for_during_shutdown_is_not_started(tmp_path: Path) -> None:
    """A stream begun in that moment would hold the process until the shutdown timeout (a proxy
    sends GET /sse on a pooled connection just as SIGTERM comes): the connection closes with
    nothing sent, which a proxy or client retries elsewhere (a GET is idempotent), and the
    process exits at once."""
    running = start_server(tmp_path, "--shutdown-timeout", "10")
    try:
        with RawClient(running.port) as client:
            client.send(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert client.read_response().status == 200  # now idle, keep-alive
            running.process.send_signal(signal.SIGTERM)
            began = time.monotonic()
            deadline = began + 5
            while time.monotonic() < deadline:  # shutdown has begun once the listener is gone
                try:
                    socket.create_connection(("127.0.0.1", running.port), timeout=0.2).close()
                except OSError:
                    break
                time.sleep(0.01)
            client.send(b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
            client.sock.settimeout(5)
            assert client.sock.recv(4096) == b"", "a stream was started during shutdown"
        assert running.process.wait(timeout=10) == 0
        assert time.monotonic() - began < 5, "the process waited for the shutdown timeout"
    finally:
        stop_server(running)


def _served(request: Request, responder: Responder) -> None:
    """An application that answers every request with 200 "served"."""
    responder.respond(200, [(b"content-type", b"text/plain")], b"served")


async def _read_all(client: socket.socket) -> bytes:
    """What a non-blocking socket receives until the server closes it."""
    answer = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.get_running_loop().sock_recv(client, 4096):
            answer += chunk
    return answer


def test_connections_in_the_accept_queue_at_shutdown_are_served() -> None:
    """Connected (the kernel's handshake), request sent, not yet accepted when shutdown
    begins: closing the listening socket would reset it after the request went out, which a
    proxy cannot retry (nginx answers a POST 502). It is accepted and answered instead."""
    import asyncio

    import uvloop

    from mcp_fast.net.server import HttpServer, NetSettings

    async def scenario() -> bytes:
        server = HttpServer(_served, NetSettings(port=0))
        await server.start()
        port = server.sockets[0].getsockname()[1]
        # The loop does not run from here to stop(): the connection stays in the accept queue.
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}")
        client.setblocking(False)
        reader = asyncio.get_running_loop().create_task(_read_all(client))
        await server.stop()  # closes the listener before anything else runs
        try:
            return await asyncio.wait_for(reader, 5)
        finally:
            client.close()

    for run in (uvloop.run, asyncio.run):  # uvloop, as the server runs, and asyncio's own loop
        answer = run(scenario())
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"served"), (run, answer)


def test_a_connection_accepted_just_before_shutdown_does_not_hold_the_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Accepted by the loop just before shutdown began, a connection's ``connection_made`` runs
    only after shutdown told every connection it knew (uvloop makes the protocol as it accepts
    and calls it on the next turn). It learns of the shutdown as it starts: its request is
    answered with Connection: close, and stop() returns at once. Missed, it served with
    keep-alive, idled for the keep-alive timeout (75 s) and held the process until the shutdown
    timeout: behind nginx, which sent the stopping instance nothing more, the rolling restarts
    that took the whole 10 s (issue 16)."""
    import asyncio

    import uvloop

    from mcp_fast.net.connection import HttpConnection
    from mcp_fast.net.server import HttpServer, NetSettings

    async def scenario() -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        server = HttpServer(_served, NetSettings(port=0, shutdown_timeout=5.0))
        made: list[HttpConnection] = []
        make = server._make_protocol

        def counting() -> HttpConnection:
            made.append(make())
            return made[-1]

        server._make_protocol = counting  # type: ignore[method-assign]
        await server.start()
        port = server.sockets[0].getsockname()[1]
        # A proxy's pooled connection, idle: shutdown closes it after its grace (1 s).
        pooled_reader, pooled = await asyncio.open_connection("127.0.0.1", port)
        pooled.write(b"GET /first HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await pooled_reader.readuntil(b"served")
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        client.setblocking(False)
        reader = loop.create_task(_read_all(client))
        while len(made) < 2:  # until the loop accepts it (and makes its protocol)
            await asyncio.sleep(0)
        assert len(server.connections) == 1, "connection_made ran already: the case is not exercised"
        began = loop.time()
        await server.stop()  # begins before that connection_made runs
        stopped = loop.time() - began
        pooled.close()
        try:
            return await asyncio.wait_for(reader, 5), stopped
        except TimeoutError:
            return b"(not ended within 5 s)", stopped
        finally:
            client.close()

    for run in (uvloop.run, asyncio.run):  # uvloop, as the server runs, and asyncio's own loop
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mcp_fast.net"):
            answer, stopped = run(scenario())
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"served"), (run, answer)
        assert b"connection: close" in answer.lower(), (run, answer)
        assert stopped < 2.5, f"{run}: stop() took {stopped:.1f} s (the shutdown timeout is 5 s)"
        assert "1 connection accepted just before shutdown began joined it as it started" in caplog.text


def test_shutdown_says_what_it_waits_for(caplog: pytest.LogCaptureFixture) -> None:
    """Waiting more than a second, the shutdown log names the connections it waits for, and at
    the shutdown timeout those it closes: an operator sees what holds the process."""
    import asyncio

    import uvloop

    from mcp_fast.net.server import HttpServer, NetSettings

    async def app(request: Request, responder: Responder) -> None:
        responder.start_stream(200, [(b"content-type", b"text/event-stream")])
        responder.send_stream(b": open\n\n")
        await asyncio.sleep(30)  # a POST stream whose handler outlives the shutdown timeout

    async def scenario() -> None:
        server = HttpServer(app, NetSettings(port=0, shutdown_timeout=1.5))
        await server.start()
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /slow?secret=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        await reader.readuntil(b": open\n\n")
        await server.stop()
        writer.close()

    with caplog.at_level(logging.INFO, logger="mcp_fast.net"):
        uvloop.run(scenario())
    waiting = [r for r in caplog.records if "still waiting for" in r.getMessage()]
    assert waiting and waiting[0].levelno == logging.INFO, caplog.text
    assert "1 connection: 1 POST /slow (a stream)" in waiting[0].getMessage(), caplog.text
    assert "secret" not in caplog.text  # the path, not the query (it may carry a session id)
    closing = [r for r in caplog.records if r.getMessage().startswith("shutdown timeout")]
    assert closing and "1 POST /slow (a stream)" in closing[0].getMessage(), caplog.text


def test_an_answer_sent_with_keep_alive_before_shutdown_keeps_its_promise() -> None:
    """Its head promised keep-alive, so a proxy takes the connection back once the answer
    ended and may send the next request at once, while the exchange is still finishing on our
    side (a handler that returns after answering, an SSE stream's last chunk). Shutdown begun
    meanwhile must not close it under that request (nginx: 502): it is answered, with
    Connection: close."""
    import asyncio

    import uvloop

    from mcp_fast.net.server import HttpServer, NetSettings

    async def app(request: Request, responder: Responder) -> None:
        responder.respond(200, [(b"content-type", b"text/plain")], request.target)
        if request.target == b"/first":
            await asyncio.sleep(0.3)  # answered; the exchange ends a moment later

    async def scenario() -> tuple[bytes, bytes]:
        loop = asyncio.get_running_loop()
        server = HttpServer(app, NetSettings(port=0))
        await server.start()
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /first HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = await reader.readuntil(b"/first")
        stopping = loop.create_task(server.stop())
        await asyncio.sleep(0.05)  # shutdown has begun; the first exchange is still running
        writer.write(b"POST /second HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        second = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await stopping
        return first, second

    first, second = uvloop.run(scenario())
    assert b"connection: close" not in first.lower()
    assert second.startswith(b"HTTP/1.1 200") and second.endswith(b"/second"), second
    assert b"connection: close" in second.lower()


def test_a_get_stream_ended_by_shutdown_leaves_its_connection_for_one_more_request() -> None:
    """Shutdown ends a GET stream; its head promised keep-alive, so a proxy may pool the
    connection as soon as the last chunk arrives and send a POST on it at once: that request
    is answered (Connection: close), not reset."""
    import asyncio

    import uvloop

    from mcp_fast.net.server import HttpServer, NetSettings

    async def app(request: Request, responder: Responder) -> None:
        if request.method == b"GET":
            responder.start_stream(200, [(b"content-type", b"text/event-stream")])
            responder.send_stream(b": open\n\n")
            await responder.wait_disconnected()  # until its client leaves (or shutdown ends it)
            responder.end_stream()
        else:
            responder.respond(200, [(b"content-type", b"text/plain")], b"posted")

    async def scenario() -> bytes:
        server = HttpServer(app, NetSettings(port=0))
        await server.start()
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await reader.readuntil(b": open\n\n\r\n")
        stopping = asyncio.get_running_loop().create_task(server.stop())
        await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)  # the stream's end
        writer.write(b"POST /p HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await stopping
        return answer

    answer = uvloop.run(scenario())
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"posted"), answer
    assert b"connection: close" in answer.lower()


def test_timeouts(tmp_path: Path) -> None:
    running = start_server(
        tmp_path, "--header-timeout", "1", "--body-timeout", "1", "--keepalive-timeout", "1", "--stateless"
    )
    try:
        with RawClient(running.port) as client:  # slowloris: a head that never ends
            client.send(b"POST /mcp HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            response = client.read_response()
            assert response.status == 408
            assert time.monotonic() - started < 4
        with RawClient(running.port) as client:  # a body that never comes
            client.send(
                b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{"
            )
            assert client.read_response().status == 408
        with RawClient(running.port) as client:  # idle keep-alive connection
            client.send(rpc_bytes("ping"))
            assert client.read_response().status == 200
            assert client.expect_closed(timeout=5)
    finally:
        stop_server(running)


def test_other_clients_unaffected_by_a_bad_one(server: RunningServer) -> None:
    with RawClient(server.port) as bad, RawClient(server.port) as good:
        bad.send(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")  # stalls mid-body
        good.send(rpc_bytes("ping"))
        assert good.read_response().json()["result"] == {}
