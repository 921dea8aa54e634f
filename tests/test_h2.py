"""The sans-I/O HTTP/2 core (`mcp_fast/wire/h2.py`), driven by an `h2` client and raw frames.

Requests are fed whole, byte by byte, and followed by trailing bytes of a next frame; answers are
read back with the `h2` client, so what is checked is what a real HTTP/2 client sees.
RFC 9113 sections are cited beside the rule a test checks.
"""

from __future__ import annotations

from collections.abc import Iterator

import h2.events
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from h2client import (
    PREFACE,
    H2Peer,
    continuation_frame,
    data_frame,
    encode_block,
    frame_bytes,
    frames_of,
    get_headers,
    headers_frame,
    ping_frame,
    rst_frame,
    settings_frame,
)
from hyperframe.frame import GoAwayFrame

from mcp_fast.wire.events import CONNECTION_CLOSED, NEED_DATA, Event, ProtocolError, Request, StreamReset
from mcp_fast.wire.h2 import H2Connection, H2Limits, H2Timeouts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(server: H2Connection, data: bytes, mode: str = "whole") -> None:
    if mode == "whole":
        server.receive_data(data)
    elif mode == "bytes":
        for i in range(len(data)):
            server.receive_data(data[i : i + 1])
    else:
        raise AssertionError(mode)


def events(server: H2Connection) -> list[Event]:
    out = []
    while (ev := server.next_event()) is not NEED_DATA:
        out.append(ev)
        if ev is CONNECTION_CLOSED:
            break
    return out


DEFAULT = H2Limits()


def connect(
    limits: H2Limits = DEFAULT, clock: Clock | None = None, **peer: object
) -> tuple[H2Connection, H2Peer]:
    """A server core and a client that have exchanged prefaces and SETTINGS."""
    server = H2Connection(limits, H2Timeouts(), clock or Clock())
    client = H2Peer(**peer)  # type: ignore[arg-type]
    server.receive_data(client.data())
    client.receive(server.data_to_send())
    server.receive_data(client.data())  # the SETTINGS ACK
    assert events(server) == []
    return server, client


def roundtrip(server: H2Connection, client: H2Peer, mode: str = "whole") -> list[Event]:
    feed(server, client.data(), mode)
    out = events(server)
    client.receive(server.data_to_send())
    return out


MODES = ("whole", "bytes")
JSON = {"content-type": "application/json"}


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


# -- requests ----------------------------------------------------------------------------


def test_post_becomes_a_request_with_its_stream_id(mode: str) -> None:
    server, client = connect()
    sid = client.request(
        "POST", "/mcp?x=1", [("content-type", "application/json"), ("x-a", "1"), ("x-a", "2")], b'{"a":1}',
        authority="example.test:8000",
    )  # fmt: skip
    [req] = roundtrip(server, client, mode)
    assert isinstance(req, Request)
    assert req.stream_id == sid == 1
    assert (req.method, req.target, req.path) == (b"POST", b"/mcp?x=1", b"/mcp")
    assert req.headers == {
        b"content-type": b"application/json",
        b"x-a": b"1, 2",  # repeated fields joined as in HTTP/1.1
        b"host": b"example.test:8000",  # from :authority (RFC 9113 8.3.1)
    }
    assert bytes(req.body) == b'{"a":1}'
    assert req.keep_alive is True
    assert req.http_version == b"2"


def test_path_ends_at_the_query_or_a_fragment() -> None:
    for sent, path in ((b"/mcp?a=1", b"/mcp"), (b"/mcp#f", b"/mcp"), (b"/mcp?a#f", b"/mcp"), (b"/mcp", b"/mcp")):
        server, client = connect()
        fields = [(b":method", b"GET"), (b":path", sent), (b":scheme", b"http"), (b":authority", b"a")]
        client.conn.send_headers(1, fields, end_stream=True)
        [req] = roundtrip(server, client)
        assert isinstance(req, Request) and (req.target, req.path) == (sent, path)


def test_host_header_is_kept_and_authority_may_be_absent() -> None:
    server, client = connect()
    fields = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"), (b"host", b"h.test")]
    client.conn.send_headers(1, fields, end_stream=True)
    [req] = roundtrip(server, client)
    assert isinstance(req, Request) and req.headers == {b"host": b"h.test"} and req.body == b""


def test_whole_bytewise_and_trailing_bytes_give_the_same_requests() -> None:
    def run(mode: str, trailing: bytes) -> list[tuple[object, ...]]:
        server, client = connect()
        client.request("POST", "/a", JSON, b"x" * 20_000)  # several DATA frames
        client.request("GET", "/b", {"accept": "text/event-stream"})
        client.request("POST", "/c", JSON, b"")
        feed(server, client.data() + trailing, mode)
        return [(r.stream_id, r.method, r.target, r.headers, bytes(r.body)) for r in events(server)]  # type: ignore[union-attr]

    # Trailing: the first 5 bytes of a next frame's header, which must just wait.
    trailing = data_frame(7, b"later")[:5]
    whole = run("whole", b"")
    assert len(whole) == 3
    assert run("bytes", b"") == whole
    assert run("whole", trailing) == whole
    assert run("bytes", trailing) == whole


def test_interleaved_streams_are_delivered_when_each_ends() -> None:
    server, client = connect()
    a = client.request("POST", "/a", JSON, b"", end=False)
    b = client.request("POST", "/b", JSON, b"", end=False)
    client.conn.send_data(a, b"aa")
    client.conn.send_data(b, b"bb", end_stream=True)
    assert [(r.stream_id, bytes(r.body)) for r in roundtrip(server, client)] == [(b, b"bb")]  # type: ignore[union-attr]
    client.conn.send_data(a, b"AA", end_stream=True)
    assert [(r.stream_id, bytes(r.body)) for r in roundtrip(server, client)] == [(a, b"aaAA")]  # type: ignore[union-attr]


def test_body_larger_than_the_initial_window_is_acknowledged_as_it_is_taken() -> None:
    """RFC 9113 section 6.9: the client can send more only as WINDOW_UPDATEs come back."""
    server, client = connect()
    body = bytes(range(256)) * 1024  # 256 KiB, four times the 64 KiB initial window
    sid = client.request("POST", "/mcp", JSON, b"", end=False)
    sent = client.send_body(sid, body, end=False)
    assert sent == 65535  # the window is exhausted
    got: list[Event] = []
    while True:
        got += roundtrip(server, client)
        if sent == len(body):
            break
        more = client.send_body(sid, body[sent:], end=False)
        assert more > 0, "the server did not give the window back"
        sent += more
    client.conn.end_stream(sid)
    got += roundtrip(server, client)
    [req] = got
    assert isinstance(req, Request) and bytes(req.body) == body


def test_expect_100_continue_gets_an_informational_response() -> None:
    server, client = connect()
    sid = client.request("POST", "/mcp", {**JSON, "expect": "100-continue"}, end=False)
    assert roundtrip(server, client) == []
    assert client.answers[sid].informational == [100]


# -- responses -----------------------------------------------------------------------------


def test_respond_sends_status_headers_length_and_body() -> None:
    server, client = connect()
    sid = client.request("POST", "/mcp", JSON, b"{}")
    roundtrip(server, client)
    server.respond(sid, 200, [(b"Content-Type", b"application/json"), (b"X-Extra", b"v")], b'{"ok":1}')
    client.receive(server.data_to_send())
    answer = client.answers[sid]
    assert answer.status == 200 and answer.ended
    assert answer.headers == {"content-type": "application/json", "x-extra": "v", "content-length": "8"}
    assert bytes(answer.body) == b'{"ok":1}'
    server.respond(sid, 500, (), b"again")  # a stream gets one answer
    assert server.data_to_send() == b""


def test_connection_specific_headers_are_dropped_from_responses() -> None:
    """RFC 9113 section 8.2.2: Connection, Keep-Alive, Transfer-Encoding... must not be sent."""
    server, client = connect()
    sid = client.request("GET", "/")
    roundtrip(server, client)
    server.start_stream(
        sid,
        200,
        [(b"content-type", b"text/event-stream"), (b"Connection", b"keep-alive"), (b"keep-alive", b"timeout=5"),
         (b"transfer-encoding", b"chunked"), (b"upgrade", b"h2c"), (b"te", b"gzip")],
    )  # fmt: skip
    server.end_stream(sid)
    client.receive(server.data_to_send())  # h2 would refuse the frames if they carried them
    assert client.answers[sid].headers == {"content-type": "text/event-stream"}
    assert client.answers[sid].ended


def test_invalid_response_header_values_are_refused() -> None:
    server, client = connect()
    sid = client.request("GET", "/")
    roundtrip(server, client)
    with pytest.raises(ValueError):
        server.respond(sid, 200, [(b"x", b"a\r\nb")], b"")
    with pytest.raises(ValueError):
        server.respond(sid, 200, [(b"bad name", b"v")], b"")
    with pytest.raises(ValueError):
        server.respond(sid, 204, (), b"body")


def test_204_has_no_content_length() -> None:
    server, client = connect()
    sid = client.request("GET", "/")
    roundtrip(server, client)
    server.respond(sid, 204, (), b"")
    client.receive(server.data_to_send())
    assert client.answers[sid].status == 204 and "content-length" not in client.answers[sid].headers


def test_output_beyond_the_peer_window_is_queued_and_sent_on_window_update() -> None:
    server, client = connect(auto_ack=False)
    sid = client.request("GET", "/")
    roundtrip(server, client)
    payload = b"x" * 200_000
    server.start_stream(sid, 200, [(b"content-type", b"text/event-stream")])
    server.send_data(sid, payload)
    server.end_stream(sid)
    client.receive(server.data_to_send())
    assert len(client.answers[sid].body) == 65535  # the initial window (RFC 9113 6.9.2)
    assert server.queued(sid) == 200_000 - 65535 and server.has_queued
    assert not client.answers[sid].ended
    while not client.answers[sid].ended:
        for ev in client.events:
            if isinstance(ev, h2.events.DataReceived):
                client.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        client.events.clear()
        server.receive_data(client.data())
        assert events(server) == []
        server.flush()
        client.receive(server.data_to_send())
    assert bytes(client.answers[sid].body) == payload
    assert server.queued(sid) == 0 and not server.has_queued


def test_output_waits_while_the_transport_is_blocked() -> None:
    server, client = connect()
    sid = client.request("GET", "/")
    roundtrip(server, client)
    server.start_stream(sid, 200, [(b"content-type", b"text/event-stream")])
    server.set_output_blocked(True)
    server.send_data(sid, b"data: 1\n\n")
    assert server.queued(sid) == 9
    assert server.flush() == 0
    server.set_output_blocked(False)
    assert server.flush() == 9
    client.receive(server.data_to_send())
    assert bytes(client.answers[sid].body) == b"data: 1\n\n"


def test_a_zero_window_peer_gets_nothing_and_the_stream_is_reset_after_the_write_timeout() -> None:
    clock = Clock()
    server, client = connect(clock=clock, settings={SettingCodes.INITIAL_WINDOW_SIZE: 0})
    sid = client.request("GET", "/")
    roundtrip(server, client)
    server.start_stream(sid, 200, [(b"content-type", b"text/event-stream")])
    server.send_data(sid, b"data: 1\n\n")
    client.receive(server.data_to_send())
    assert client.answers[sid].status == 200 and client.answers[sid].body == b""
    assert server.queued(sid) == 9
    clock.now += 29
    server.check_timeouts()
    assert events(server) == []
    clock.now += 2
    server.check_timeouts()
    assert events(server) == [StreamReset(sid)]
    client.receive(server.data_to_send())
    assert client.answers[sid].reset == ErrorCodes.CANCEL
    assert server.queued(sid) == 0 and not server.has_queued


# -- per-stream limits ---------------------------------------------------------------------

SMALL = H2Limits(max_header_bytes=1024, max_header_count=8, max_target_bytes=64, max_body_bytes=1000)


def answer_of(client: H2Peer, sid: int) -> tuple[int | None, int | None]:
    return client.answers[sid].status, client.answers[sid].reset


def test_body_over_the_limit_gets_413_on_that_stream_only(mode: str) -> None:
    server, client = connect(SMALL)
    big = client.request("POST", "/mcp", JSON, b"", end=False)
    client.send_body(big, b"x" * 1001, end=False)
    ok = client.request("POST", "/mcp", JSON, b"{}")
    [req] = roundtrip(server, client, mode)
    assert isinstance(req, Request) and req.stream_id == ok
    # RFC 9113 section 8.1: a complete response, then RST_STREAM(NO_ERROR) so the client stops.
    assert answer_of(client, big) == (413, ErrorCodes.NO_ERROR)
    # Further DATA of that stream is dropped (and its window given back for the connection).
    server.receive_data(data_frame(big, b"y" * 100))
    assert events(server) == []
    server.respond(ok, 200, (), b"fine")
    client.receive(server.data_to_send())
    assert client.answers[ok].status == 200


def test_content_length_over_the_limit_gets_413_before_any_data() -> None:
    server, client = connect(SMALL)
    sid = client.request("POST", "/mcp", {**JSON, "content-length": "5000"}, end=False)
    assert roundtrip(server, client) == []
    assert answer_of(client, sid) == (413, ErrorCodes.NO_ERROR)


def test_body_exactly_at_the_limit_is_accepted() -> None:
    server, client = connect(SMALL)
    client.request("POST", "/mcp", JSON, b"x" * 1000)
    [req] = roundtrip(server, client)
    assert isinstance(req, Request) and len(req.body) == 1000


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ([("x-big", "v" * 1100)], 431),  # field section size (RFC 9113 6.5.2)
        ([(f"x-{i}", "v") for i in range(9)], 431),  # field count
    ],
)
def test_header_limits_answer_431(fields: list[tuple[str, str]], status: int) -> None:
    server, client = connect(SMALL)
    sid = client.request("GET", "/", fields)
    assert roundtrip(server, client) == []
    assert client.answers[sid].status == status
    ok = client.request("GET", "/")
    assert [r.stream_id for r in roundtrip(server, client)] == [ok]  # type: ignore[union-attr]


def test_long_path_gets_414_and_bad_path_400() -> None:
    server, client = connect(SMALL)
    long = client.request("GET", "/" + "a" * 64)
    assert roundtrip(server, client) == []
    assert client.answers[long].status == 414
    client.conn.send_headers(
        3,
        [(b":method", b"GET"), (b":path", b"mcp"), (b":scheme", b"http"), (b":authority", b"a")],
        end_stream=True,
    )
    assert roundtrip(server, client) == []
    assert client.answers[3].status == 400
    client.conn.send_headers(
        5,
        [(b":method", b"OPTIONS"), (b":path", b"*"), (b":scheme", b"http"), (b":authority", b"a")],
        end_stream=True,
    )
    [req] = roundtrip(server, client)
    assert isinstance(req, Request) and req.target == b"*"


def test_connect_gets_501_and_a_bad_authority_400() -> None:
    server, client = connect()
    client.conn.send_headers(1, [(b":method", b"CONNECT"), (b":authority", b"a:443")], end_stream=True)
    assert roundtrip(server, client) == []
    assert client.answers[1].status == 501
    client.request("GET", "/", authority="user@evil")
    assert roundtrip(server, client) == []
    assert client.answers[3].status == 400


def test_oversized_header_block_is_a_connection_error() -> None:
    """Past twice the limit the header block is not decoded at all: GOAWAY ENHANCE_YOUR_CALM."""
    server, client = connect(SMALL)
    client.request("GET", "/", [("x-big", "v" * 3000)])
    feed(server, client.data())
    with pytest.raises(ProtocolError):
        events(server)
    client.receive(server.data_to_send())
    assert client.goaway is not None and client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM


# -- concurrency, resets, floods -----------------------------------------------------------


def test_streams_beyond_max_concurrent_streams_are_refused_until_one_is_released() -> None:
    server, client = connect(H2Limits(max_concurrent_streams=2))
    # The server advertises its limit (RFC 9113 6.5.2) ...
    assert client.conn.remote_settings.max_concurrent_streams == 2
    # ... and refuses streams beyond it with REFUSED_STREAM (section 5.1.2), here from a client
    # that ignores it.
    client.conn.remote_settings.max_concurrent_streams = 10
    client.conn.remote_settings.acknowledge()
    a, b, c = (client.request("GET", "/") for _ in range(3))
    assert [r.stream_id for r in roundtrip(server, client)] == [a, b]  # type: ignore[union-attr]
    assert client.answers[c].reset == ErrorCodes.REFUSED_STREAM
    # A stream counts until the application is done with it, even after the client reset it.
    client.conn.reset_stream(a)
    assert roundtrip(server, client) == [StreamReset(a)]
    d = client.request("GET", "/")
    assert roundtrip(server, client) == []
    assert client.answers[d].reset == ErrorCodes.REFUSED_STREAM
    server.release(a)
    e = client.request("GET", "/")
    assert [r.stream_id for r in roundtrip(server, client)] == [e]  # type: ignore[union-attr]


def test_reset_by_the_peer_is_reported_and_later_output_is_dropped() -> None:
    server, client = connect()
    sid = client.request("GET", "/")
    roundtrip(server, client)
    client.conn.reset_stream(sid)
    assert roundtrip(server, client) == [StreamReset(sid)]
    server.respond(sid, 200, (), b"late")
    assert server.data_to_send() == b""
    server.release(sid)
    assert server.open_streams == 0


def test_a_stream_reset_before_its_body_ended_is_forgotten() -> None:
    server, client = connect()
    sid = client.request("POST", "/", JSON, b"", end=False)
    client.conn.send_data(sid, b"part")
    client.conn.reset_stream(sid)
    assert roundtrip(server, client) == []
    assert server.open_streams == 0


def test_rapid_reset_ends_the_connection_with_enhance_your_calm(mode: str) -> None:
    """CVE-2023-44487: open and reset streams in a loop."""
    server, client = connect(H2Limits(reset_burst=20, reset_rate=0.0))
    wire = bytearray()
    block = encode_block(get_headers(b"/"))
    for i in range(25):
        sid = 1 + 2 * i
        wire += headers_frame(sid, block, end_stream=True)
        wire += rst_frame(sid)
    feed(server, bytes(wire), mode)
    got = []
    with pytest.raises(ProtocolError):
        while (ev := server.next_event()) is not NEED_DATA:
            got.append(ev)
    # The streams before the limit were delivered and reset (nothing is lost out of order).
    assert len([e for e in got if isinstance(e, Request)]) == 21
    assert len([e for e in got if isinstance(e, StreamReset)]) == 20
    client.receive(server.data_to_send())
    assert client.goaway is not None and client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    with pytest.raises(ProtocolError):  # sticky
        server.next_event()


def test_continuation_flood_ends_the_connection(mode: str) -> None:
    """CVE-2024-27316 family: a header block that never ends."""
    server, client = connect(SMALL)
    wire = headers_frame(1, encode_block(get_headers())[:3], end_stream=True, end_headers=False)
    wire += b"".join(continuation_frame(1, b"\x00" * 200) for _ in range(50))
    feed(server, wire, mode)
    with pytest.raises(ProtocolError):
        events(server)
    client.receive(server.data_to_send())
    assert client.goaway is not None and client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_many_empty_continuation_frames_end_the_connection() -> None:
    server, _ = connect()
    wire = headers_frame(1, encode_block(get_headers())[:3], end_headers=False)
    wire += b"".join(continuation_frame(1, b"") for _ in range(40))
    feed(server, wire)
    with pytest.raises(ProtocolError):
        events(server)


def test_an_overlong_frame_is_refused_from_its_header_alone() -> None:
    """RFC 9113 section 4.2: FRAME_SIZE_ERROR, decided before buffering the frame."""
    server, client = connect()
    header = (16385).to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big")  # DATA, 16 KiB + 1
    server.receive_data(header)  # nothing of the payload was sent
    with pytest.raises(ProtocolError):
        events(server)
    assert server.error_code == ErrorCodes.FRAME_SIZE_ERROR
    client.receive(server.data_to_send())
    assert client.goaway is not None and client.goaway.error_code == ErrorCodes.FRAME_SIZE_ERROR


def test_ping_flood_is_answered_up_to_the_budget_then_ends_the_connection() -> None:
    server, client = connect(H2Limits(control_burst=50, control_rate=0.0))  # (SETTINGS took 1)
    server.receive_data(ping_frame() * 49)
    assert events(server) == []
    client.receive(server.data_to_send())
    assert sum(isinstance(e, h2.events.PingAckReceived) for e in client.events) == 49
    server.receive_data(ping_frame() + settings_frame())
    with pytest.raises(ProtocolError):
        events(server)
    client.receive(server.data_to_send())
    assert client.goaway is not None and client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_budgets_refill_with_time() -> None:
    clock = Clock()
    server, _ = connect(H2Limits(control_burst=10, control_rate=10.0), clock=clock)
    for _ in range(5):
        server.receive_data(ping_frame() * 9)
        assert events(server) == []
        clock.now += 1.0


def test_empty_data_frames_spend_the_control_budget() -> None:
    """CVE-2019-9518: empty frames cost work and carry nothing."""
    server, client = connect(H2Limits(control_burst=10, control_rate=0.0))
    sid = client.request("POST", "/", JSON, end=False)
    feed(server, client.data() + data_frame(sid, b"") * 11)
    with pytest.raises(ProtocolError):
        events(server)


# -- protocol errors and the connection's end ------------------------------------------------


def test_a_bad_preface_is_a_protocol_error() -> None:
    server = H2Connection()
    server.receive_data(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
    with pytest.raises(ProtocolError):
        server.next_event()


@pytest.mark.parametrize(
    "frames",
    [
        data_frame(1, b"x"),  # DATA on an idle stream (RFC 9113 5.1)
        continuation_frame(1, b"", end_headers=True),  # CONTINUATION without HEADERS (6.10)
        headers_frame(2, encode_block(get_headers())),  # even stream id from a client (5.1.1)
        frame_bytes(0x3, 0, 0, b"\0\0\0\x08"),  # RST_STREAM on stream 0 (6.4)
        settings_frame({SettingCodes.INITIAL_WINDOW_SIZE: 2**31}),  # FLOW_CONTROL_ERROR (6.5.2)
        headers_frame(1, b"\xff\xff\xff\xff"),  # an undecodable header block (COMPRESSION_ERROR)
    ],
)
def test_peer_protocol_errors_send_goaway_and_raise_protocol_error(frames: bytes) -> None:
    server, client = connect()
    server.receive_data(frames)
    with pytest.raises(ProtocolError) as info:
        events(server)
    assert info.value.status == 400
    client.receive(server.data_to_send())
    assert client.goaway is not None and client.goaway.error_code != ErrorCodes.NO_ERROR
    server.receive_data(b"anything")  # dropped
    with pytest.raises(ProtocolError):
        server.next_event()


GOOD = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")]


@pytest.mark.parametrize(
    "fields",
    [
        [*GOOD, (b"Upper", b"x")],  # upper-case name (RFC 9113 8.2.1)
        [*GOOD, (b"x y", b"x")],  # not a token
        [*GOOD, (b"", b"x")],  # empty name
        [*GOOD, (b"x", b"a\x00b")],  # NUL in a value (8.2.1)
        [*GOOD, (b"x", b" padded")],  # leading whitespace (8.2.1)
        [*GOOD, (b"connection", b"close")],  # connection-specific (8.2.2)
        [*GOOD, (b"transfer-encoding", b"chunked")],
        [*GOOD, (b"te", b"gzip")],
        [*GOOD, (b"host", b"b")],  # differs from :authority (8.3.1)
        [*GOOD[:3], (b"host", b"a"), (b"host", b"a")],  # two hosts
        GOOD[:3],  # neither :authority nor host
        [*GOOD, (b":path", b"/again")],  # repeated pseudo-header (8.3)
        [*GOOD, (b":protocol", b"websocket")],  # unknown pseudo-header
        [(b":method", b"GET"), (b"x", b"1"), *GOOD[1:]],  # pseudo-header after a regular field
        [GOOD[0], GOOD[2], GOOD[3]],  # no :scheme
        [(b":method", b"G T"), *GOOD[1:]],  # :method not a token
        [*GOOD[:2], (b":path", b""), GOOD[3]],  # empty :path
        [*GOOD[:2], (b":path", b"/a b"), GOOD[3]],  # space in :path
        [*GOOD[:3], (b":authority", b"user@host")],  # userinfo
        [(b":status", b"100"), *GOOD],  # a response pseudo-header in a request (8.3)
        [*GOOD, (b"content-length", b"x")],  # not a number (RFC 9110 8.6)
        [*GOOD, (b"content-length", b"5")],  # END_STREAM here: the body is 0 bytes (8.1.1)
    ],
)
def test_malformed_requests_are_stream_errors(fields: list[tuple[bytes, bytes]]) -> None:
    """RFC 9113 section 8.1.1: a malformed request is a stream error (here a 400 first); the
    connection and its other streams go on."""
    import hpack

    server, _ = connect()
    server.receive_data(headers_frame(1, encode_block(fields)))
    assert events(server) == []
    frames = frames_of(server.data_to_send())
    decoder = hpack.Decoder()
    [head] = [f for f in frames if f.stream_id == 1 and type(f).__name__ == "HeadersFrame"]
    assert dict(decoder.decode(head.data, raw=True))[b":status"] == b"400"
    # The 400 does not end the stream: it is reset, with PROTOCOL_ERROR (a stream error).
    assert "END_STREAM" not in head.flags
    [rst] = [f for f in frames if type(f).__name__ == "RstStreamFrame"]
    assert (rst.stream_id, rst.error_code) == (1, ErrorCodes.PROTOCOL_ERROR)
    assert frames.index(rst) > frames.index(head)
    server.receive_data(headers_frame(3, encode_block(GOOD)))
    [req] = events(server)
    assert isinstance(req, Request) and req.stream_id == 3


def test_malformed_request_with_a_body_coming_is_reset_with_protocol_error() -> None:
    server, _ = connect()
    server.receive_data(headers_frame(1, encode_block([*GOOD, (b"Bad", b"1")]), end_stream=False))
    assert events(server) == []
    rst = [f for f in frames_of(server.data_to_send()) if type(f).__name__ == "RstStreamFrame"]
    assert [(f.stream_id, f.error_code) for f in rst] == [(1, ErrorCodes.PROTOCOL_ERROR)]


def test_malformed_trailers_drop_the_request() -> None:
    server, client = connect()
    sid = client.request("POST", "/", JSON, b"", end=False)
    client.conn.send_data(sid, b"{}")
    feed(server, client.data())
    assert events(server) == []
    server.receive_data(headers_frame(sid, encode_block([(b":path", b"/x")]), end_stream=True))
    assert events(server) == []
    client.receive(server.data_to_send())
    assert client.answers[sid].status == 400
    # Well-formed trailers are accepted (and dropped). (A new connection: the raw block above
    # went past the client's HPACK encoder.)
    server, client = connect()
    sid = client.request("POST", "/", JSON, b"", end=False)
    client.conn.send_data(sid, b"{}")
    client.conn.send_headers(sid, [(b"x-checksum", b"1")], end_stream=True)
    [req] = roundtrip(server, client)
    assert isinstance(req, Request) and req.body == b"{}" and b"x-checksum" not in req.headers


def test_eof_and_goaway_from_the_peer_close_the_connection() -> None:
    server, _ = connect()
    server.receive_data(b"")
    assert server.next_event() is CONNECTION_CLOSED
    server, client = connect()
    client.conn.close_connection()
    assert roundtrip(server, client) == [CONNECTION_CLOSED]
    assert server.closed


def test_graceful_goaway_lets_open_streams_finish_and_refuses_new_ones() -> None:
    server, client = connect()
    sid = client.request("GET", "/")
    roundtrip(server, client)
    server.goaway()
    [goaway] = frames_of(server.data_to_send())  # (the h2 client stops at a GOAWAY: read raw)
    assert isinstance(goaway, GoAwayFrame)
    assert (goaway.error_code, goaway.last_stream_id) == (ErrorCodes.NO_ERROR, sid)
    late = client.request("GET", "/")
    server.receive_data(client.data())
    assert events(server) == []
    server.respond(sid, 200, (), b"done")
    frames = frames_of(server.data_to_send())
    assert [(type(f).__name__, f.stream_id) for f in frames] == [
        ("RstStreamFrame", late),  # refused: the client may retry it elsewhere
        ("HeadersFrame", sid),
        ("DataFrame", sid),
    ]
    assert frames[0].error_code == ErrorCodes.REFUSED_STREAM
    assert "END_STREAM" in frames[2].flags


def test_timeouts_body_idle_header_block_and_preface() -> None:
    clock = Clock()
    server, client = connect(clock=clock)
    sid = client.request("POST", "/", JSON, b"", end=False)
    roundtrip(server, client)
    clock.now += 31
    server.check_timeouts()
    client.receive(server.data_to_send())
    assert answer_of(client, sid) == (408, ErrorCodes.NO_ERROR)
    clock.now += 74
    server.check_timeouts()
    assert not server.closed
    clock.now += 2
    server.check_timeouts()
    assert server.closed and events(server) == [CONNECTION_CLOSED]
    client.receive(server.data_to_send())
    assert client.goaway is not None and client.goaway.error_code == ErrorCodes.NO_ERROR

    server, client = connect(clock=clock)
    server.receive_data(headers_frame(1, encode_block(get_headers())[:2], end_headers=False))
    clock.now += 11
    server.check_timeouts()
    assert server.closed

    for partial in (PREFACE[:10], PREFACE, PREFACE + settings_frame()[:5]):
        # The client preface is the magic and a SETTINGS frame (RFC 9113 section 3.4).
        server = H2Connection(H2Limits(), H2Timeouts(), clock)
        server.receive_data(partial)
        clock.now += 9
        server.check_timeouts()
        assert not server.closed
        clock.now += 2
        server.check_timeouts()
        assert server.closed, partial


# -- our frame layer: what RFC 9113 and RFC 7541 say, beyond what the h2 state machine did ------


def goaway_of(server: H2Connection) -> int | None:
    codes = [f.error_code for f in frames_of(server.data_to_send()) if isinstance(f, GoAwayFrame)]
    return codes[-1] if codes else None


def test_an_undecodable_header_block_is_a_compression_error() -> None:
    """RFC 9113 section 4.3: a field block that cannot be decoded is COMPRESSION_ERROR."""
    for block in (b"\xff\xff\xff\xff", b"\x80", b"\xbf", b"\x40\x85abc", b"\x3f\xe2\x1f"):
        server, _ = connect()
        server.receive_data(headers_frame(1, block))
        with pytest.raises(ProtocolError):
            events(server)
        assert server.error_code == ErrorCodes.COMPRESSION_ERROR, block
        assert goaway_of(server) == ErrorCodes.COMPRESSION_ERROR


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "first",
    [ping_frame(), settings_frame(ack=True), headers_frame(1, encode_block(get_headers())), frame_bytes(0xA, 0, 0)],
    ids=["ping", "settings-ack", "headers", "unknown"],
)
def test_the_client_preface_must_go_on_with_settings(first: bytes, mode: str) -> None:
    """RFC 9113 section 3.4: the preface is the magic and a SETTINGS frame (not an ACK)."""
    server = H2Connection()
    feed(server, PREFACE + first + settings_frame(), mode)
    with pytest.raises(ProtocolError):
        events(server)
    assert server.error_code == ErrorCodes.PROTOCOL_ERROR
    assert goaway_of(server) == ErrorCodes.PROTOCOL_ERROR


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (frame_bytes(0x4, 0, 1, b""), ErrorCodes.PROTOCOL_ERROR),  # SETTINGS on a stream (6.5)
        (frame_bytes(0x6, 0, 1, b"\0" * 8), ErrorCodes.PROTOCOL_ERROR),  # PING on a stream (6.7)
        (frame_bytes(0x0, 0, 0, b"x"), ErrorCodes.PROTOCOL_ERROR),  # DATA on stream 0 (6.1)
        (frame_bytes(0x6, 0, 0, b"\0" * 7), ErrorCodes.FRAME_SIZE_ERROR),  # PING of 7 bytes (6.7)
        (frame_bytes(0x4, 0, 0, b"\0" * 5), ErrorCodes.FRAME_SIZE_ERROR),  # SETTINGS not 6n (6.5)
        (frame_bytes(0x4, 1, 0, b"\0" * 6), ErrorCodes.FRAME_SIZE_ERROR),  # SETTINGS ACK with data
        (frame_bytes(0x8, 0, 0, b"\0\0\0\0"), ErrorCodes.PROTOCOL_ERROR),  # WINDOW_UPDATE of 0 (6.9)
        (frame_bytes(0x8, 0, 0, b"\x7f\xff\xff\xff"), ErrorCodes.FLOW_CONTROL_ERROR),  # window > 2^31-1
        (frame_bytes(0x5, 0x4, 1, b"\0\0\0\x02\x82"), ErrorCodes.PROTOCOL_ERROR),  # PUSH_PROMISE (8.4)
        (frame_bytes(0x3, 0, 2, b"\0\0\0\x08"), ErrorCodes.PROTOCOL_ERROR),  # RST_STREAM, idle (6.4)
        (settings_frame({SettingCodes.MAX_FRAME_SIZE: 100}), ErrorCodes.PROTOCOL_ERROR),  # (6.5.2)
        (settings_frame({SettingCodes.ENABLE_PUSH: 2}), ErrorCodes.PROTOCOL_ERROR),
    ],
)
def test_connection_errors_carry_the_code_rfc_9113_names(frame: bytes, code: int) -> None:
    server, _ = connect()
    server.receive_data(frame)
    with pytest.raises(ProtocolError):
        events(server)
    assert server.error_code == code
    assert goaway_of(server) == code


def test_stream_errors_reset_one_stream_and_the_connection_goes_on() -> None:
    """RFC 9113 sections 5.1, 5.3.1, 8.1: trailers without END_STREAM, a stream that depends on
    itself, HEADERS on a half-closed (remote) stream, a body longer than its content-length."""
    block = encode_block(GOOD)
    cases = [
        # trailers without END_STREAM (8.1)
        headers_frame(1, block, end_stream=False) + headers_frame(1, encode_block([(b"x-t", b"1")]), end_stream=False),
        # a stream that depends on itself (5.3.1): HEADERS with PRIORITY naming itself
        frame_bytes(0x1, 0x25, 1, b"\x00\x00\x00\x01\x10" + block),
        # DATA beyond the content-length (8.1.1)
        headers_frame(1, encode_block([*GOOD, (b"content-length", b"2")]), end_stream=False)
        + data_frame(1, b"abc", end_stream=True),
    ]  # fmt: skip
    for case in cases:
        server, _ = connect()
        server.receive_data(case)
        got = events(server)
        assert not [e for e in got if isinstance(e, Request) and e.stream_id == 1], case
        rst = [f for f in frames_of(server.data_to_send()) if type(f).__name__ == "RstStreamFrame"]
        assert [(f.stream_id, f.error_code) for f in rst] == [(1, ErrorCodes.PROTOCOL_ERROR)], case
        server.receive_data(headers_frame(3, encode_block(GOOD)))
        [req] = events(server)
        assert isinstance(req, Request) and req.stream_id == 3


def test_data_on_a_closed_stream_is_stream_closed_and_ignored_after_our_reset() -> None:
    """RFC 9113 section 5.1: DATA on a half-closed (remote) stream is a stream error
    STREAM_CLOSED; frames on a stream we reset are ignored (the client may not have seen it)."""
    server, _ = connect()
    server.receive_data(headers_frame(1, encode_block(GOOD)))  # END_STREAM: half-closed (remote)
    assert [type(e) for e in events(server)] == [Request]
    server.data_to_send()
    server.receive_data(data_frame(1, b"late"))
    assert events(server) == [StreamReset(1)]
    rst = [f for f in frames_of(server.data_to_send()) if type(f).__name__ == "RstStreamFrame"]
    assert [(f.stream_id, f.error_code) for f in rst] == [(1, ErrorCodes.STREAM_CLOSED)]
    server.receive_data(data_frame(1, b"more") + headers_frame(1, encode_block([(b"x", b"1")])))
    assert events(server) == [] and not server.closed
    assert [type(f).__name__ for f in frames_of(server.data_to_send())] == []


def test_frames_after_end_stream_both_ways_end_the_connection_after_a_client_reset_the_stream() -> None:
    """RFC 9113 section 5.1, "closed": after END_STREAM (both ways) a frame is a connection error
    STREAM_CLOSED; after the client's RST_STREAM, a stream error STREAM_CLOSED."""
    server, _ = connect()
    server.receive_data(headers_frame(1, encode_block(GOOD), end_stream=False))
    events(server)
    server.receive_data(rst_frame(1) + data_frame(1, b"late"))
    assert events(server) == []
    rst = [f for f in frames_of(server.data_to_send()) if type(f).__name__ == "RstStreamFrame"]
    assert [(f.stream_id, f.error_code) for f in rst] == [(1, ErrorCodes.STREAM_CLOSED)]
    server.receive_data(headers_frame(3, encode_block(GOOD)))
    [req] = events(server)
    assert isinstance(req, Request)
    server.respond(3, 200, (), b"done")
    server.release(3)
    server.data_to_send()
    server.receive_data(data_frame(3, b"late"))
    with pytest.raises(ProtocolError):
        events(server)
    assert server.error_code == ErrorCodes.STREAM_CLOSED


def test_cookies_are_joined_with_semicolons_and_other_repeats_with_commas() -> None:
    """RFC 9113 section 8.2.3; RFC 9110 section 5.3."""
    server, _ = connect()
    server.receive_data(
        headers_frame(1, encode_block([*GOOD, (b"cookie", b"a=1"), (b"cookie", b"b=2"), (b"x", b"1"), (b"x", b"2")]))
    )
    [req] = events(server)
    assert isinstance(req, Request)
    assert req.headers[b"cookie"] == b"a=1; b=2" and req.headers[b"x"] == b"1, 2"


def test_padded_frames_are_unpadded_and_padding_counts_against_the_window() -> None:
    server, _ = connect()
    block = encode_block([*GOOD, (b"content-length", b"3")])
    server.receive_data(frame_bytes(0x1, 0x4 | 0x8, 1, b"\x05" + block + b"\0" * 5))
    server.receive_data(frame_bytes(0x0, 0x1 | 0x8, 1, b"\x10abc" + b"\0" * 16))
    [req] = events(server)
    assert isinstance(req, Request) and req.body == b"abc"
    # Padding as long as the frame: PROTOCOL_ERROR (section 6.1).
    server.receive_data(frame_bytes(0x1, 0x4 | 0x8, 3, b"\x09" + b"\x82" * 4))
    with pytest.raises(ProtocolError):
        events(server)
    assert server.error_code == ErrorCodes.PROTOCOL_ERROR


def test_a_repeated_header_block_is_decoded_once_and_gives_equal_requests() -> None:
    """The decoder caches blocks that leave the HPACK table alone; a cached block still gives
    each request its own headers dict."""
    server, client = connect()
    for _ in range(3):
        client.request("POST", "/mcp", JSON, b"{}")
    reqs = roundtrip(server, client)
    assert len(reqs) == 3
    assert all(isinstance(r, Request) for r in reqs)
    heads = [r.headers for r in reqs]  # type: ignore[union-attr]
    assert heads[0] == heads[1] == heads[2] and heads[0] is not heads[1]
    heads[0][b"x-mutated"] = b"1"
    assert b"x-mutated" not in heads[1]


def test_a_lower_header_table_size_is_signalled_before_the_next_block() -> None:
    """RFC 7541 sections 4.2 and 6.3: when the client lowers SETTINGS_HEADER_TABLE_SIZE, our next
    header block starts with a dynamic table size update (nghttp2 requires it)."""
    server, client = connect(settings={SettingCodes.HEADER_TABLE_SIZE: 0})
    sid = client.request("GET", "/")
    roundtrip(server, client)
    server.respond(sid, 200, (), b"ok")
    [head] = [f for f in frames_of(server.data_to_send()) if type(f).__name__ == "HeadersFrame"]
    assert head.data[:1] == b"\x20"  # size update to 0
    sid = client.request("GET", "/")
    roundtrip(server, client)
    server.respond(sid, 200, (), b"ok")
    [head] = [f for f in frames_of(server.data_to_send()) if type(f).__name__ == "HeadersFrame"]
    assert head.data[:1] != b"\x20"  # once


def test_a_connection_holds_at_most_max_connection_buffer() -> None:
    """Answers beyond what the client's windows take are queued up to max_connection_buffer for
    the whole connection; the answer that does not fit resets its stream (ENHANCE_YOUR_CALM), a
    graceful GOAWAY follows and new streams are refused."""
    limits = H2Limits(max_connection_buffer=300_000)
    server, client = connect(limits, settings={SettingCodes.INITIAL_WINDOW_SIZE: 0})
    sids = [client.request("GET", "/") for _ in range(4)]
    assert len(roundtrip(server, client)) == 4
    for sid in sids[:2]:
        server.respond(sid, 200, (), b"x" * 100_000)
    assert server.buffered == 200_000 and not server.has_events
    server.respond(sids[2], 200, (), b"x" * 150_000)  # does not fit
    assert server.buffered == 200_000
    assert server.next_event() == StreamReset(sids[2])
    frames = frames_of(server.data_to_send())
    assert [(f.stream_id, f.error_code) for f in frames if type(f).__name__ == "RstStreamFrame"] == [
        (sids[2], ErrorCodes.ENHANCE_YOUR_CALM)
    ]
    assert [f.error_code for f in frames if isinstance(f, GoAwayFrame)] == [ErrorCodes.NO_ERROR]
    assert server.draining
    server.receive_data(headers_frame(11, encode_block(GOOD)))
    assert events(server) == []
    assert [(f.stream_id, f.error_code) for f in frames_of(server.data_to_send())] == [
        (11, ErrorCodes.REFUSED_STREAM)
    ]
    # Once the client reads, what was held goes out and the accounting goes back to 0.
    server.receive_data(settings_frame({SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20}))
    server.receive_data(frame_bytes(0x8, 0, 0, (1 << 20).to_bytes(4, "big")))
    while server.flush():
        pass
    assert server.buffered == 0


def test_request_bodies_count_against_the_connection_buffer() -> None:
    limits = H2Limits(max_connection_buffer=20_000)
    server, client = connect(limits)
    a = client.request("POST", "/mcp", JSON, b"", end=False)
    b = client.request("POST", "/mcp", JSON, b"", end=False)
    client.send_body(a, b"x" * 15_000, end=False)
    client.send_body(b, b"y" * 15_000, end=False)
    assert roundtrip(server, client) == []
    assert server.buffered == 15_000
    assert client.answers[b].reset == ErrorCodes.REFUSED_STREAM  # never seen by the application
    assert server.draining
    server.receive_data(data_frame(a, b"", end_stream=True))  # (the h2 client stops at the GOAWAY)
    [req] = events(server)
    assert isinstance(req, Request) and req.stream_id == a and len(req.body) == 15_000
    assert server.buffered == 0


def test_hpack_bomb_stops_decoding_at_twice_the_header_limit() -> None:
    """One 1,000-byte entry referenced 100 times decodes to 100 KB: ENHANCE_YOUR_CALM."""
    server, _ = connect(SMALL)
    entry = b"\x40\x05x-big\x7f\xe9\x06" + b"v" * 1000  # literal with incremental indexing
    server.receive_data(headers_frame(1, encode_block(GOOD) + entry))
    events(server)
    server.receive_data(headers_frame(3, b"\xbe" * 100))
    with pytest.raises(ProtocolError):
        events(server)
    assert server.error_code == ErrorCodes.ENHANCE_YOUR_CALM


# -- the Responder of a stream (mcp_fast/net/h2connection.py) ------------------------------------


class _Transport:
    """Just enough of an asyncio transport for Http2Connection: collects what is written."""

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.written += chunk

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def is_closing(self) -> bool:
        return False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def test_a_stream_answers_wait_disconnected_as_the_responder_contract_says() -> None:
    """Responder.wait_disconnected (mcp_fast/wire/responder.py): a future, the same one while
    nobody cancelled it, a new one after a waiter was cancelled with it, completed when the
    client resets the stream, and already complete when asked afterwards."""
    import asyncio

    from mcp_fast.net.connection import ConnectionSet, Timeouts
    from mcp_fast.net.flow import FlowControl
    from mcp_fast.net.h2connection import Http2Connection, Http2Stream

    async def main() -> None:
        held: list[Http2Stream] = []

        async def app(request: Request, responder: Http2Stream) -> None:
            held.append(responder)
            responder.start_stream(200, ((b"content-type", b"text/event-stream"),))
            await responder.wait_disconnected()

        connection = Http2Connection(app, H2Limits(), Timeouts(), ConnectionSet())
        transport = _Transport()
        client = H2Peer()
        connection.take_over(transport, FlowControl(transport), client.data())  # type: ignore[arg-type]
        sid = client.request("GET", "/mcp", {"accept": "text/event-stream"})
        connection.data_received(client.data())
        await asyncio.sleep(0)
        [stream] = held
        first = stream.wait_disconnected()
        assert isinstance(first, asyncio.Future) and stream.wait_disconnected() is first
        waiter = asyncio.ensure_future(asyncio.shield(first))
        await asyncio.sleep(0)
        first.cancel()  # as asyncio.wait_for does to what it waits on
        second = stream.wait_disconnected()
        assert second is not first and not second.done()
        waiter.cancel()
        connection.data_received(rst_frame(sid, ErrorCodes.CANCEL))
        assert second.done() and stream.disconnected
        third = stream.wait_disconnected()
        assert third is second or third.done()
        await asyncio.sleep(0)

    asyncio.run(main())
