"""HTTP/2 over real sockets: a `python -m mcp_fast` process spoken to with h2c prior knowledge.

Clients: `H2Socket` (the `h2` library in client mode, `tests/h2client.py`), curl
(`--http2-prior-knowledge`) and the official MCP Python SDK client over httpx2 with HTTP/2 only.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import orjson
import pytest
from conftest import RunningServer, start_server, stop_server
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from h2client import MCP_HEADERS, PREFACE, H2Socket, frames_of, rpc
from httpclient import RawClient, client_request_bytes, rpc_bytes
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

LATEST = "2025-11-25"
SESSIONLESS = "2026-07-28"


def _serve(tmp_path_factory: pytest.TempPathFactory, *args: str) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("h2"), "--write-timeout", "2", *args)
    try:
        yield running
    finally:
        stop_server(running)
    assert "Traceback" not in running.log(), running.log()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Stateless: requests need no session."""
    yield from _serve(tmp_path_factory, "--stateless")


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """JWT sessions (the default mode)."""
    yield from _serve(tmp_path_factory, "--session-secret", "h2-secret")


def echo(message: str, request_id: int = 1) -> bytes:
    return rpc("tools/call", {"name": "echo", "arguments": {"message": message}}, request_id)


def text_of(message: Any) -> str:
    text: str = message["result"]["content"][0]["text"]
    return text


def initialize(client: H2Socket, version: str = LATEST) -> str:
    params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "h2", "version": "1"}}
    answer = client.call(rpc("initialize", params, 0))
    assert answer.status == 200, answer
    assert answer.message()["result"]["protocolVersion"] == version
    session = answer.headers["mcp-session-id"]
    headers = {"mcp-session-id": session, "mcp-protocol-version": version}
    assert client.call(rpc("notifications/initialized", None, None), headers).status == 202
    return session


# -- MCP over HTTP/2 ---------------------------------------------------------------------------


def test_tools_call_json(server: RunningServer) -> None:
    with H2Socket(server.port) as client:
        answer = client.call(echo("over h2"))
        assert answer.status == 200
        assert answer.headers["content-type"] == "application/json"
        assert int(answer.headers["content-length"]) == len(answer.body)
        assert text_of(answer.json()) == "over h2"
        # The connection stays open for more requests (streams 1, 3, 5 ...).
        assert text_of(client.call(echo("again", 2)).json()) == "again"


def test_tools_call_sse(server: RunningServer) -> None:
    with H2Socket(server.port) as client:
        call = rpc("tools/call", {"name": "emit_notifications", "arguments": {"count": 5, "size": 10}}, 7)
        answer = client.call(call)
        assert answer.status == 200
        assert answer.headers["content-type"] == "text/event-stream"
        messages = answer.sse_messages()
        assert [m["method"] for m in messages[:-1]] == ["notifications/message"] * 5
        assert (
            messages[-1]["id"] == 7 and messages[-1]["result"]["content"][0]["text"] == "sent 5 notifications"
        )


def test_session_initialize_then_tools_list(sessions: RunningServer) -> None:
    with H2Socket(sessions.port) as client:
        session = initialize(client)
        headers = {"mcp-session-id": session, "mcp-protocol-version": LATEST}
        answer = client.call(rpc("tools/list", {}, 2), headers)
        assert answer.status == 200
        names = {tool["name"] for tool in answer.message()["result"]["tools"]}
        assert {"echo", "emit_notifications"} <= names


def test_get_sse_stream_receives_notifications_and_ends_with_the_client_reset(
    sessions: RunningServer,
) -> None:
    with H2Socket(sessions.port) as client:
        session = initialize(client)
        headers = {"mcp-session-id": session, "mcp-protocol-version": LATEST, "accept": "text/event-stream"}
        get = client.request("GET", "/mcp", headers)
        client.flush()
        while client.answers[get].status is None or b"\n\n" not in client.answers[get].body:
            client.pump()
        assert client.answers[get].status == 200
        assert client.answers[get].headers["content-type"] == "text/event-stream"
        # A notification sent by a tool called on another stream of the same connection.
        trigger = rpc("tools/call", {"name": "test_trigger_tool_change", "arguments": {}}, 3)
        assert client.call(trigger, {"mcp-session-id": session, "mcp-protocol-version": LATEST}).status == 200
        deadline = time.monotonic() + 5
        while b"notifications/tools/list_changed" not in client.answers[get].body:
            assert time.monotonic() < deadline, bytes(client.answers[get].body)
            client.pump(deadline - time.monotonic())
        assert not client.answers[get].done
        # One GET stream per session; resetting ours (RST_STREAM) frees the place.
        second = client.request("GET", "/mcp", headers)
        client.flush()
        client.wait(second)
        assert client.answers[second].status == 409
        client.conn.reset_stream(get)
        client.flush()
        deadline = time.monotonic() + 5
        while True:
            again = client.request("GET", "/mcp", headers)
            client.flush()
            while client.answers[again].status is None:
                client.pump()
            if client.answers[again].status == 200:
                break
            assert time.monotonic() < deadline, "the GET stream stayed taken after its reset"
            time.sleep(0.05)


def test_sessionless_2026_request(server: RunningServer) -> None:
    meta = {
        "io.modelcontextprotocol/protocolVersion": SESSIONLESS,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "h2", "version": "1"},
    }
    body = rpc("tools/call", {"name": "echo", "arguments": {"message": "modern"}, "_meta": meta}, 5)
    headers = {"mcp-protocol-version": SESSIONLESS, "mcp-method": "tools/call", "mcp-name": "echo"}
    with H2Socket(server.port) as client:
        answer = client.call(body, headers)
        assert answer.status == 200, answer
        assert text_of(answer.message()) == "modern"
        assert "mcp-session-id" not in answer.headers


def test_many_concurrent_streams_on_one_connection(server: RunningServer) -> None:
    with H2Socket(server.port) as client:
        client.pump(5)  # the server's SETTINGS: its concurrency limit
        assert client.conn.remote_settings.max_concurrent_streams == 100
        sids = {}
        for i in range(100):
            body = (
                echo(f"m{i}", i)
                if i % 2
                else rpc("tools/call", {"name": "slow_report", "arguments": {"seconds": 0.2}}, i)
            )
            sids[client.request("POST", "/mcp", MCP_HEADERS, body)] = i
        client.flush()
        client.wait(*sids, timeout=30)
        for sid, i in sids.items():
            message = client.answers[sid].message()
            assert message["id"] == i
            assert text_of(message) == (f"m{i}" if i % 2 else "report ready after 0.2 s")


def test_request_body_over_the_initial_window(server: RunningServer) -> None:
    message = "b" * 300_000  # several 64 KiB windows: the server must give them back
    with H2Socket(server.port) as client:
        answer = client.call(echo(message))
        assert answer.status == 200
        assert text_of(answer.json()) == message


def test_large_response_needs_window_updates(server: RunningServer) -> None:
    message = "r" * 1_500_000
    with H2Socket(server.port) as client:
        answer = client.call(echo(message))
        assert answer.status == 200
        assert len(answer.body) > 1_500_000
        assert text_of(answer.json()) == message


def test_slow_reader_gets_everything(server: RunningServer) -> None:
    """A client that gives the window back late: the server waits, and nothing is lost."""
    with H2Socket(server.port, auto_ack=False) as client:
        call = rpc("tools/call", {"name": "emit_notifications", "arguments": {"count": 200, "size": 1000}}, 9)
        sid = client.request("POST", "/mcp", MCP_HEADERS, call)
        client.flush()
        while not client.answers[sid].done:
            before = len(client.answers[sid].body)
            client.pump()
            taken = len(client.answers[sid].body) - before
            if taken:
                time.sleep(0.01)
                client.conn.acknowledge_received_data(taken, sid)
                client.flush()
        answer = client.answers[sid]
        assert answer.ended and answer.reset is None
        messages = answer.sse_messages()
        assert len(messages) == 201 and messages[-1]["id"] == 9


def test_zero_window_stream_is_reset_after_the_write_timeout_and_others_go_on(server: RunningServer) -> None:
    with H2Socket(server.port, settings={SettingCodes.INITIAL_WINDOW_SIZE: 0}) as client:
        client.conn.increment_flow_control_window(1 << 24)
        call = rpc("tools/call", {"name": "emit_notifications", "arguments": {"count": 100, "size": 100}}, 1)
        stuck = client.request("POST", "/mcp", MCP_HEADERS, call)
        client.flush()
        client.wait(stuck, timeout=10)  # --write-timeout 2, checked about once a second
        assert client.answers[stuck].reset == ErrorCodes.CANCEL
        # The connection itself is fine: open a window for the next stream and use it.
        ok = client.request("POST", "/mcp", MCP_HEADERS, echo("fine"))
        client.conn.increment_flow_control_window(65535, ok)
        client.flush()
        client.wait(ok)
        assert text_of(client.answers[ok].json()) == "fine"


def test_http11_is_unchanged_and_upgrade_h2c_is_served_as_http11(server: RunningServer) -> None:
    with RawClient(server.port) as client:
        client.send(rpc_bytes("ping"))
        assert client.read_response().json()["result"] == {}
        # RFC 9113 section 3.1: the h2c upgrade is deprecated; the request is answered as HTTP/1.1.
        headers = {
            **MCP_HEADERS,
            "Connection": "Upgrade, HTTP2-Settings",
            "Upgrade": "h2c",
            "HTTP2-Settings": "AAMAAABkAAQAAP__",
        }
        client.send(client_request_bytes("POST", "/mcp", rpc("ping"), headers))
        response = client.read_response()
        assert response.status == 200 and response.json()["result"] == {}


def test_preface_split_byte_by_byte(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in PREFACE:
            sock.sendall(bytes([byte]))
            time.sleep(0.002)
        sock.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an empty SETTINGS
        data = sock.recv(65536)
    assert data[3] == 0x4  # the server's SETTINGS frame: it speaks HTTP/2


def test_curl_http2_prior_knowledge(server: RunningServer) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed for this test"
    result = subprocess.run(
        [curl, "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}", server.url,
         "-H", "Content-Type: application/json", "-H", "Accept: application/json, text/event-stream",
         "--data-binary", echo("via curl").decode()],
        capture_output=True, timeout=20, check=True,
    )  # fmt: skip
    body, _, status = result.stdout.rpartition(b"\n")
    assert status == b"2 200"
    assert text_of(orjson.loads(body)) == "via curl"


def test_official_sdk_client_over_http2(server: RunningServer) -> None:
    """The `mcp` SDK's streamable HTTP client on an httpx2 client that speaks HTTP/2 only."""
    versions: list[str] = []

    async def main() -> None:
        async def on_response(response: httpx2.Response) -> None:
            versions.append(response.http_version)

        http = httpx2.AsyncClient(
            http1=False, http2=True, timeout=30, event_hooks={"response": [on_response]}
        )
        async with http:
            transport = streamable_http_client(server.url, http_client=http)
            with anyio.fail_after(30):
                async with Client(transport, mode="legacy", cache=None) as sdk:
                    result = await sdk.call_tool("echo", {"message": "sdk over h2"})
                    assert result.content[0].text == "sdk over h2"  # type: ignore[union-attr]
                    progress = await sdk.call_tool("test_tool_with_progress", {})
                    assert not progress.is_error
                    tools = await sdk.list_tools()
                    assert "echo" in {tool.name for tool in tools.tools}

    anyio.run(main)
    assert versions and set(versions) == {"HTTP/2"}


# -- switches, shutdown ------------------------------------------------------------------------


def test_config_of_the_http2_options() -> None:
    from mcp_fast.config import load_config

    assert load_config([], {}).http2 is True
    assert load_config(["--no-http2"], {}).http2 is False
    assert load_config([], {"MCP_FAST_HTTP2": "off"}).http2 is False
    assert load_config(["--http2"], {"MCP_FAST_HTTP2": "0"}).http2 is True  # the command line wins
    assert load_config([], {}).h2_max_concurrent_streams == 100
    assert load_config(["--h2-max-concurrent-streams", "8"], {}).h2_max_concurrent_streams == 8


@pytest.mark.parametrize("how", ["flag", "env"])
def test_http2_can_be_switched_off(tmp_path: Path, how: str) -> None:
    if how == "flag":
        running = start_server(tmp_path, "--no-http2", "--stateless")
    else:
        running = start_server(tmp_path, "--stateless", env={"MCP_FAST_HTTP2": "false"})
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
            sock.sendall(PREFACE)
            data = sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 505 ")  # "PRI * HTTP/2.0" read as an HTTP/1.1 request line
        with RawClient(running.port) as client:
            client.send(rpc_bytes("ping"))
            assert client.read_response().status == 200
    finally:
        stop_server(running)


def test_max_concurrent_streams_option_is_advertised(tmp_path: Path) -> None:
    running = start_server(tmp_path, "--stateless", env={"MCP_FAST_H2_MAX_CONCURRENT_STREAMS": "7"})
    try:
        with H2Socket(running.port) as client:
            client.pump(5)
            assert client.conn.remote_settings.max_concurrent_streams == 7
            assert text_of(client.call(echo("seven")).json()) == "seven"
    finally:
        stop_server(running)


def test_a_connection_that_turns_to_http2_after_shutdown_began_is_shut_down_too() -> None:
    """Made before shutdown began, its HTTP/2 preface sent only after: the HTTP/2 protocol that
    takes it over learns of the shutdown (the server's connection set is draining), answers the
    request it got, sends GOAWAY and closes. Missed, it idled for the keep-alive timeout and held
    the process until the shutdown timeout."""
    import asyncio

    import uvloop
    from h2client import H2Peer

    from mcp_fast.net.server import HttpServer, NetSettings
    from mcp_fast.wire.events import Request
    from mcp_fast.wire.responder import Responder

    def app(request: Request, responder: Responder) -> None:
        responder.respond(200, [(b"content-type", b"text/plain")], b"served")

    async def scenario() -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        server = HttpServer(app, NetSettings(port=0, shutdown_timeout=5.0))
        await server.start()
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while not server.connections:
            await asyncio.sleep(0.01)
        began = loop.time()
        stopping = loop.create_task(server.stop())
        await asyncio.sleep(0.1)  # shutdown began; the connection is in its grace
        client = H2Peer()
        client.request("GET", "/x")
        writer.write(client.data())
        received = bytearray()
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(4):
                while chunk := await reader.read(65536):
                    received += chunk
        await stopping
        writer.close()
        return bytes(received), loop.time() - began

    received, stopped = uvloop.run(scenario())
    kinds = [type(frame).__name__ for frame in frames_of(received)]
    assert "HeadersFrame" in kinds and "GoAwayFrame" in kinds, kinds
    assert stopped < 3, f"stop() took {stopped:.1f} s (the shutdown timeout is 5 s)"


def test_graceful_shutdown_sends_goaway_ends_get_streams_and_finishes_requests(tmp_path: Path) -> None:
    running = start_server(tmp_path, "--session-secret", "s")
    try:
        client = H2Socket(running.port)
        session = initialize(client)
        headers = {"mcp-session-id": session, "mcp-protocol-version": LATEST}
        get = client.request("GET", "/mcp", {**headers, "accept": "text/event-stream"})
        slow = client.request(
            "POST",
            "/mcp",
            {**MCP_HEADERS, **headers},
            rpc("tools/call", {"name": "slow_report", "arguments": {"seconds": 1.0}}, 4),
        )
        client.flush()
        while client.answers[get].status is None:
            client.pump()
        running.process.send_signal(signal.SIGTERM)
        raw = bytearray()
        deadline = time.monotonic() + 8
        # The h2 client stops at a GOAWAY, so read the rest as raw frames.
        client.sock.settimeout(1)
        while time.monotonic() < deadline:
            try:
                chunk = client.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            raw += chunk
        client.close()
        frames = frames_of(bytes(raw))
        kinds = [(type(f).__name__, f.stream_id) for f in frames]
        assert ("GoAwayFrame", 0) in kinds
        goaway = next(f for f in frames if type(f).__name__ == "GoAwayFrame")
        assert goaway.error_code == 0 and goaway.last_stream_id >= slow
        # The GET stream was ended (END_STREAM), the slow request answered after the GOAWAY.
        assert any(f.stream_id == get and "END_STREAM" in f.flags for f in frames)
        assert ("HeadersFrame", slow) in kinds[kinds.index(("GoAwayFrame", 0)) :]
        assert any(f.stream_id == slow and "END_STREAM" in f.flags for f in frames)
        assert running.process.wait(timeout=10) == 0
    finally:
        stop_server(running)
    assert "Traceback" not in running.log(), running.log()
