"""Backpressure: a client that stops reading can't make the server's memory grow without bound."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from conftest import rss_kib, start_server, stop_server
from httpclient import RawClient, rpc_bytes


def test_never_reading_client_is_dropped_and_memory_stays_bounded(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, "--stateless", "--write-timeout", "1", "--max-stream-buffer", "256K"
    )
    try:
        with RawClient(server.port) as warm:  # load the demo app's code paths once
            warm.send(rpc_bytes("tools/call", {"name": "emit_notifications", "arguments": {"count": 10}}))
            warm.read_response()
        baseline = rss_kib(server.process.pid)
        # Ask for ~200 MB of notifications and read none of them.
        hog = socket.create_connection(("127.0.0.1", server.port))
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.sendall(
            rpc_bytes("tools/call", {"name": "emit_notifications", "arguments": {"count": 200_000, "size": 1000}})
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
