"""HTTP/2: generated and mutated frame sequences into the sans-I/O core, and attacks over sockets.

(a) Contract: random frame sequences (HEADERS with CONTINUATION, DATA, SETTINGS, PING,
    WINDOW_UPDATE, RST_STREAM, PRIORITY, GOAWAY, PUSH_PROMISE, unknown and malformed frames, a
    shared HPACK encoder so that dynamic-table references stay meaningful), plain and byte-mutated,
    fed in random pieces to ``mcp_fast.wire.h2.H2Connection`` while a harness answers every
    request in one of several ways. Nothing but ``ProtocolError`` may escape; after it the core
    is sticky; every stream gets at most one final answer; the server's output parses as HTTP/2
    frames within the peer's frame size, with no DATA after END_STREAM and nothing after a
    connection-error GOAWAY; requests respect the limits.
(b) Split invariance: any split gives the same events and the same outcome (error or not, and
    the GOAWAY code) as byte-by-byte feeding.
(c) Real sockets against ``python -m mcp_fast``, over h2c and over TLS (ALPN h2): rapid
    reset, CONTINUATION flood, PING and SETTINGS floods, a client that never reads (with a zero
    window, and at the TCP level), too many streams, an HPACK bomb, invalid pseudo-header fields,
    many streams of large answers behind shut windows; each ends as designed, the server's RSS stays bounded and a well-behaved client
    (HTTP/2 and HTTP/1.1) is served afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hpack
import orjson
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PriorityFrame,
    SettingsFrame,
)
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from fuzz._support import (
    examples,
    load_tests_conftest,
    load_tests_h2client,
    load_tests_httpclient,
    load_tests_tlscerts,
)
from mcp_fast.wire.events import CONNECTION_CLOSED, NEED_DATA, ProtocolError, Request, StreamReset
from mcp_fast.wire.h2 import H2Connection, H2Limits, H2Timeouts

conftest = load_tests_conftest()
httpclient = load_tests_httpclient()
h2client = load_tests_h2client()
tlscerts = load_tests_tlscerts()

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
LIMITS = H2Limits(
    max_header_bytes=600, max_header_count=10, max_target_bytes=80, max_body_bytes=3000,
    max_concurrent_streams=4, reset_burst=12, reset_rate=0.0, control_burst=40, control_rate=0.0,
)  # fmt: skip


def fb(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """Any frame, valid or not (RFC 9113 section 4.1)."""
    return (
        len(payload).to_bytes(3, "big")
        + bytes((kind, flags))
        + (sid & 0xFFFFFFFF).to_bytes(4, "big")
        + payload
    )


# ---------------------------------------------------------------------------
# Generators

METHODS = [b"GET", b"POST", b"POST", b"OPTIONS", b"CONNECT", b"DELETE", b"get"]
PATHS = [b"/mcp", b"/", b"*", b"/a?b=c", b"mcp", b"/" + b"p" * 90, b"/%00"]
AUTHORITIES = [b"localhost", b"127.0.0.1:8000", b"[::1]:80", b"user@evil", b"a b", b""]
REGULAR = [
    (b"content-type", b"application/json"), (b"accept", b"application/json, text/event-stream"),
    (b"content-length", b"2"), (b"content-length", b"99999"), (b"content-length", b"x"),
    (b"expect", b"100-continue"), (b"te", b"trailers"), (b"te", b"gzip"), (b"connection", b"close"),
    (b"host", b"localhost"), (b"host", b"other"), (b"cookie", b"a=1"), (b"cookie", b"b=2"),
    (b"x-upper", b"Value"), (b"X-Upper", b"v"), (b"x-nul", b"a\x00b"), (b"x-space", b" v"),
    (b"x-big", b"v" * 700), (b"mcp-session-id", b"s"), (b"", b"empty-name"),
]  # fmt: skip


@st.composite
def header_lists(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    pseudo = [
        (b":method", draw(st.sampled_from(METHODS))),
        (b":path", draw(st.sampled_from(PATHS))),
        (b":scheme", draw(st.sampled_from([b"http", b"https"]))),
        (b":authority", draw(st.sampled_from(AUTHORITIES))),
    ]
    broken = draw(st.integers(0, 9))
    if broken == 0:
        del pseudo[draw(st.integers(0, 3))]  # a required pseudo-header missing
    elif broken == 1:
        pseudo.append(pseudo[draw(st.integers(0, 3))])  # duplicated
    elif broken == 2:
        pseudo.append((b":status", b"200"))  # a response pseudo-header in a request
    regular = draw(st.lists(st.sampled_from(REGULAR), max_size=6))
    regular += [(b"x-%d" % i, b"v") for i in range(draw(st.sampled_from([0, 0, 0, 11])))]
    fields = pseudo + regular
    if broken == 3 and regular:
        fields = regular[:1] + fields  # a pseudo-header after a regular field
    return fields


class Conversation:
    """Builds a client's frame sequence with one HPACK encoder, so references stay meaningful."""

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()
        self.parts: list[bytes] = [PREFACE]
        self.next_sid = 1
        self.sids: list[int] = []
        self.data_left = 200_000  # a few times the 64 KiB windows

    def block(self, fields: list[tuple[bytes, bytes]]) -> bytes:
        out: bytes = self.encoder.encode(fields)
        return out


@st.composite
def conversations(draw: st.DrawFn, max_frames: int = 24) -> bytes:
    conv = Conversation()
    parts = conv.parts
    if draw(st.integers(0, 9)):
        parts.append(SettingsFrame(0, settings=draw(valid_settings())).serialize())
    for _ in range(draw(st.integers(0, max_frames))):
        parts.append(draw(frame_for(conv)))
    return b"".join(parts)


@st.composite
def valid_settings(draw: st.DrawFn) -> dict[int, int]:
    return draw(
        st.dictionaries(
            st.sampled_from([1, 2, 3, 4, 5, 6, 8, 0x10]),
            st.sampled_from([0, 1, 100, 4096, 16384, 65535, 1 << 20]),
            max_size=4,
        ).map(lambda d: {k: v for k, v in d.items() if not (k == 2 and v > 1) and not (k == 5 and v < 16384)})
    )


def pick_sid(draw: st.DrawFn, conv: Conversation, new_ok: bool = True) -> int:
    choice = draw(st.integers(0, 9))
    if choice <= 5 and conv.sids:
        return draw(st.sampled_from(conv.sids))
    if choice <= 7 and new_ok:
        sid = conv.next_sid
        conv.next_sid += 2
        conv.sids.append(sid)
        return sid
    return draw(st.sampled_from([0, 2, 1, 0x7FFFFFFF, conv.next_sid + 4]))


@st.composite
def frame_for(draw: st.DrawFn, conv: Conversation) -> bytes:
    kind = draw(
        st.sampled_from(
            ["headers"] * 6 + ["data"] * 4 + ["rst", "window", "settings", "ping", "priority", "goaway",
             "push", "unknown", "raw", "continuation", "settings_ack"]
        )
    )  # fmt: skip
    if kind == "headers":
        sid = pick_sid(draw, conv)
        block = conv.block(draw(header_lists()))
        end_stream = draw(st.booleans())
        if draw(st.integers(0, 4)) == 0 and len(block) > 2:
            # Split into HEADERS + CONTINUATION(s), maybe with a frame wrongly in between.
            cuts = sorted(draw(st.lists(st.integers(1, len(block) - 1), min_size=1, max_size=3, unique=True)))
            pieces = [block[a:b] for a, b in itertools.pairwise([0, *cuts, len(block)])]
            out = [fb(0x1, 0x1 if end_stream else 0, sid, pieces[0])]
            for i, piece in enumerate(pieces[1:], 1):
                if draw(st.integers(0, 9)) == 0:
                    out.append(fb(0x6, 0, 0, b"\0" * 8))  # PING inside a header block: error
                out.append(fb(0x9, 0x4 if i == len(pieces) - 1 else 0, sid, piece))
            return b"".join(out)
        frame = HeadersFrame(sid if sid else 1, data=block)
        frame.stream_id = sid
        frame.flags.add("END_HEADERS")
        if end_stream:
            frame.flags.add("END_STREAM")
        if draw(st.integers(0, 5)) == 0:
            frame.flags.add("PRIORITY")
            frame.depends_on = draw(st.sampled_from([0, 1, sid]))
            frame.stream_weight = 15
        if draw(st.integers(0, 5)) == 0:
            frame.flags.add("PADDED")
            frame.pad_length = draw(st.integers(0, 20))
        return bytes(frame.serialize())
    if kind == "data":
        sid = pick_sid(draw, conv, new_ok=False)
        size = min(conv.data_left, draw(st.sampled_from([0, 1, 2, 10, 500, 3500])))
        conv.data_left -= size
        frame = DataFrame(sid if sid else 1, data=b"d" * size)
        frame.stream_id = sid
        if draw(st.booleans()):
            frame.flags.add("END_STREAM")
        if draw(st.integers(0, 5)) == 0:
            frame.flags.add("PADDED")
            frame.pad_length = draw(st.integers(0, 10))
            conv.data_left -= frame.pad_length + 1
        return bytes(frame.serialize())
    if kind == "rst":
        return fb(0x3, 0, pick_sid(draw, conv, new_ok=False), draw(st.integers(0, 14)).to_bytes(4, "big"))
    if kind == "window":
        sid = draw(st.sampled_from([0, *conv.sids[:3]]))
        increment = draw(st.sampled_from([0, 1, 1000, 1 << 20, 0x7FFFFFFF]))
        return fb(0x8, 0, sid, increment.to_bytes(4, "big"))
    if kind == "settings":
        values = draw(
            st.dictionaries(
                st.integers(1, 9), st.sampled_from([0, 1, 2, 100, 16383, 65535, 1 << 24, 1 << 31]), max_size=3
            )
        )
        payload = b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in values.items())
        return fb(0x4, 0, draw(st.sampled_from([0, 0, 0, 1])), payload)
    if kind == "settings_ack":
        return fb(0x4, 0x1, 0, draw(st.sampled_from([b"", b"", b"\0" * 6])))
    if kind == "ping":
        return fb(
            0x6,
            draw(st.sampled_from([0, 0, 1])),
            draw(st.sampled_from([0, 0, 1])),
            b"\0" * draw(st.sampled_from([8, 8, 7])),
        )
    if kind == "priority":
        sid = pick_sid(draw, conv)
        return bytes(
            PriorityFrame(
                sid or 1, depends_on=draw(st.sampled_from([0, sid or 1, 3])), stream_weight=1
            ).serialize()
        )
    if kind == "goaway":
        return bytes(GoAwayFrame(0, last_stream_id=0, error_code=draw(st.integers(0, 2))).serialize())
    if kind == "push":
        return fb(
            0x5,
            0x4,
            pick_sid(draw, conv, new_ok=False),
            (2).to_bytes(4, "big") + conv.block([(b":method", b"GET")]),
        )
    if kind == "unknown":
        return fb(
            draw(st.integers(0x0A, 0xFF)),
            draw(st.integers(0, 255)),
            draw(st.integers(0, 5)),
            draw(st.binary(max_size=20)),
        )
    if kind == "continuation":
        return fb(0x9, draw(st.sampled_from([0, 4])), pick_sid(draw, conv, new_ok=False), b"\x82")
    # raw: any type, flags, stream and a short payload
    return fb(
        draw(st.integers(0, 9)),
        draw(st.integers(0, 255)),
        draw(st.integers(0, 9)),
        draw(st.binary(max_size=24)),
    )


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(conversations()))
    for _ in range(draw(st.integers(1, 4))):
        keep_preface = draw(st.integers(0, 19)) and len(data) >= len(PREFACE)
        pos = draw(st.integers(len(PREFACE) if keep_preface else 0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        if op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=9))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 12))]
        else:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 40))]
    return bytes(data)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted({p % (len(data) + 1) for p in points}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


# ---------------------------------------------------------------------------
# (a) contract


class Clock:
    now = 500.0

    def __call__(self) -> float:
        return self.now


def answer(server: H2Connection, req: Request) -> None:
    """Answer in one of five ways, chosen by the stream id (deterministic per input)."""
    sid = req.stream_id
    style = (sid // 2) % 5
    if style == 0:
        server.respond(sid, 200, ((b"content-type", b"application/json"),), b'{"ok":true}')
    elif style == 1:
        server.respond(sid, 200, [(b"Content-Type", b"text/plain"), (b"Connection", b"close")], b"z" * 70_000)
    elif style == 2:
        server.start_stream(sid, 200, ((b"content-type", b"text/event-stream"),))
        for _ in range(3):
            server.send_data(sid, b"data: x\n\n")
        server.end_stream(sid)
    elif style == 3:
        server.reset(sid)
    else:
        return  # held open, like a GET stream (never released)
    server.release(sid)


class OutputChecker:
    """Parses the server's output as HTTP/2 frames and checks what a client may rely on."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.decoder = hpack.Decoder()
        self.decoder.max_allowed_table_size = 1 << 32  # whatever HEADER_TABLE_SIZE the client sent
        self.final: dict[int, int] = {}  # stream -> final :status
        self.ended: set[int] = set()
        self.goaway: int | None = None  # error code of a GOAWAY

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(bytes(self.buffer[:9])))
            if len(self.buffer) < 9 + length:
                break
            assert length <= 16384, "a frame larger than the client's SETTINGS_MAX_FRAME_SIZE"
            frame.parse_body(memoryview(bytes(self.buffer[9 : 9 + length])))
            del self.buffer[: 9 + length]
            self.frame(frame)

    def frame(self, frame: Frame) -> None:
        sid = frame.stream_id
        assert self.goaway in (None, 0), f"{type(frame).__name__} after a connection-error GOAWAY"
        name = type(frame).__name__
        if name == "GoAwayFrame":
            self.goaway = frame.error_code  # type: ignore[attr-defined]
            return
        if name in ("HeadersFrame", "DataFrame"):
            assert sid % 2 == 1, "an answer on a stream the client cannot have opened"
            assert sid not in self.ended, f"{name} after END_STREAM on stream {sid}"
            if "END_STREAM" in frame.flags:
                self.ended.add(sid)
        if name == "HeadersFrame":
            assert "END_HEADERS" in frame.flags
            fields = dict(self.decoder.decode(frame.data, raw=True))  # type: ignore[attr-defined]
            status = int(fields[b":status"])
            for forbidden in (b"connection", b"transfer-encoding", b"keep-alive"):
                assert forbidden not in fields
            if status >= 200:
                assert sid not in self.final, f"stream {sid} answered twice"
                self.final[sid] = status
        elif name == "DataFrame":
            assert sid in self.final, "DATA before the response HEADERS"


def check_request(req: Request, limits: H2Limits) -> None:
    assert req.http_version == b"2" and req.keep_alive
    assert req.stream_id % 2 == 1
    assert len(req.target) <= limits.max_target_bytes
    assert req.target[:1] == b"/" or (req.target == b"*" and req.method == b"OPTIONS")
    assert len(req.headers) <= limits.max_header_count + 1  # + host from :authority
    assert len(req.body) <= limits.max_body_bytes
    assert all(name == name.lower() and not name.startswith(b":") for name in req.headers)


def run_contract(chunks: list[bytes], limits: H2Limits) -> OutputChecker:
    clock = Clock()
    server = H2Connection(limits, H2Timeouts(), clock)
    out = OutputChecker()
    requested: set[int] = set()
    held: set[int] = set()
    failed = False

    def drain() -> bool:
        nonlocal failed
        while True:
            try:
                ev = server.next_event()
            except ProtocolError as exc:
                assert exc.status == 400 and exc.reason
                failed = True
                return False
            if ev is NEED_DATA or ev is CONNECTION_CLOSED:
                return ev is NEED_DATA
            if isinstance(ev, Request):
                assert ev.stream_id not in requested, "a stream delivered twice"
                requested.add(ev.stream_id)
                check_request(ev, limits)
                answer(server, ev)
                if (ev.stream_id // 2) % 5 == 4:
                    held.add(ev.stream_id)
            else:
                assert isinstance(ev, StreamReset) and ev.stream_id in requested

    for chunk in chunks:
        server.receive_data(chunk)
        alive = drain()
        server.flush()
        out.feed(server.data_to_send())
        if not alive:
            break
    if failed:
        with pytest.raises(ProtocolError):  # sticky
            server.next_event()
        if b"".join(chunks).startswith(PREFACE):
            # (RFC 9113 section 3.4: after an invalid preface the GOAWAY may be omitted.)
            assert out.goaway not in (None, 0), "a connection error without GOAWAY"
    else:
        # Time passes: timeouts act, and the contract still holds.
        clock.now += 1000
        server.check_timeouts()
        drain()
        out.feed(server.data_to_send())
    for sid in held:
        assert sid not in out.final or out.final[sid] != 200
    return out


limits_strategy = st.sampled_from([LIMITS, H2Limits()])
POINTS = st.lists(st.integers(0, 100_000), max_size=10)


@settings(max_examples=examples(150), suppress_health_check=[HealthCheck.too_slow])
@given(conversations(), limits_strategy, POINTS)
def test_contract_generated_frames(data: bytes, limits: H2Limits, points: list[int]) -> None:
    run_contract(cut(data, points), limits)


@settings(max_examples=examples(150), suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), limits_strategy, POINTS)
def test_contract_mutated_frames(data: bytes, limits: H2Limits, points: list[int]) -> None:
    run_contract(cut(data, points), limits)


@settings(max_examples=examples(100))
@given(st.binary(max_size=200), POINTS)
def test_contract_random_bytes_after_the_preface(data: bytes, points: list[int]) -> None:
    run_contract(cut(PREFACE + data, points), LIMITS)


# ---------------------------------------------------------------------------
# (b) split invariance


def outcome(chunks: list[bytes], limits: H2Limits) -> tuple[list[tuple[Any, ...]], int | None]:
    """Events (requests and resets, nothing answered) and the error code, if any."""
    server = H2Connection(limits, H2Timeouts(), Clock())
    events: list[tuple[Any, ...]] = []
    for chunk in chunks:
        server.receive_data(chunk)
        try:
            while (ev := server.next_event()) is not NEED_DATA and ev is not CONNECTION_CLOSED:
                if isinstance(ev, Request):
                    events.append((ev.stream_id, ev.method, ev.target, ev.headers, bytes(ev.body)))
                else:
                    assert isinstance(ev, StreamReset)
                    events.append(("reset", ev.stream_id))
        except ProtocolError:
            assert server.error_code is not None
            return events, int(server.error_code)
        if ev is CONNECTION_CLOSED:
            break
    return events, None


@settings(max_examples=examples(120), suppress_health_check=[HealthCheck.too_slow])
@given(conversations() | mutated(), limits_strategy, POINTS)
def test_split_invariance(data: bytes, limits: H2Limits, points: list[int]) -> None:
    finest, error = outcome([data[i : i + 1] for i in range(len(data))], limits)
    pieces = cut(data, points)
    note(f"pieces: {pieces!r}")
    # The core feeds h2 one frame at a time and reacts before the next one, so the
    # outcome is a function of the frame sequence, errors included.
    assert outcome(pieces, limits) == (finest, error)


# ---------------------------------------------------------------------------
# (c) attacks over real sockets

HOST = "127.0.0.1"
WRITE_TIMEOUT = 1.0
RSS_BOUND_KIB = 64 * 1024


FLAGS = (
    "--stateless", "--write-timeout", str(WRITE_TIMEOUT), "--max-stream-buffer", "256K",
    "--header-timeout", "1", "--keepalive-timeout", "2",
)  # fmt: skip


class Target:
    """The server under attack and how to reach it: h2c (prior knowledge) or TLS (ALPN h2)."""

    def __init__(self, running: Any, cafile: Path | None) -> None:
        self.running = running
        self.port: int = running.port
        self.process = running.process
        self.cafile = cafile

    def log(self) -> str:
        text: str = self.running.log()
        return text

    def context(self, alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLContext | None:
        return None if self.cafile is None else h2client.client_context(self.cafile, alpn)

    def connect(self, rcvbuf: int | None = None) -> socket.socket:
        return h2client.connect(HOST, self.port, 10.0, self.context(), rcvbuf)

    def h2(self, **kwargs: Any) -> Any:
        return h2client.H2Socket(self.port, ssl_context=self.context(), **kwargs)


@pytest.fixture(scope="module", params=["h2c", "tls"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """Every attack runs against cleartext HTTP/2 and HTTP/2 over TLS."""
    directory = tmp_path_factory.mktemp("attacks")
    flags: tuple[str, ...] = FLAGS
    cafile = None
    if request.param == "tls":
        ca = tlscerts.CertAuthority(directory / "certs")
        issued = ca.issue("server")
        flags = (*flags, "--certfile", str(issued.cert), "--keyfile", str(issued.key))
        cafile = ca.path
    running = conftest.start_server(directory, *flags)
    try:
        yield Target(running, cafile)
    finally:
        conftest.stop_server(running)
    assert "Traceback" not in running.log(), running.log()


def echo(message: str) -> bytes:
    return orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": message}},
        }
    )


def served(target: Target) -> None:
    """A well-behaved client is served, over HTTP/2 and over HTTP/1.1."""
    with target.h2(timeout=5) as client:
        answer = client.call(echo("still here"))
        assert answer.status == 200 and answer.json()["result"]["content"][0]["text"] == "still here"
    with httpclient.RawClient(target.port, timeout=5, ssl_context=target.context(("http/1.1",))) as raw:
        raw.send(httpclient.rpc_bytes("ping"))
        assert raw.read_response().status == 200


def hostile(target: Target, rcvbuf: int | None = None) -> socket.socket:
    sock = target.connect(rcvbuf)
    sock.sendall(PREFACE + fb(0x4, 0, 0))
    return sock


def goaway_code(data: bytes) -> int | None:
    """The error code of the first GOAWAY among the server's frames (raw parse)."""
    view = memoryview(data)
    while len(view) >= 9:
        length = int.from_bytes(view[:3], "big")
        if view[3] == 0x7 and len(view) >= 9 + 8:
            return int.from_bytes(view[13:17], "big")
        view = view[9 + length :]
    return None


def read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    data = bytearray()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, ssl.SSLError):  # (TLS: a close without close_notify)
            return bytes(data), True
        if not chunk:
            return bytes(data), True
        data += chunk
    return bytes(data), False


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        return False
    return True


GET_BLOCK = hpack.Encoder().encode(
    [(b":method", b"GET"), (b":path", b"/health"), (b":scheme", b"http"), (b":authority", b"localhost")]
)


def test_rapid_reset_gets_enhance_your_calm(server: Any) -> None:
    """CVE-2023-44487: HEADERS + RST_STREAM pairs as fast as possible."""
    served(server)
    baseline = conftest.rss_kib(server.process.pid)
    sock = hostile(server)
    with sock:
        burst = b"".join(
            fb(0x1, 0x5, sid, GET_BLOCK) + fb(0x3, 0, sid, b"\0\0\0\x08") for sid in range(1, 4001, 2)
        )
        send_quietly(sock, burst)
        data, closed = read_until_closed(sock, 5)
    assert closed and goaway_code(data) == ErrorCodes.ENHANCE_YOUR_CALM
    assert conftest.rss_kib(server.process.pid) - baseline < RSS_BOUND_KIB
    served(server)


def flood_is_cut_off(sock: socket.socket, frame: bytes, seconds: float) -> float:
    """Keep sending ``frame`` without reading; seconds until the server ends the connection."""
    start = time.monotonic()
    sock.settimeout(0.5)
    while time.monotonic() - start < seconds:
        try:
            sock.sendall(frame * 256)
        except TimeoutError:
            continue  # the server stopped reading: fine, it must still end the connection
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return time.monotonic() - start
    raise AssertionError(f"the server took a flood for {seconds} s without ending the connection")


def test_continuation_flood_gets_goaway_before_the_server_buffers_it(server: Any) -> None:
    """CVE-2024-27316: a header block that never ends, in 16 KiB CONTINUATION frames."""
    baseline = conftest.rss_kib(server.process.pid)
    piece = fb(0x9, 0, 1, b"\x00" * 16384)
    with hostile(server) as sock:
        # 128 KiB of header block: the limit (twice --max-header-size) is 32 KiB.
        send_quietly(sock, fb(0x1, 0x1, 1, GET_BLOCK[:4]) + piece * 8)
        data, closed = read_until_closed(sock, 5)
    assert closed and goaway_code(data) == ErrorCodes.ENHANCE_YOUR_CALM
    with hostile(server) as sock:
        send_quietly(sock, fb(0x1, 0x1, 1, GET_BLOCK[:4]))
        assert flood_is_cut_off(sock, piece, 8) < 4
    assert conftest.rss_kib(server.process.pid) - baseline < RSS_BOUND_KIB
    served(server)


CONTROL_FRAMES = [fb(0x6, 0, 0, b"\0" * 8), fb(0x4, 0, 0, b"")]


@pytest.mark.parametrize("frame", CONTROL_FRAMES, ids=["ping", "settings"])
def test_control_frame_flood_gets_enhance_your_calm(server: Any, frame: bytes) -> None:
    """h2 answers PING and SETTINGS by itself: a flood of them is cut at the budget (1000)."""
    with hostile(server) as sock:
        send_quietly(sock, frame * 2000)
        data, closed = read_until_closed(sock, 5)
    assert closed and goaway_code(data) == ErrorCodes.ENHANCE_YOUR_CALM
    served(server)


@pytest.mark.parametrize("frame", CONTROL_FRAMES, ids=["ping", "settings"])
def test_control_frame_flood_from_a_client_that_never_reads(server: Any, frame: bytes) -> None:
    """The answers must not pile up: reading pauses while they cannot be written, and the
    connection ends (budget, then the write timeout for a client that reads nothing)."""
    baseline = conftest.rss_kib(server.process.pid)
    with hostile(server, rcvbuf=4096) as sock:
        assert flood_is_cut_off(sock, frame, 10) < WRITE_TIMEOUT + 5
    assert conftest.rss_kib(server.process.pid) - baseline < RSS_BOUND_KIB
    served(server)


def emit(count: int, size: int) -> bytes:
    params = {"name": "emit_notifications", "arguments": {"count": count, "size": size}}
    return orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})


def test_zero_window_reader_loses_its_stream_not_the_server(server: Any) -> None:
    """A client that never gives window back: its stream is reset after the write timeout."""
    served(server)
    baseline = conftest.rss_kib(server.process.pid)
    with server.h2(settings={SettingCodes.INITIAL_WINDOW_SIZE: 0}, timeout=10) as client:
        sids = [client.request("POST", "/mcp", h2client.MCP_HEADERS, emit(100_000, 1000)) for _ in range(3)]
        client.flush()
        client.wait(*sids, timeout=WRITE_TIMEOUT + 6)
        assert all(client.answers[sid].reset == ErrorCodes.CANCEL for sid in sids)
    assert conftest.rss_kib(server.process.pid) - baseline < RSS_BOUND_KIB
    served(server)


def test_client_that_reads_nothing_at_all_is_dropped(server: Any) -> None:
    """Big windows, but the TCP connection is never read: the connection goes after the write timeout."""
    baseline = conftest.rss_kib(server.process.pid)
    client = h2client.H2Peer(settings={SettingCodes.INITIAL_WINDOW_SIZE: 0x7FFFFFFF})
    client.conn.increment_flow_control_window(0x7FFFFFFF - 65535)
    for _ in range(3):
        client.request("POST", "/mcp", h2client.MCP_HEADERS, emit(200_000, 1000))
    sock = server.connect(rcvbuf=4096)
    with sock:
        sock.sendall(client.data())
        peak = baseline
        start = time.monotonic()
        while time.monotonic() - start < WRITE_TIMEOUT + 3:
            peak = max(peak, conftest.rss_kib(server.process.pid))
            time.sleep(0.1)
        served(server)
        _, closed = read_until_closed(sock, 5)
    assert closed
    assert "dropping a" in server.log()
    assert peak - baseline < RSS_BOUND_KIB, f"RSS grew by {(peak - baseline) // 1024} MiB"


def test_too_many_streams_are_refused_then_the_connection_ends(server: Any) -> None:
    baseline = conftest.rss_kib(server.process.pid)
    body = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "slow_report", "arguments": {"seconds": 2}},
        }
    )
    with server.h2(timeout=10) as client:
        client.pump(5)
        client.conn.remote_settings.max_concurrent_streams = 10_000  # ignore the server's limit
        client.conn.remote_settings.acknowledge()
        sids = [client.request("POST", "/mcp", h2client.MCP_HEADERS, body) for _ in range(150)]
        client.flush()
        deadline = time.monotonic() + 10
        while sum(client.answers[s].done for s in sids) < 150 and time.monotonic() < deadline:
            if not client.pump(deadline - time.monotonic()):
                break
        refused = [s for s in sids if client.answers[s].reset == ErrorCodes.REFUSED_STREAM]
        answered = [s for s in sids if client.answers[s].status == 200]
        assert len(refused) == 50 and len(answered) == 100
        # Far beyond the limit in one go: the connection itself ends.
        burst = b"".join(fb(0x1, 0x5, sid, GET_BLOCK) for sid in range(1001, 3001, 2))
        send_quietly(client.sock, burst)
        data, closed = read_until_closed(client.sock, 5)
        assert closed and goaway_code(data) in (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.ENHANCE_YOUR_CALM)
    assert conftest.rss_kib(server.process.pid) - baseline < RSS_BOUND_KIB
    served(server)


def hpack_integer(value: int, prefix_bits: int) -> bytes:
    """RFC 7541 section 5.1 (written out here, independent of the server's encoder)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((value,))
    out = bytearray((limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def test_hpack_bomb_gets_enhance_your_calm(server: Target) -> None:
    """A small header block that decodes to a huge header list (one 4,000-byte entry in the
    dynamic table, referenced 200 times: 800 KB from 200 bytes): decoding stops at twice
    --max-header-size, the connection ends with ENHANCE_YOUR_CALM."""
    baseline = conftest.rss_kib(server.process.pid)
    # A literal with incremental indexing (RFC 7541 6.2.1): name "x-big", a 4,000-byte value.
    big = b"\x40\x05x-big" + hpack_integer(4000, 7) + b"v" * 4000
    bomb = b"\xbe" * 200  # index 62: the newest dynamic entry, 200 times
    with hostile(server) as sock:
        send_quietly(sock, fb(0x1, 0x5, 1, GET_BLOCK + big) + fb(0x1, 0x5, 3, bomb + GET_BLOCK))
        data, closed = read_until_closed(sock, 5)
    assert closed and goaway_code(data) == ErrorCodes.ENHANCE_YOUR_CALM
    assert conftest.rss_kib(server.process.pid) - baseline < RSS_BOUND_KIB
    served(server)


@pytest.mark.parametrize(
    "fields",
    [
        [(b":status", b"200")],  # a response pseudo-header (RFC 9113 8.3)
        [(b":protocol", b"websocket")],  # unknown
        [(b":path", b"/again")],  # repeated
        [(b"X-Upper", b"1")],  # upper-case name (8.2.1)
        [(b"connection", b"close")],  # connection-specific (8.2.2)
    ],
    ids=["status", "unknown", "repeated", "upper-case", "connection"],
)
def test_invalid_pseudo_headers_are_stream_errors(server: Target, fields: list[tuple[bytes, bytes]]) -> None:
    """RFC 9113 section 8.1.1: 400 on that stream, then RST_STREAM(PROTOCOL_ERROR); the
    connection goes on serving."""
    head = [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/mcp"), (b":authority", b"localhost")]
    mcp = [(b"content-type", b"application/json"), (b"accept", b"application/json, text/event-stream")]
    encoder = hpack.Encoder()
    bad = encoder.encode(head + mcp + fields)
    good = encoder.encode(head + mcp)
    body = echo("after the bad stream")
    with hostile(server) as sock:
        sock.sendall(fb(0x1, 0x5, 1, bad) + fb(0x1, 0x4, 3, good) + fb(0x0, 0x1, 3, body))
        data = bytearray()
        sock.settimeout(5)
        while not any(f.stream_id == 3 and "END_STREAM" in f.flags for f in frames_or_none(bytes(data))):
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection"
            data += chunk
    decoder = hpack.Decoder()
    frames = h2client.frames_of(bytes(data))
    heads = {f.stream_id: dict(decoder.decode(f.data, raw=True)) for f in frames if isinstance(f, HeadersFrame)}
    assert heads[1][b":status"] == b"400"
    assert [f.error_code for f in frames if f.stream_id == 1 and type(f).__name__ == "RstStreamFrame"] == [
        ErrorCodes.PROTOCOL_ERROR
    ]
    assert heads[3][b":status"] == b"200"
    answer = b"".join(f.data for f in frames if f.stream_id == 3 and isinstance(f, DataFrame))
    assert orjson.loads(answer)["result"]["content"][0]["text"] == "after the bad stream"


def frames_or_none(data: bytes) -> list[Frame]:
    """The complete frames at the start of ``data``."""
    out = []
    view = memoryview(data)
    while len(view) >= 9:
        length = int.from_bytes(view[:3], "big")
        if len(view) < 9 + length:
            break
        frame, _ = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9 : 9 + length])
        out.append(frame)
        view = view[9 + length :]
    return out


@pytest.fixture
def small_buffer(tmp_path: Path) -> Iterator[Target]:
    """A server whose HTTP/2 connections may hold 2 MiB each."""
    running = conftest.start_server(
        tmp_path, "--stateless", "--write-timeout", "3", "--h2-max-connection-buffer", "2M"
    )
    try:
        yield Target(running, None)
    finally:
        conftest.stop_server(running)
    assert "Traceback" not in running.log(), running.log()


def pump_until(client: Any, done: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not done() and not client.closed and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            client.pump(0.2)


def test_large_answers_behind_shut_windows_are_bounded_per_connection(small_buffer: Target) -> None:
    """A client asks, one stream after another, for 512 KiB answers and never opens a
    flow-control window. The connection holds at most --h2-max-connection-buffer (2 MiB): the
    answer that does not fit is reset (ENHANCE_YOUR_CALM), a GOAWAY refuses new streams, the
    connection closes once the held answers time out; RSS stays bounded, others are served."""
    served(small_buffer)
    pid = small_buffer.process.pid
    baseline = conftest.rss_kib(pid)
    body = echo("x" * (512 * 1024))
    with small_buffer.h2(settings={SettingCodes.INITIAL_WINDOW_SIZE: 0}, timeout=10) as client:
        client.pump(5)
        sids = []
        for _ in range(20):  # 10 MiB of answers asked for
            sid = client.request("POST", "/mcp", h2client.MCP_HEADERS, body)
            sids.append(sid)
            client.flush()
            pump_until(client, lambda s=sid: client.answers[s].status or client.answers[s].done, 10)
            if client.goaway is not None:
                break
        assert client.goaway is not None and client.goaway.error_code == ErrorCodes.NO_ERROR
        # The answers held: 200 HEADERS went out (HEADERS are not flow-controlled), no DATA.
        *held, last = sids
        assert all(client.answers[s].status == 200 and not client.answers[s].body for s in held)
        # The stream that did not fit: its answer reset, or (when its request body was what
        # did not fit) the stream refused before the application saw it.
        assert client.answers[last].reset in (ErrorCodes.ENHANCE_YOUR_CALM, ErrorCodes.REFUSED_STREAM)
        assert 3 <= len(held) <= 4  # 2 MiB hold three or four answers of 512 KiB
        served(small_buffer)  # other clients are served meanwhile
        peak = conftest.rss_kib(pid)
        _, closed = read_until_closed(client.sock, 10)
        assert closed, "the connection was not closed"
    assert peak - baseline < 24 * 1024, f"RSS grew by {(peak - baseline) // 1024} MiB"
    served(small_buffer)


def test_request_bodies_are_bounded_per_connection(small_buffer: Target) -> None:
    """40 streams upload 512 KiB bodies at once (20 MiB) and read nothing: what the connection
    holds (bodies and answers) stays under 2 MiB; a stream whose body does not fit is refused
    (REFUSED_STREAM: never seen by the application, so a client may retry it), a GOAWAY
    follows, and the connection closes once the streams in flight are done or timed out."""
    pid = small_buffer.process.pid
    baseline = conftest.rss_kib(pid)
    body = echo("x" * (512 * 1024))
    with small_buffer.h2(settings={SettingCodes.INITIAL_WINDOW_SIZE: 0}, timeout=10) as client:
        client.pump(5)
        sids = [client.request("POST", "/mcp", h2client.MCP_HEADERS, body) for _ in range(40)]
        client.flush()
        peak = baseline
        deadline = time.monotonic() + 15
        while client.goaway is None and not client.closed and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                client.pump(0.2)
            peak = max(peak, conftest.rss_kib(pid))
        assert client.goaway is not None and client.goaway.error_code == ErrorCodes.NO_ERROR
        # (The h2 client stops at a GOAWAY: the rest is read as raw frames.)
        rest, closed = read_until_closed(client.sock, 10)
        assert closed, "the connection was not closed"
        peak = max(peak, conftest.rss_kib(pid))
        refused = {s for s in sids if client.answers[s].reset == ErrorCodes.REFUSED_STREAM}
        refused |= {
            f.stream_id for f in frames_or_none(rest)
            if type(f).__name__ == "RstStreamFrame" and f.error_code == ErrorCodes.REFUSED_STREAM
        }  # fmt: skip
        assert refused
    assert peak - baseline < 24 * 1024, f"RSS grew by {(peak - baseline) // 1024} MiB"
    served(small_buffer)
