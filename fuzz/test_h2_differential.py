"""HTTP/2: our frame layer against the ``h2`` state machine, frame by frame (the differential
suite, as ``test_h1_fuzz.py`` is against h11).

The oracle is ``fuzz/_h2_oracle.py``: the HTTP/2 core as it was on ``h2`` (same limits, same
event interface). The same generated and mutated frame sequences (``test_h2_frames``'
strategies) go through both, one frame at a time, each request answered the same way. After
every frame the observable outcome must be the same: the events (requests with method, target,
headers and body; stream resets; the connection's end), whether the connection failed and the
GOAWAY code, and per stream the final status and the RST_STREAM codes the client saw.

Where we differ from h2 on purpose the difference is a ``Rule`` in ``RULES``, with the RFC 9113
section that decides it, and a predicate that checks the difference is exactly the stated one.
The first frame at which the two disagree must match a rule (else the test fails); after it the
states have parted, and the comparison of that input stops. ``test_rules_are_reached`` makes
sure every rule is exercised by a fixed example, so none is dead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hpack
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import Frame
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from fuzz import _h2_oracle as oracle
from fuzz._support import examples
from fuzz.test_h2_frames import LIMITS, PREFACE, answer, conversations, fb, mutated
from mcp_fast.wire import h2 as ours
from mcp_fast.wire.events import CONNECTION_CLOSED, NEED_DATA, ProtocolError, Request, StreamReset

OUR_LIMITS = [LIMITS, ours.H2Limits()]


def oracle_limits(limits: ours.H2Limits) -> oracle.H2Limits:
    return oracle.H2Limits(
        max_header_bytes=limits.max_header_bytes, max_header_count=limits.max_header_count,
        max_target_bytes=limits.max_target_bytes, max_body_bytes=limits.max_body_bytes,
        max_concurrent_streams=limits.max_concurrent_streams, reset_burst=limits.reset_burst,
        reset_rate=limits.reset_rate, control_burst=limits.control_burst, control_rate=limits.control_rate,
    )  # fmt: skip


def split_frames(data: bytes) -> list[bytes]:
    """The preface (or what stands in its place), then each frame as its 9-byte header says."""
    pieces = [data[: len(PREFACE)]]
    i = len(PREFACE)
    while i < len(data):
        length = int.from_bytes(data[i : i + 3], "big") if i + 3 <= len(data) else 0
        end = min(len(data), i + 9 + length)
        pieces.append(data[i:end])
        i = end
    return [p for p in pieces if p]


# ---------------------------------------------------------------------------
# What a client can observe


@dataclass
class Seen:
    """What one core showed after some frames."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    error: int | None = None  # the GOAWAY code of a connection error (None: no error)
    status: dict[int, int] = field(default_factory=dict)  # stream -> final :status
    resets: dict[int, list[int]] = field(default_factory=dict)  # stream -> RST_STREAM codes sent
    goaway: int | None = None  # any GOAWAY's code
    reasons: dict[int, bytes] = field(default_factory=dict)  # stream -> body of a 400 answer

    def key(self) -> tuple[Any, ...]:
        return (self.events, self.error, self.status, self.resets)


class Side:
    """One core, driven like the network layer drives it, and a parser of its output."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.seen = Seen()
        self.buffer = bytearray()
        self.decoder = hpack.Decoder()
        self.decoder.max_allowed_table_size = 1 << 32
        self.dead = False

    def feed(self, piece: bytes) -> None:
        if self.dead:
            return
        self.core.receive_data(piece)
        while True:
            try:
                event = self.core.next_event()
            except ProtocolError:
                self.dead = True
                self.seen.error = int(self.core.error_code)
                break
            if event is NEED_DATA:
                break
            if event is CONNECTION_CLOSED:
                self.seen.events.append(("closed",))
                self.dead = True
                break
            if isinstance(event, Request):
                self.seen.events.append(
                    ("request", event.stream_id, event.method, event.target, event.headers, bytes(event.body))
                )
                answer(self.core, event)
            else:
                assert isinstance(event, StreamReset)
                self.seen.events.append(("reset", event.stream_id))
        self.core.flush()
        self.parse(self.core.data_to_send())

    def parse(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(bytes(self.buffer[:9])))
            if len(self.buffer) < 9 + length:
                break
            frame.parse_body(memoryview(bytes(self.buffer[9 : 9 + length])))
            del self.buffer[: 9 + length]
            name = type(frame).__name__
            if name == "HeadersFrame":
                status = int(dict(self.decoder.decode(frame.data, raw=True))[b":status"])  # type: ignore[attr-defined]
                if status >= 200:
                    self.seen.status[frame.stream_id] = status
            elif name == "DataFrame" and self.seen.status.get(frame.stream_id) == 400:
                self.seen.reasons[frame.stream_id] = self.seen.reasons.get(frame.stream_id, b"") + frame.data  # type: ignore[attr-defined]
            elif name == "RstStreamFrame":
                self.seen.resets.setdefault(frame.stream_id, []).append(frame.error_code)  # type: ignore[attr-defined]
            elif name == "GoAwayFrame":
                self.seen.goaway = frame.error_code  # type: ignore[attr-defined]


class Clock:
    now = 500.0

    def __call__(self) -> float:
        return self.now


def sides(limits: ours.H2Limits) -> tuple[Side, Side]:
    clock = Clock()
    return (
        Side(ours.H2Connection(limits, ours.H2Timeouts(), clock)),
        Side(oracle.H2Connection(oracle_limits(limits), oracle.H2Timeouts(), clock)),
    )


# ---------------------------------------------------------------------------
# The stated differences


@dataclass(frozen=True)
class Frame9:
    """The frame at which the cores parted: its header fields, and its place."""

    kind: int
    flags: int
    stream_id: int
    length: int
    index: int  # 1: the first frame after the preface's magic
    in_block: bool = False  # a header block was open before it (no END_HEADERS yet)
    payload: bytes = b""


def frame_of(piece: bytes, index: int, in_block: bool) -> Frame9:
    if len(piece) < 9:
        return Frame9(-1, 0, 0, 0, index, in_block)
    return Frame9(piece[3], piece[4], int.from_bytes(piece[5:9], "big") & 0x7FFFFFFF,
                  int.from_bytes(piece[:3], "big"), index, in_block, piece[9:])  # fmt: skip


Check = Callable[[Frame9, Seen, Seen, Seen, Seen], bool]  # (frame, ours before/after, h2 before/after)


@dataclass(frozen=True)
class Rule:
    name: str
    rfc: str
    why: str
    check: Check


def _new_resets(before: Seen, after: Seen, sid: int) -> list[int]:
    return after.resets.get(sid, [])[len(before.resets.get(sid, [])) :]


def _malformed_reset(f: Frame9, ob: Seen, oa: Seen, hb: Seen, ha: Seen) -> bool:
    """We answer a malformed request 400 and always reset it with PROTOCOL_ERROR; h2's core
    ended the 400 with END_STREAM and reset only a stream whose body was still coming."""
    sid = f.stream_id
    return (
        oa.status.get(sid) == ha.status.get(sid) == 400
        and _new_resets(ob, oa, sid) == [ErrorCodes.PROTOCOL_ERROR]
        and _new_resets(hb, ha, sid) in ([], [ErrorCodes.PROTOCOL_ERROR])
        and oa.error is None and ha.error is None
        and oa.events == ha.events
    )  # fmt: skip


def _stream_error_for_connection_error(f: Frame9, ob: Seen, oa: Seen, hb: Seen, ha: Seen) -> bool:
    """A problem confined to one stream: we answer that stream (a 4xx/5xx) or reset it and go
    on; h2 ended the whole connection (it checks Content-Length, trailers and informational
    pseudo-headers itself, before our limits and checks answer the stream)."""
    sid = f.stream_id
    ours_reset = _new_resets(ob, oa, sid)
    answered = sid not in ob.status and oa.status.get(sid, 0) >= 400
    reset = bool(ours_reset) and ours_reset[-1] in (
        ErrorCodes.NO_ERROR, ErrorCodes.PROTOCOL_ERROR, ErrorCodes.STREAM_CLOSED,
        ErrorCodes.FRAME_SIZE_ERROR, ErrorCodes.FLOW_CONTROL_ERROR,
    )  # fmt: skip
    return sid != 0 and oa.error is None and ha.error is not None and (answered or reset)


def _content_length_checked(f: Frame9, ob: Seen, oa: Seen, hb: Seen, ha: Seen) -> bool:
    """A request whose content-length differs from its body is malformed: 400 and a stream
    error for us; h2 let a HEADERS frame with END_STREAM and a non-zero content-length pass."""
    sid = f.stream_id
    delivered = [e for e in ha.events[len(hb.events) :] if e[0] == "request" and e[1] == sid]
    return (
        bool(delivered)
        and delivered[0][4].get(b"content-length", b"0") != b"%d" % len(delivered[0][5])
        and oa.status.get(sid) == 400 and _new_resets(ob, oa, sid) == [ErrorCodes.PROTOCOL_ERROR]
        and oa.error is None
    )  # fmt: skip


def _stricter_head(f: Frame9, ob: Seen, oa: Seen, hb: Seen, ha: Seen) -> bool:
    """Heads h2 let through that are malformed: a pseudo-header field after a regular one (h2
    moves cookie fields to the end before we see them; section 8.3), a content-length given
    twice (we join repeated fields, and "2, 2" is not a length; RFC 9110 8.6 allows refusing it)."""
    sid = f.stream_id
    reason = oa.reasons.get(sid, b"")
    return (
        oa.status.get(sid) == 400 and _new_resets(ob, oa, sid) == [ErrorCodes.PROTOCOL_ERROR]
        # (no reason when the client's window could not take our 400's body)
        and (b"pseudo-header field after a regular field" in reason or b"invalid content-length" in reason
             or not reason)
        and ha.status.get(sid) != 400 and oa.error is None
    )  # fmt: skip


def _idle_stream(f: Frame9, ob: Seen, oa: Seen, hb: Seen, ha: Seen) -> bool:
    """RST_STREAM, WINDOW_UPDATE or DATA on an idle stream (one the client has not opened, or an
    even one: a server that never pushes opens none) is a connection error PROTOCOL_ERROR for
    us; h2 let some pass."""
    return f.kind in (0x0, 0x3, 0x8) and oa.error == ErrorCodes.PROTOCOL_ERROR and ha.error is None


def _extension_frame(f: Frame9, ob: Seen, oa: Seen, hb: Seen, ha: Seen) -> bool:
    """Frame types beyond RFC 9113's are ignored (section 4.1); h2 parses ALTSVC (RFC 7838)
    and ends the connection on a malformed one, though a server ignores ALTSVC."""
    return f.kind > 0x9 and oa.error is None and ha.error is not None and oa.events == hb.events


def _settings_first(f: Frame9, ob: Seen, oa: Seen, hb: Seen, ha: Seen) -> bool:
    """The preface's magic must be followed by a SETTINGS frame: a connection error for us."""
    return f.index == 1 and (f.kind != 0x4 or f.flags & 0x1) and oa.error == ErrorCodes.PROTOCOL_ERROR


def _ignored_after_our_reset(f: Frame9, ob: Seen, oa: Seen, hb: Seen, ha: Seen) -> bool:
    """DATA or a header block on a stream we reset is ignored (the client may have sent it
    before it saw our RST_STREAM), and so is a WINDOW_UPDATE on a closed stream (6.9); h2
    answered some of those with RST_STREAM(STREAM_CLOSED) or a connection error."""
    sid = f.stream_id
    closed = sid in ob.resets or sid in ob.status
    return (
        ((f.kind in (0x0, 0x1, 0x9) and sid in ob.resets) or (f.kind == 0x8 and closed))
        and not _new_resets(ob, oa, sid)
        and oa.error is None and oa.events == ob.events
        and (ha.error is not None or bool(_new_resets(hb, ha, sid)))
    )  # fmt: skip


def _continuation_alone(f: Frame9, ob: Seen, oa: Seen, hb: Seen, ha: Seen) -> bool:
    """A CONTINUATION that follows no open header block is a connection error for us; h2 let one
    on a closed stream pass with RST_STREAM(STREAM_CLOSED)."""
    return f.kind == 0x9 and oa.error == ErrorCodes.PROTOCOL_ERROR and ha.error is None


def _block_interrupted(f: Frame9, ob: Seen, oa: Seen, hb: Seen, ha: Seen) -> bool:
    """Inside a header block only CONTINUATION frames of its stream may come, extension frames
    included: we refuse the interrupting frame from its 9-byte header; h2 let unknown types pass,
    or judged only the complete frame."""
    return f.in_block and oa.error == ErrorCodes.PROTOCOL_ERROR and ha.error is None


def _closed_after_end_stream(f: Frame9, ob: Seen, oa: Seen, hb: Seen, ha: Seen) -> bool:
    """DATA or a header block on a stream closed by END_STREAM both ways is a connection error
    STREAM_CLOSED; h2 answered it with RST_STREAM(STREAM_CLOSED) on that stream."""
    return (
        f.kind in (0x0, 0x1, 0x9) and oa.error == ErrorCodes.STREAM_CLOSED and ha.error is None
        and _new_resets(hb, ha, f.stream_id) == [ErrorCodes.STREAM_CLOSED]
    )  # fmt: skip


def _settings_in_order(f: Frame9, ob: Seen, oa: Seen, hb: Seen, ha: Seen) -> bool:
    """Every value of a SETTINGS frame is checked, in order (section 6.5.3); hyperframe keeps
    only the last value of a repeated identifier, so h2 missed an invalid earlier one."""
    ids = [f.payload[i : i + 2] for i in range(0, len(f.payload) - 5, 6)]
    return (
        f.kind == 0x4 and len(ids) != len(set(ids)) and ha.error is None
        and oa.error in (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.FLOW_CONTROL_ERROR)
    )  # fmt: skip


def _size_of_cookie_crumbs(f: Frame9, ob: Seen, oa: Seen, hb: Seen, ha: Seen) -> bool:
    """The field section size (section 6.5.2: name, value and 32 per field line) counts the
    cookie crumbs one by one, as received; h2 joins them into one field first (8.2.3), so near
    the limit we answer 431 where h2's count stayed under it."""
    sid = f.stream_id
    return oa.status.get(sid) == 431 and ha.status.get(sid) != 431 and oa.error is None and ha.error is None


def _push_promise(f: Frame9, ob: Seen, oa: Seen, hb: Seen, ha: Seen) -> bool:
    """A PUSH_PROMISE from a client is a connection error at once; h2 first waited for the end
    of the header block it starts."""
    return f.kind == 0x5 and oa.error == ErrorCodes.PROTOCOL_ERROR and ha.error is None


def _same_error_other_code(f: Frame9, ob: Seen, oa: Seen, hb: Seen, ha: Seen) -> bool:
    """Both end the connection, with another code where RFC 9113 names ours: FRAME_SIZE_ERROR
    for a frame of the wrong size (6.x), STREAM_CLOSED for HEADERS on a closed stream (5.1),
    PROTOCOL_ERROR for a frame that interrupts a header block (6.10), COMPRESSION_ERROR for a
    block that cannot be decoded (4.3), ENHANCE_YOUR_CALM for an HPACK bomb."""
    allowed = {
        ErrorCodes.FRAME_SIZE_ERROR, ErrorCodes.STREAM_CLOSED, ErrorCodes.PROTOCOL_ERROR,
        ErrorCodes.COMPRESSION_ERROR, ErrorCodes.ENHANCE_YOUR_CALM,
    }  # fmt: skip
    return oa.error in allowed and ha.error is not None and oa.events == ha.events


RULES = [
    Rule("malformed request reset", "RFC 9113 8.1.1", "a malformed request is a stream error PROTOCOL_ERROR",
         _malformed_reset),
    Rule("stream error, not connection error", "RFC 9113 5.1, 5.4.2, 6.3, 8.1, 8.1.1",
         "trailers without END_STREAM, a response pseudo-header, a content-length that the body "
         "contradicts, HEADERS/DATA on a half-closed stream, a PRIORITY of the wrong size: errors "
         "of one stream", _stream_error_for_connection_error),
    Rule("SETTINGS first", "RFC 9113 3.4", "the client preface is the magic and a SETTINGS frame",
         _settings_first),
    Rule("ignored after our reset", "RFC 9113 5.1 (closed)",
         "frames on a stream we reset are ignored", _ignored_after_our_reset),
    Rule("stricter head", "RFC 9113 8.3; RFC 9110 8.6", "pseudo-header fields come first; one content-length",
         _stricter_head),
    Rule("content-length checked", "RFC 9113 8.1.1", "content-length must equal the body's length",
         _content_length_checked),
    Rule("idle stream", "RFC 9113 5.1, 5.1.1, 6.4", "only HEADERS and PRIORITY may name an idle stream",
         _idle_stream),
    Rule("extension frame", "RFC 9113 4.1, 5.5; RFC 7838 4", "unknown frame types are ignored",
         _extension_frame),
    Rule("CONTINUATION alone", "RFC 9113 6.10",
         "a CONTINUATION must follow HEADERS or CONTINUATION without END_HEADERS", _continuation_alone),
    Rule("closed after END_STREAM", "RFC 9113 5.1 (closed)", "frames after END_STREAM end the connection",
         _closed_after_end_stream),
    Rule("PUSH_PROMISE", "RFC 9113 8.4", "a client cannot push", _push_promise),
    Rule("SETTINGS in order", "RFC 9113 6.5.3", "each value is processed in order", _settings_in_order),
    Rule("size of cookie crumbs", "RFC 9113 6.5.2, 8.2.3", "each field line counts 32 octets",
         _size_of_cookie_crumbs),
    Rule("header block interrupted", "RFC 9113 5.5, 6.10", "a header block is contiguous", _block_interrupted),
    Rule("error code", "RFC 9113 4.3, 5.1, 6.x, 6.10", "the same connection error, the code the RFC names",
         _same_error_other_code),
]  # fmt: skip


def parted(a: Seen, b: Seen) -> bool:
    return a.key() != b.key()


def compare(data: bytes, limits: ours.H2Limits, reached: set[str] | None = None) -> str | None:
    """Feed ``data`` frame by frame to both; the rule that explains where they part (None:
    they never did). Fails when no rule does."""
    mine, theirs = sides(limits)
    in_block = False
    for index, piece in enumerate(split_frames(data)):
        was_in_block = in_block
        if index and len(piece) >= 9 and piece[3] in (0x1, 0x5, 0x9):
            in_block = not piece[4] & 0x4
        ob = _copy(mine.seen)
        hb = _copy(theirs.seen)
        mine.feed(piece)
        theirs.feed(piece)
        if not parted(mine.seen, theirs.seen):
            if mine.dead or theirs.dead:
                break
            continue
        f = frame_of(piece, index, was_in_block)
        for rule in RULES:
            if rule.check(f, ob, mine.seen, hb, theirs.seen):
                if reached is not None:
                    reached.add(rule.name)
                return rule.name
        note(f"frame {f}")
        raise AssertionError(f"the cores part at frame {index} ({f}) and no rule says why:\n"
                             f"ours: {mine.seen}\nh2:   {theirs.seen}")  # fmt: skip
    return None


def _copy(seen: Seen) -> Seen:
    return Seen(list(seen.events), seen.error, dict(seen.status),
                {k: list(v) for k, v in seen.resets.items()}, seen.goaway, dict(seen.reasons))  # fmt: skip


# ---------------------------------------------------------------------------
# Properties

limits_strategy = st.sampled_from(OUR_LIMITS)


@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.too_slow])
@given(conversations(), limits_strategy)
def test_differential_generated_frames(data: bytes, limits: ours.H2Limits) -> None:
    compare(data, limits)


@settings(max_examples=examples(200), suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), limits_strategy)
def test_differential_mutated_frames(data: bytes, limits: ours.H2Limits) -> None:
    compare(data, limits)


# ---------------------------------------------------------------------------
# Each rule, on an example that needs it (so that no rule is dead)

_ENC = hpack.Encoder()
GOOD = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/mcp"), (b":authority", b"localhost")]
SETTINGS = fb(0x4, 0, 0)


def settings_frame_of(*values: tuple[int, int]) -> bytes:
    return fb(0x4, 0, 0, b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in values))


def block(fields: list[tuple[bytes, bytes]]) -> bytes:
    out: bytes = hpack.Encoder().encode(fields)
    return out


RULE_EXAMPLES = {
    "malformed request reset": PREFACE + SETTINGS + fb(0x1, 0x5, 1, block([*GOOD, (b"X-Upper", b"1")])),
    "stream error, not connection error": PREFACE + SETTINGS
    + fb(0x1, 0x4, 1, block(GOOD)) + fb(0x1, 0x4, 1, block([(b"x-trailer", b"1")])),
    "SETTINGS first": PREFACE + fb(0x6, 0, 0, b"\0" * 8),
    "ignored after our reset": PREFACE + SETTINGS
    + fb(0x1, 0x4, 1, block([*GOOD, (b"content-length", b"999999999")])) + fb(0x0, 0, 1, b"x"),
    "stricter head": PREFACE + SETTINGS + fb(0x1, 0x5, 1, block([(b"cookie", b"a=1"), *GOOD])),
    "content-length checked": PREFACE + SETTINGS + fb(0x1, 0x5, 1, block([*GOOD, (b"content-length", b"2")])),
    "idle stream": PREFACE + SETTINGS + fb(0x1, 0x5, 1, block(GOOD)) + fb(0x3, 0, 2, b"\0\0\0\x08"),
    "extension frame": PREFACE + SETTINGS + fb(0xA, 0, 0, b"\x00"),
    # (found by the properties, shrunk: stream 1 completed, then a CONTINUATION on it)
    "CONTINUATION alone": PREFACE + SETTINGS + fb(0x1, 0, 1, b"D") + fb(0x9, 0x4, 1, b"\x83b\x92W\x86A\x86\xa0\xe4\x1d\x13\x9d\t")
    + fb(0x1, 0x4, 0x7FFFFFFF, b"\xbf\x86\xbe") + fb(0x9, 0, 1, b"\x82"),
    # (the interrupting frame not complete yet: we judge it from its header, h2 waited for it)
    "header block interrupted": PREFACE + SETTINGS + fb(0x1, 0x1, 1, b"\x82") + fb(0xA0, 0, 0, b"x" * 10)[:12],
    "closed after END_STREAM": PREFACE + SETTINGS + fb(0x1, 0x5, 1, block(GOOD)) + fb(0x0, 0, 1, b"x"),
    "SETTINGS in order": PREFACE + settings_frame_of((0x2, 7), (0x2, 0)),
    "size of cookie crumbs": PREFACE + SETTINGS
    + fb(0x1, 0x5, 1, block([*GOOD, *[(b"cookie", b"c%d=1" % i) for i in range(15)], (b"x-pad", b"v" * 30)])),
    "PUSH_PROMISE": PREFACE + SETTINGS + fb(0x5, 0, 2, b"\0\0\0\x02\x82"),
    "error code": PREFACE + SETTINGS + fb(0x1, 0x5, 1, b"\x82\xff\xff\xff\xff\x0f"),
}


@pytest.mark.parametrize("name", [rule.name for rule in RULES])
def test_rules_are_reached(name: str) -> None:
    reached: set[str] = set()
    assert compare(RULE_EXAMPLES[name], LIMITS, reached) == name


def test_valid_conversation_is_identical() -> None:
    """A plain exchange: no difference at all."""
    data = PREFACE + SETTINGS + fb(0x1, 0x4, 1, block([*GOOD, (b"content-type", b"application/json")]))
    data += fb(0x0, 0x1, 1, b'{"a":1}') + fb(0x1, 0x5, 3, block(GOOD))
    assert compare(data, ours.H2Limits()) is None


# ---------------------------------------------------------------------------
# HPACK: our decoder against the hpack package's, block by block on one connection

FIELD_NAMES = [b":method", b":path", b"content-type", b"content-length", b"x-a", b"cookie", b"accept", b"x-long"]


@st.composite
def header_blocks(draw: st.DrawFn) -> list[bytes]:
    """Blocks from one encoder (so dynamic-table references mean something), some mutated."""
    encoder = hpack.Encoder()
    blocks = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.integers(0, 5)) == 0:
            encoder.header_table_size = draw(st.sampled_from([0, 100, 4096]))
        fields = draw(
            st.lists(st.tuples(st.sampled_from(FIELD_NAMES), st.binary(max_size=300)), min_size=1, max_size=8)
        )
        sensitive = draw(st.booleans())
        items = [hpack.NeverIndexedHeaderTuple(n, v) if sensitive else (n, v) for n, v in fields]
        block = bytearray(encoder.encode(items, huffman=draw(st.booleans())))
        if draw(st.integers(0, 3)) == 0 and block:
            pos = draw(st.integers(0, len(block) - 1))
            block[pos] = draw(st.integers(0, 255))  # a mutated block: both must refuse or agree
        blocks.append(bytes(block))
    return blocks


@settings(max_examples=examples(300))
@given(header_blocks(), st.sampled_from([600, 1 << 20]))
def test_hpack_decoder_against_hpack(blocks: list[bytes], max_list: int) -> None:
    """Same fields, or both refuse (after which the connection is gone, so the run stops)."""
    from mcp_fast.wire.h2hpack import DecodeError, HeaderDecoder, HeaderListTooLarge

    mine = HeaderDecoder(max_list)
    theirs = hpack.Decoder(max_header_list_size=max_list)
    theirs.max_allowed_table_size = 4096
    for block in blocks:
        try:
            expected: Any = [tuple(f) for f in theirs.decode(block, raw=True)]
        except hpack.OversizedHeaderListError:
            expected = HeaderListTooLarge
        except hpack.HPACKError:
            expected = DecodeError
        try:
            got: Any = mine.decode(block)
        except HeaderListTooLarge:
            got = HeaderListTooLarge
        except DecodeError:
            got = DecodeError
        if (got is DecodeError and expected is HeaderListTooLarge) or (got is HeaderListTooLarge and expected is DecodeError):
            return  # both refuse the block; which fault is found first may differ
        assert got == expected
        if got in (DecodeError, HeaderListTooLarge):
            return
