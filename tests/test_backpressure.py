"""Backpressure: a client that stops reading can't make the server's memory grow without bound."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, rss_kib, start_server, stop_server
from httpclient import RawClient, rpc_bytes


def test_never_reading_client_is_dropped_and_memory_stays_bounded(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--stateless", "--write-timeout", "1", "--max-stream-buffer", "256K")
    try:
        with RawClient(server.port) as warm:  # load the demo app's code paths once
            warm.send(rpc_bytes("tools/call", {"name": "emit_notifications", "arguments": {"count": 10}}))
            warm.read_response()
        baseline = rss_kib(server.process.pid)
        # Ask for ~200 MB of notifications and read none of them.
        hog = socket.create_connection(("127.0.0.1", server.port))
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.sendall(
            rpc_bytes(
                "tools/call", {"name": "emit_notifications", "arguments": {"count": 200_000, "size": 1000}}
            )
        )
        peak = baseline
        deadline = time.monotonic() + 4  # write timeout is 1 s: the server gives up well before
        while time.monotonic() < deadline:
            peak = max(peak, rss_kib(server.process.pid))
            # Meanwhile a well-behaved client is served.
            with RawClient(server.port) as good:
                good.send(rpc_bytes("ping"))
                assert good.read_response().json()["result"] == {}
            time.sleep(0.2)
        hog.close()
        assert "dropping a" in server.log(), "the server kept the never-reading client"
        assert peak - baseline < 50 * 1024, f"RSS grew by {(peak - baseline) // 1024} MiB"
        # The producer was stopped: the server is idle again and keeps answering.
        time.sleep(0.5)
        assert rss_kib(server.process.pid) - baseline < 50 * 1024
        with RawClient(server.port) as good:
            good.send(rpc_bytes("ping"))
            assert good.read_response().status == 200
    finally:
        stop_server(server)
    assert "Traceback" not in server.log(), server.log()


def test_pipelining_client_that_never_reads_is_throttled(tmp_path: Path) -> None:
    """Many pipelined requests and no reads: the server stops reading rather than buffering."""
    server = start_server(tmp_path, "--stateless")
    try:
        baseline = rss_kib(server.process.pid)
        hog = socket.create_connection(("127.0.0.1", server.port))
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.setblocking(False)
        batch = rpc_bytes("tools/call", {"name": "echo", "arguments": {"message": "y" * 2000}}) * 50
        sent = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sent < 200 * 1024 * 1024:
            try:
                # Continue exactly where the last (partial) send stopped: a well-formed stream.
                sent += hog.send(batch[sent % len(batch) :])
            except BlockingIOError:
                time.sleep(0.05)  # the server stopped reading: backpressure reached us
        with RawClient(server.port) as good:
            good.send(rpc_bytes("ping"))
            assert good.read_response().status == 200
        assert rss_kib(server.process.pid) - baseline < 50 * 1024
        assert sent < 200 * 1024 * 1024, "the server read everything without pushing back"
        hog.close()
    finally:
        stop_server(server)
    assert "Traceback" not in server.log(), server.log()


WRITE_TIMEOUT = 1.0
BIG_TEXT = 12 << 20  # far more than the kernel buffers hold (tcp_wmem's maximum is 4 MiB)


@pytest.fixture(scope="module")
def write_timeout_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("write-timeout"),
        "--stateless", "--write-timeout", str(WRITE_TIMEOUT), "--max-body-size", "16M",
    )  # fmt: skip
    try:
        yield running
    finally:
        stop_server(running)
    assert "Traceback" not in running.log(), running.log()


def read_to_end(sock: socket.socket, limit: int) -> tuple[str, int]:
    """Read until the server ends the connection: ("closed" | "reset", bytes read); or
    ("still sending", n) past ``limit`` bytes, ("open", n) when nothing comes for 5 s."""
    sock.settimeout(5)
    total = 0
    try:
        while total <= limit:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return "closed", total
            total += len(chunk)
    except ConnectionResetError:
        return "reset", total
    except TimeoutError:
        return "open", total
    return "still sending", total


@pytest.mark.parametrize(
    ("arguments", "size"),
    [
        pytest.param(
            {"name": "echo", "arguments": {"message": "x" * BIG_TEXT}}, BIG_TEXT, id="a large result"
        ),
        pytest.param(
            {"name": "emit_notifications", "arguments": {"count": 200_000, "size": 1000}},
            200_000 * 1000,
            id="a stream of notifications",
        ),
    ],
)
def test_a_client_that_never_reads_is_disconnected_at_the_write_timeout(
    write_timeout_server: RunningServer, arguments: dict[str, object], size: int
) -> None:
    """--write-timeout: a client that takes nothing of its answer for that long is dropped,
    whether the answer is one large JSON body (written at once, nobody waits to drain it) or a
    stream whose producer waits. A small receive buffer, nothing read until well after the
    timeout; then the socket gives what the kernel had buffered and ends (EOF or reset) instead
    of the rest of the answer, or an open keep-alive connection."""
    server = write_timeout_server
    hog = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        hog.connect(("127.0.0.1", server.port))
        hog.sendall(rpc_bytes("tools/call", arguments))
        time.sleep(WRITE_TIMEOUT + 2.0)  # the server gives up WRITE_TIMEOUT after writing stalled
        ending, received = read_to_end(hog, size)
    finally:
        hog.close()
    assert ending in ("closed", "reset"), (ending, received)
    assert received < size // 2, received  # what the kernel buffers held, not the answer
    assert "dropping a connection whose client read nothing for 1 s" in server.log()
    with RawClient(server.port) as good:
        good.send(rpc_bytes("ping"))
        assert good.read_response().json()["result"] == {}


TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_CLOSE = 1, 4, 7


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def server_side_states(port: int) -> list[int]:
    """TCP states of the sockets whose local port is ``port`` (the listener and what it accepted)."""
    states = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if int(local.rsplit(":", 1)[1], 16) == port:
            states.append(int(state, 16))
    return states


def test_a_dropped_client_gets_a_reset_and_the_kernel_keeps_nothing_for_it(
    write_timeout_server: RunningServer,
) -> None:
    """A client that never reads, dropped at the write timeout, is dropped with a TCP reset: a
    plain close would queue the FIN behind megabytes of unsent answer, which the kernel keeps
    in FIN_WAIT1 for minutes, and the client would never see the end (nginx's
    reset_timedout_connection does the same)."""
    server = write_timeout_server
    hog = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        hog.connect(("127.0.0.1", server.port))
        hog.sendall(
            rpc_bytes(
                "tools/call", {"name": "emit_notifications", "arguments": {"count": 200_000, "size": 1000}}
            )
        )
        deadline = time.monotonic() + WRITE_TIMEOUT + 5
        while tcp_state(hog) == TCP_ESTABLISHED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tcp_state(hog) == TCP_CLOSE, "the client was not told the connection is over"
        assert TCP_FIN_WAIT1 not in server_side_states(server.port)
    finally:
        hog.close()
    assert "dropping a" in server.log()
