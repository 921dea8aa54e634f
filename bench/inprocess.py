#!/usr/bin/env python3
"""mcp_fast's own cost per request, in process: bytes in to bytes out, no sockets, no kernel.

    python bench/inprocess.py [--workload echo|echo_async|echo_inline|echo_stateless|sse|sessionless|list|cached|h2]
                              [--requests 200000]

``echo`` is the headline as a user writes it: a plain ``def`` tool, a JWT session, default flags.
``h2`` is the echo request over h2c (``--stateless``, as the bench's HTTP/2 rows), through the real
``Http2Connection``: one stream per request, HPACK-indexed headers as h2load sends them.

The real ``HttpConnection`` (HTTP/1.1 parser, transport, dispatcher, handler, encoder, writer)
is fed the exact bytes wrk sends on a keep-alive connection, one request per ``data_received``,
with a stand-in transport that only counts the bytes written. What it leaves out is what the
socket benchmark adds: the event loop's epoll and the kernel's TCP work (about 40 % of the
server's time per request on loopback, see bench/README.md "Profile").

A quick, repeatable figure for a code change: µs per request on this machine, and under
``valgrind --tool=callgrind`` an instruction count that does not depend on what else the machine
is doing (``--callgrind`` prints the command).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench" / "peers")]

from mcp_fast.app import build_http_server, install_event_loop  # noqa: E402
from mcp_fast.config import load_config  # noqa: E402
from mcp_fast.net.connection import ConnectionSet, HttpConnection  # noqa: E402

SESSIONLESS = "2026-07-28"
SESSION_VERSION = "2025-11-25"


class CountingTransport:
    """Just enough of a uvloop TCPTransport for HttpConnection: keeps the last writes.

    ``write``/``writelines`` are C methods (a bounded deque's), as uvloop's are, so the
    stand-in adds next to nothing to the measured cost.
    """

    def __init__(self) -> None:
        self.closed = False
        self.out: deque[bytes] = deque(maxlen=64)
        self.write = self.out.append
        self.writelines = self.out.extend

    def take(self) -> bytes:
        """Everything written since the last call (up to the deque's bound)."""
        data = b"".join(self.out)
        self.out.clear()
        return data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


# ``--header NAME:VALUE``: headers every measured request carries too (a bearer token, say).
EXTRA_HEADERS: dict[str, str] = {}


def request_bytes(workload: str, session_id: str | None = None) -> bytes:
    params: dict[str, Any] = {"name": "echo", "arguments": {"message": "hello"}}
    method = "tools/call"
    headers = {
        "Host": "127.0.0.1:8000",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": SESSION_VERSION,
    }
    if workload == "sse":
        headers["Accept"] = "text/event-stream"
    if workload == "list":
        method, params = "tools/list", {}
    if workload == "cached":
        params = {"name": "lookup", "arguments": {"key": "hello"}}
    if workload == "sessionless":
        headers["MCP-Protocol-Version"] = SESSIONLESS
        headers["Mcp-Method"] = method
        headers["Mcp-Name"] = "echo"
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": SESSIONLESS,
            "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    if session_id is not None:
        headers["Mcp-Session-Id"] = session_id
    headers.update(EXTRA_HEADERS)
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    head = "POST /mcp HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def initialize_bytes() -> bytes:
    body = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": SESSION_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "b", "version": "1"},
            },
        }
    )
    return (
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
        b"Accept: application/json, text/event-stream\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


# workload -> (the bench app's server, a session?, flags): "echo" is the headline, the app as the
# README teaches it (a plain def, a JWT session, default flags); the others are the extra rows.
WORKLOADS: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "echo": ("server", True, ()),
    "echo_async": ("async_server", True, ()),
    "echo_inline": ("inline_server", True, ()),
    "echo_stateless": ("server", False, ("--stateless",)),
    "sse": ("server", False, ("--stateless",)),
    "sessionless": ("server", False, ()),
    "list": ("server", False, ("--stateless",)),
    "cached": ("server", False, ("--stateless",)),
    "h2": ("server", False, ("--stateless",)),
}


def h2_requests(count: int) -> tuple[bytes, list[bytes]]:
    """The client preface (with windows opened wide once), then ``count`` requests on streams
    1, 3, 5, ... as h2load encodes them: the first header block with literals, the others indexed."""
    import hpack

    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                         "params": {"name": "echo", "arguments": {"message": "hello"}}})  # fmt: skip
    fields = [
        (b":method", b"POST"), (b":path", b"/mcp"), (b":scheme", b"http"), (b":authority", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"), (b"accept", b"application/json, text/event-stream"),
        (b"mcp-protocol-version", SESSION_VERSION.encode()), (b"content-length", b"%d" % len(body)),
    ]  # fmt: skip
    fields += [(name.lower().encode(), value.encode()) for name, value in EXTRA_HEADERS.items()]
    encoder = hpack.Encoder()
    first, rest = encoder.encode(fields), encoder.encode(fields)

    def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
        return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload

    preface = (
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + frame(0x4, 0, 0, (4).to_bytes(2, "big") + (2**31 - 1).to_bytes(4, "big"))  # INITIAL_WINDOW_SIZE
        + frame(0x8, 0, 0, (2**31 - 1 - 65535).to_bytes(4, "big"))  # the connection window
    )
    out = []
    for i in range(count):
        sid = 1 + 2 * i
        out.append(frame(0x1, 0x4, sid, first if i == 0 else rest) + frame(0x0, 0x1, sid, body))
    return preface, out


_WARM_UP = 10


async def measure_h2(http: Any, requests: int) -> float:
    from mcp_fast.net.flow import FlowControl
    from mcp_fast.net.h2connection import Http2Connection

    connection = Http2Connection(http.app, http.settings.h2_limits(), http.settings.timeouts, ConnectionSet())
    transport = CountingTransport()
    preface, wire = h2_requests(_WARM_UP + requests)
    connection.take_over(transport, FlowControl(transport, 30.0), preface)  # type: ignore[arg-type]
    transport.take()
    # Warm up with the loop running (as measure(): a plain def's first calls run in the pool).
    for data in wire[:_WARM_UP]:
        connection.data_received(data)
        answer = b""
        for _ in range(1000):
            answer += transport.take()
            if b'"result"' in answer:
                break
            await asyncio.sleep(0.001)
        assert b'"result"' in answer and b'"isError":false' in answer, answer[:600]
    start = time.perf_counter()
    for data in wire[_WARM_UP:]:
        connection.data_received(data)
    elapsed = time.perf_counter() - start
    assert b'"result"' in transport.take(), "the timed requests were not all answered at once"
    return elapsed / requests * 1e6


async def measure(workload: str, requests: int, extra_flags: tuple[str, ...] = ()) -> float:
    app_name, session, flags = WORKLOADS[workload]
    config = load_config(["--log-level", "warning", "--session-secret", "b" * 32, *flags, *extra_flags], {})
    http = build_http_server(_load_bench_app(app_name), config)
    if workload == "h2":
        return await measure_h2(http, requests)
    connection = HttpConnection(http.app, http.settings.limits, http.settings.timeouts, ConnectionSet())
    transport = CountingTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    session_id = None
    if session:
        connection.data_received(initialize_bytes())
        head = transport.take().split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"mcp-session-id:"):
                session_id = line.split(b":", 1)[1].strip().decode()
        assert session_id, "no session id in the initialize answer"
    data = request_bytes(workload, session_id)
    transport.take()
    # Warm up with the loop running: a plain def runs its first calls in the thread pool (until it
    # is seen to be quick), and caches fill. Then every request is answered inside data_received.
    for _ in range(10):
        connection.data_received(data)
        answer = b""
        for _ in range(1000):
            answer += transport.take()
            if answer.endswith(b"}") or answer.endswith(b"\n\n"):
                break
            await asyncio.sleep(0.001)
        ok = answer.startswith(b"HTTP/1.1 200 ") and b'"result"' in answer and b'"isError":true' not in answer
        assert ok, answer[:600]
    start = time.perf_counter()
    for _ in range(requests):
        connection.data_received(data)
    elapsed = time.perf_counter() - start
    assert transport.take().endswith((b"}", b"\n\n")), "the timed requests were not all answered at once"
    return elapsed / requests * 1e6


def _load_bench_app(name: str) -> Any:
    import mcp_fast_app

    return getattr(mcp_fast_app, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="echo", choices=tuple(WORKLOADS))
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument(
        "--offload-after",
        default=None,
        help="as the server's flag; bench/instructions.py raises it: under valgrind every call takes "
        "~50x longer, and the default would move the handler to the thread pool",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is printed")
    parser.add_argument("--callgrind", action="store_true", help="print the callgrind command and exit")
    parser.add_argument(
        "--flags", default="", help="more server flags, e.g. '--audit-log /tmp/a.log' or '--no-metrics'"
    )
    parser.add_argument(
        "--header", action="append", default=[], help="NAME:VALUE sent with every request (repeatable)"
    )
    args = parser.parse_args()
    if args.callgrind:
        print(
            "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out "
            f"{sys.executable} {__file__} --workload {args.workload} --requests 20000 --repeat 1"
        )
        return
    for header in args.header:
        name, _, value = header.partition(":")
        EXTRA_HEADERS[name.strip()] = value.strip()
    install_event_loop()
    extra = ("--offload-after", args.offload_after) if args.offload_after else ()
    extra = (*extra, *args.flags.split())
    best = min(asyncio.run(measure(args.workload, args.requests, extra)) for _ in range(args.repeat))
    print(f"{args.workload}: {best:.2f} µs per request (best of {args.repeat} x {args.requests})")


if __name__ == "__main__":
    main()
