"""Fuzzing the SSE encoder (mcp_fast.wire.sse) against an independent WHATWG parser.

- any data (newlines of every kind, NUL, any Unicode, invalid UTF-8) comes back from
  the parser as one event whose data equals the input after LF-normalisation;
- ids and event names round-trip, and ones holding CR, LF or NUL are refused with
  ValueError (they would start a new field, or make the id ignored);
- a retry value round-trips, and a negative one is refused;
- a stream of many events, comments and keep-alives parses to exactly those events, in
  order (a comment, whatever its text, never produces or corrupts an event).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz._support import examples
from fuzz._whatwg_sse import SseEvent, normalise_newlines, parse
from mcp_fast.wire import sse

LINE_BREAKY = [
    b"\r\n",
    b"\r",
    b"\n",
    b"\n\n",
    b"\r\r",
    b"\x00",
    b"data: x",
    b":",
    b" ",
    b"\xef\xbb\xbf",
    b"\xff",
    b"id: 1",
]
data_bytes = (
    st.binary(max_size=200)
    | st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass"))
    | st.lists(st.sampled_from(LINE_BREAKY) | st.binary(max_size=5), max_size=20).map(b"".join)
)
# A field value (id, event name) the encoder accepts: anything without CR, LF or NUL.
field_values = st.binary(max_size=40).filter(lambda b: not any(c in b for c in b"\r\n\x00")) | st.text(
    st.characters(exclude_characters="\r\n\x00", exclude_categories=["Cs"]), max_size=30
).map(str.encode)
bad_field_values = st.builds(
    lambda a, bad, b: a + bad + b,
    st.binary(max_size=10),
    st.sampled_from([b"\r", b"\n", b"\r\n", b"\x00"]),
    st.binary(max_size=10),
)


def expected_text(data: bytes) -> str:
    """What the data must read as after a round trip: UTF-8 with replacement, LF-normalised."""
    return normalise_newlines(data.decode("utf-8", errors="replace"))


def expected_field(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


@settings(max_examples=examples(300))
@given(data_bytes, st.none() | field_values, st.none() | field_values, st.none() | st.integers(0, 2**40))
def test_event_round_trips(
    data: bytes, event_id: bytes | None, event: bytes | None, retry: int | None
) -> None:
    encoded = sse.encode_event(data, event_id=event_id, event=event, retry_ms=retry)
    assert encoded.endswith(b"\n\n")
    parsed = parse(encoded)
    expected_id = "" if event_id is None else expected_field(event_id)
    assert parsed.events == [
        SseEvent(expected_field(event) if event else "message", expected_text(data), expected_id)
    ]
    assert parsed.retry == retry
    assert parsed.last_event_id == expected_id


@settings(max_examples=examples(200))
@given(data_bytes, st.sampled_from(["id", "event"]), bad_field_values)
def test_ids_and_event_names_with_line_breaks_or_nul_are_refused(
    data: bytes, which: str, value: bytes
) -> None:
    with pytest.raises(ValueError):
        if which == "id":
            sse.encode_event(data, event_id=value)
        else:
            sse.encode_event(data, event=value)


@settings(max_examples=examples(50))
@given(data_bytes, st.integers(max_value=-1))
def test_a_negative_retry_is_refused(data: bytes, retry: int) -> None:
    # "retry: -1" is not a number to a parser (it ignores the field): refuse to write it.
    with pytest.raises(ValueError):
        sse.encode_event(data, retry_ms=retry)


@settings(max_examples=examples(200))
@given(data_bytes)
def test_message_fast_path_round_trips(data: bytes) -> None:
    parsed = parse(sse.encode_message(data))
    assert parsed.events == [SseEvent("message", expected_text(data), "")]


# A stream: events, comments (any text) and keep-alives, in any order; each item is
# (kind, data, id, event name).
Item = tuple[str, bytes, bytes | None, bytes | None]
items: st.SearchStrategy[Item] = st.one_of(
    st.tuples(st.just("event"), data_bytes, st.none() | field_values, st.none() | field_values),
    st.tuples(st.just("message"), data_bytes, st.none(), st.none()),
    st.tuples(st.just("comment"), data_bytes, st.none(), st.none()),
    st.tuples(st.just("keepalive"), st.just(b""), st.none(), st.none()),
)


@settings(max_examples=examples(200))
@given(st.lists(items, max_size=12))
def test_streams_parse_to_exactly_their_events(stream: list[Item]) -> None:
    wire = bytearray()
    expected: list[SseEvent] = []
    last_id = ""
    for kind, data, event_id, event in stream:
        if kind == "event":
            wire += sse.encode_event(data, event_id=event_id, event=event)
            if event_id is not None:
                last_id = expected_field(event_id)
            event_type = expected_field(event) if event else "message"
            expected.append(SseEvent(event_type, expected_text(data), last_id))
        elif kind == "message":
            wire += sse.encode_message(data)
            expected.append(SseEvent("message", expected_text(data), last_id))
        elif kind == "comment":
            wire += sse.encode_comment(data)
        else:
            wire += sse.KEEPALIVE_COMMENT
    assert parse(bytes(wire)).events == expected


@settings(max_examples=examples(100))
@given(data_bytes)
def test_a_comment_alone_dispatches_nothing(text: bytes) -> None:
    assert parse(sse.encode_comment(text)).events == []
