"""Fuzzing the stdio line framer (mcp_fast.wire.lines) against a one-line model.

- however a stream is cut into chunks, the framer returns the same frames as the model
  (split on LF; a line over the limit is one OVERSIZE; blank lines are skipped; an
  unterminated last line counts at EOF);
- it never holds more than the limit between calls, whatever the input.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz._support import examples
from mcp_fast.wire.lines import OVERSIZE, Frame, LineFramer

PIECES = [b"\n", b"\r\n", b" ", b"{}", b'{"jsonrpc":"2.0"}', b"\xff", b"\x00", b"x" * 40]
streams = st.lists(st.sampled_from(PIECES) | st.binary(max_size=30), max_size=40).map(b"".join)


def model(stream: bytes, limit: int) -> list[Frame]:
    *lines, rest = stream.split(b"\n")
    frames: list[Frame] = []
    for line in [*lines, rest]:
        if len(line) > limit:
            frames.append(OVERSIZE)
        elif line.strip():
            frames.append(line)
    return frames


@settings(max_examples=examples(300))
@given(stream=streams, limit=st.integers(1, 64), cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_any_chunking_gives_the_model_frames(stream: bytes, limit: int, cuts: list[int]) -> None:
    framer = LineFramer(limit)
    points = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    frames: list[Frame] = []
    for start, end in itertools.pairwise(points):
        frames += framer.receive_data(stream[start:end])
        assert framer.buffered_bytes <= limit
    frames += framer.receive_eof()
    assert frames == model(stream, limit)


@settings(max_examples=examples(60))
@given(stream=streams, limit=st.integers(1, 16))
def test_byte_by_byte_equals_one_feed(stream: bytes, limit: int) -> None:
    whole = LineFramer(limit)
    expected = whole.receive_data(stream) + whole.receive_eof()
    framer = LineFramer(limit)
    frames: list[Frame] = []
    for index in range(len(stream)):
        frames += framer.receive_data(stream[index : index + 1])
    assert frames + framer.receive_eof() == expected
