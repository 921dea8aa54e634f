"""Hostile clients against a real ``python -m mcp_fast`` process (127.0.0.1 only).

Each test plays one attack and checks that it gets its correct error (or a disconnect)
while a well-behaved client keeps being served. Every loop is bounded in count and time.

The server runs with its default session mode; the well-behaved client does what a real
one does (initialize, then tools/call with the Mcp-Session-Id it was given, if any).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import time
from typing import Any

import orjson
import pytest

from fuzz._support import load_tests_conftest, load_tests_httpclient

conftest = load_tests_conftest()
httpclient = load_tests_httpclient()
RawClient = httpclient.RawClient
request_bytes = httpclient.client_request_bytes
MCP_HEADERS: dict[str, str] = httpclient.MCP_HEADERS

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 2.0
SWEEP = 1.0  # the server checks deadlines once a second
HOST = "127.0.0.1"


server = conftest.module_server(
    "--header-timeout", str(HEADER_TIMEOUT),
    "--body-timeout", str(BODY_TIMEOUT),
    "--keepalive-timeout", str(KEEPALIVE_TIMEOUT),
)  # fmt: skip


# ---------------------------------------------------------------------------
# Helpers


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rpc(
    method: str, params: dict[str, Any] | None = None, request_id: int | None = 1, **headers: str
) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if request_id is not None:
        message["id"] = request_id
    if params is not None:
        message["params"] = params
    data: bytes = request_bytes("POST", "/mcp", orjson.dumps(message), {**MCP_HEADERS, **headers})
    return data


def well_behaved(port: int, timeout: float = 5.0) -> float:
    """A normal client's exchange (initialize, then echo); returns how long it took."""
    start = time.monotonic()
    with RawClient(port, timeout=timeout) as client:
        init = {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "good", "version": "1"},
        }
        client.send(rpc("initialize", init))
        response = client.read_response()
        assert response.status == 200, response
        result = (
            response.json()
            if response.headers.get("content-type") == "application/json"
            else response.sse_messages()[-1]
        )
        assert result["result"]["protocolVersion"] == "2025-11-25"
        session = (
            {"Mcp-Session-Id": response.headers["mcp-session-id"]}
            if "mcp-session-id" in response.headers
            else {}
        )
        client.send(
            rpc(
                "tools/call",
                {"name": "echo", "arguments": {"message": "still here"}},
                2,
                **{"MCP-Protocol-Version": "2025-11-25", **session},
            )
        )
        response = client.read_response()
        assert response.status == 200, response
        answer = (
            response.json()
            if response.headers.get("content-type") == "application/json"
            else response.sse_messages()[-1]
        )
        assert answer["result"]["content"] == [{"type": "text", "text": "still here"}]
    return time.monotonic() - start


def read_all(sock: socket.socket, deadline: float) -> tuple[bytes, bool]:
    """Read until EOF or the deadline; (data, closed)."""
    data = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(data), False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return bytes(data), False
        except ConnectionResetError:
            return bytes(data), True
        if not chunk:
            return bytes(data), True
        data += chunk


def status_of(data: bytes) -> int:
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data[9:12])


def responses_in(data: bytes) -> int:
    return data.count(b"HTTP/1.1 ")


def send_ignoring_reset(sock: socket.socket, data: bytes) -> None:
    # The server may answer and close before reading all of it: allowed.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def attack(port: int, payload: bytes, wait: float = 3.0) -> tuple[bytes, bool]:
    """Send ``payload`` at once and read what comes back until EOF (bounded)."""
    with socket.create_connection((HOST, port), timeout=wait) as sock:
        send_ignoring_reset(sock, payload)
        return read_all(sock, time.monotonic() + wait)


# ---------------------------------------------------------------------------
# Slow clients


def drip(
    sock: socket.socket, data: bytes, interval: float, limit: float, start: float
) -> tuple[bytes, float, bool]:
    """Send ``data`` one byte per ``interval`` until the server answers; (answer, seconds
    from ``start`` until the answer came, whether the server then closed)."""
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    try:
        for byte in data:
            if time.monotonic() - start > limit:
                break
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if sel.select(interval):
                break
        answered = time.monotonic() - start
        answer, closed = read_all(sock, time.monotonic() + 3)
        return answer, answered, closed
    finally:
        sel.close()


def test_slowloris_headers_get_408_and_close(server: Any) -> None:
    head = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    with socket.create_connection((HOST, server.port)) as sock:
        start = time.monotonic()
        sock.send(head[:5])  # the header timeout runs from the first byte of the head
        assert well_behaved(server.port) < 2.0  # served while the slow head trickles
        answer, when, closed = drip(sock, head[5:], 0.3, HEADER_TIMEOUT + SWEEP + 3, start)
    assert status_of(answer) == 408, answer
    assert b"connection: close" in answer.lower() and closed
    assert HEADER_TIMEOUT - 0.1 <= when <= HEADER_TIMEOUT + SWEEP + 1.0, when
    well_behaved(server.port)


def test_slow_body_gets_408_and_close(server: Any) -> None:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "padding": "p" * 100})
    with socket.create_connection((HOST, server.port)) as sock:
        head = request_bytes("POST", "/mcp", body, MCP_HEADERS)[: -len(body)]
        start = time.monotonic()
        sock.sendall(head)  # the body timeout runs from the end of the head
        assert well_behaved(server.port) < 2.0
        answer, when, closed = drip(sock, body, 0.3, BODY_TIMEOUT + SWEEP + 3, start)
    assert status_of(answer) == 408, answer
    assert b"connection: close" in answer.lower() and closed
    assert BODY_TIMEOUT - 0.1 <= when <= BODY_TIMEOUT + SWEEP + 1.5, when
    well_behaved(server.port)


# ---------------------------------------------------------------------------
# Many idle connections

IDLE_CONNECTIONS = 2000


def test_idle_connections_do_not_starve_others_and_are_closed(server: Any) -> None:
    pid = server.process.pid
    fds_before = open_fds(pid)
    socks: list[socket.socket] = []
    try:
        start = time.monotonic()
        for _ in range(IDLE_CONNECTIONS):
            socks.append(socket.create_connection((HOST, server.port), timeout=5))
            if time.monotonic() - start > 10:
                break
        assert len(socks) == IDLE_CONNECTIONS
        # While they are open, a well-behaved client is answered promptly.
        assert well_behaved(server.port) < 2.0
        # The keep-alive timeout closes every idle one (deadline swept once a second).
        sel = selectors.DefaultSelector()
        for sock in socks:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        open_left = set(socks)
        deadline = time.monotonic() + KEEPALIVE_TIMEOUT + SWEEP + 4
        while open_left and time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    data = conn.recv(1024)
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                assert data == b"", data  # an idle connection is closed without a response
                sel.unregister(conn)
                open_left.discard(conn)
        sel.close()
        assert not open_left, f"{len(open_left)} idle connections still open"
        well_behaved(server.port)
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + 5
    while open_fds(pid) > fds_before + 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_fds(pid) <= fds_before + 10


# ---------------------------------------------------------------------------
# A client that sends and never reads


def test_never_reading_pipelining_client_is_bounded(server: Any) -> None:
    pid = server.process.pid
    well_behaved(server.port)
    baseline = conftest.rss_kib(pid)
    one = rpc("tools/call", {"name": "echo", "arguments": {"message": "y" * 4000}})
    batch = one * 64
    hog = socket.create_connection((HOST, server.port))
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.setblocking(False)
    sent, peak = 0, baseline
    cap = 128 * 1024 * 1024
    deadline = time.monotonic() + 4
    stalled_since: float | None = None
    try:
        while time.monotonic() < deadline and sent < cap:
            try:
                sent += hog.send(batch[sent % len(batch) :])
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 1.0:
                    break  # the server stopped reading from us: backpressure reached the client
                time.sleep(0.02)
            except (BrokenPipeError, ConnectionResetError):
                break  # dropped: also bounded
            peak = max(peak, conftest.rss_kib(pid))
        # Meanwhile (the hog still connected) others are served.
        assert well_behaved(server.port) < 2.0
        peak = max(peak, conftest.rss_kib(pid))
    finally:
        hog.close()
    assert sent < cap, "the server read 128 MiB of requests without pushing back"
    assert peak - baseline < 64 * 1024, f"RSS grew by {(peak - baseline) // 1024} MiB"
    well_behaved(server.port)


# ---------------------------------------------------------------------------
# Request smuggling: refused with an error and a close, the smuggled request never served

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
PING = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})
H = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
CHUNKED_PING = b"%x\r\n" % len(PING) + PING + b"\r\n0\r\n\r\n"

SMUGGLING = {
    "CL.TE": (
        H
        + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(CHUNKED_PING)
        + CHUNKED_PING
        + SMUGGLED,
        {400},
    ),
    "TE.CL": (
        H + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + CHUNKED_PING + SMUGGLED,
        {400},
    ),
    "CL.CL": (
        H
        + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(PING), len(PING) + len(SMUGGLED))
        + PING
        + SMUGGLED,
        {400},
    ),
    "TE.TE second coding": (
        H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n" + CHUNKED_PING + SMUGGLED,
        {400, 501},
    ),
    "TE xchunked": (H + b"Transfer-Encoding: xchunked\r\n\r\n" + CHUNKED_PING + SMUGGLED, {501}),
    "TE chunked, identity": (
        H + b"Transfer-Encoding: chunked, identity\r\n\r\n" + CHUNKED_PING + SMUGGLED,
        {400},
    ),
    "TE space before colon": (
        H + b"Transfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n" + CHUNKED_PING + SMUGGLED,
        {400},
    ),
    "TE vertical tab": (H + b"Transfer-Encoding: \x0bchunked\r\n\r\n" + CHUNKED_PING + SMUGGLED, {400}),
    "TE obs-fold": (
        H + b"X-A: b\r\n Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + CHUNKED_PING + SMUGGLED,
        {400},
    ),
    "TE folded value": (H + b"Transfer-Encoding:\r\n chunked\r\n\r\n" + CHUNKED_PING + SMUGGLED, {400}),
    "TE bare LF": (
        H + b"Transfer-Encoding: chunked\nContent-Length: 4\r\n\r\n" + CHUNKED_PING + SMUGGLED,
        {400},
    ),
    "bare LF head": (
        b"POST /mcp HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 4\n\n" + b"abcd" + SMUGGLED,
        {400},
    ),
    "NUL in header value": (
        H + b"Content-Length: %d\r\nX-A: a\x00b\r\n\r\n" % len(PING) + PING + SMUGGLED,
        {400},
    ),
    "NUL in Content-Length": (H + b"Content-Length: %d\x00\r\n\r\n" % len(PING) + PING + SMUGGLED, {400}),
    "CR in header value": (
        H + b"X-A: a\rContent-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(PING) + PING + SMUGGLED,
        {400},
    ),
    "HTTP/1.0 with TE": (
        H.replace(b"HTTP/1.1", b"HTTP/1.0") + b"Transfer-Encoding: chunked\r\n\r\n" + CHUNKED_PING + SMUGGLED,
        {400},
    ),
    "chunk size overflow": (
        H + b"Transfer-Encoding: chunked\r\n\r\n" + b"1" + b"0" * 40 + b"\r\n" + PING + SMUGGLED,
        {400, 413},
    ),
    "chunk without CRLF": (
        H + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(PING) + PING + b"XX0\r\n\r\n" + SMUGGLED,
        {400},
    ),
    "CL with plus sign": (H + b"Content-Length: +%d\r\n\r\n" % len(PING) + PING + SMUGGLED, {400}),
}


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_request_smuggling_is_refused_and_the_connection_closed(server: Any, name: str) -> None:
    payload, statuses = SMUGGLING[name]
    answer, closed = attack(server.port, payload)
    assert responses_in(answer) == 1, answer  # one error response; /smuggled is never answered
    assert status_of(answer) in statuses, answer
    assert b"connection: close" in answer.lower()
    assert closed, "the connection stayed open after a framing error"
    well_behaved(server.port)


# ---------------------------------------------------------------------------
# Size limits


def test_one_header_over_the_count_limit_is_431(server: Any) -> None:
    payload = (
        b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(100))
        + b"\r\n"
    )
    answer, closed = attack(server.port, payload)
    assert status_of(answer) == 431 and closed, answer
    well_behaved(server.port)


def test_header_flood_is_431_and_close(server: Any) -> None:
    payload = (
        b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(20_000))
        + b"\r\n"
    )
    answer, closed = attack(server.port, payload)
    assert status_of(answer) == 431 and closed, answer
    well_behaved(server.port)


def test_one_gigabyte_content_length_is_413_at_once(server: Any) -> None:
    for extra in (b"", b"Expect: 100-continue\r\n"):
        head = H + extra + b"Content-Length: %d\r\n\r\n" % (1 << 30)
        with socket.create_connection((HOST, server.port)) as sock:
            start = time.monotonic()
            sock.sendall(head + b"{" * 1000)  # the start of the body, if the server looked at it
            answer, closed = read_all(sock, start + 3)
            elapsed = time.monotonic() - start
        assert status_of(answer) == 413, answer  # not 100 Continue, and without waiting for the body
        assert closed and elapsed < 1.0, elapsed
    well_behaved(server.port)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 2_000_000 + b"]" * 2_000_000,  # 4 MB of nesting, just under the body limit
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":'
        + b"[" * 50_000
        + b"]" * 50_000
        + b"}}}",
    ],
    ids=["array-4MB", "object-100k", "in-arguments"],
)
def test_json_depth_bombs_are_parse_errors(server: Any, body: bytes) -> None:
    with RawClient(server.port, timeout=10) as client:
        start = time.monotonic()
        client.send(request_bytes("POST", "/mcp", body, MCP_HEADERS))
        response = client.read_response()
        elapsed = time.monotonic() - start
    assert response.status == 400, response
    error = response.json()["error"]
    assert error["code"] == -32700 and "Traceback" not in error["message"]
    assert elapsed < 2.0, elapsed
    well_behaved(server.port)


def test_deep_but_allowed_json_is_served(server: Any) -> None:
    """Nesting within the decoder's limit (1024) is an ordinary request."""
    body = (
        b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
        b'"clientInfo":{"name":"deep","version":"1"},"capabilities":{"experimental":{"deep":'
        + b"[" * 1000
        + b"1"
        + b"]" * 1000
        + b"}}}}"
    )
    with RawClient(server.port) as client:
        client.send(request_bytes("POST", "/mcp", body, MCP_HEADERS))
        response = client.read_response()
    assert response.status == 200, response
    well_behaved(server.port)
