"""The stdio line framer (sans-I/O): the same messages however the bytes are split.

Spec: basic/transports.mdx "stdio": messages are delimited by newlines and MUST NOT contain
embedded newlines. A line over the limit is reported once and skipped without being buffered.
"""

from __future__ import annotations

import pytest

from mcp_fast.wire.lines import OVERSIZE, Frame, LineFramer

MESSAGES = [b'{"jsonrpc":"2.0","id":1,"method":"ping"}', b'{"a":"\xc3\xa9\\n"}', b"[1,2]"]
STREAM = b"".join(m + b"\n" for m in MESSAGES)


def feed_all(framer: LineFramer, chunks: list[bytes]) -> list[Frame]:
    frames: list[Frame] = []
    for chunk in chunks:
        frames += framer.receive_data(chunk)
    return frames + framer.receive_eof()


def test_all_at_once() -> None:
    assert feed_all(LineFramer(100), [STREAM]) == MESSAGES


def test_byte_by_byte() -> None:
    framer = LineFramer(100)
    frames: list[Frame] = []
    for index in range(len(STREAM)):
        frames += framer.receive_data(STREAM[index : index + 1])
        assert framer.buffered_bytes <= 100
    assert frames == MESSAGES
    assert framer.receive_eof() == []


@pytest.mark.parametrize("split", range(1, len(STREAM)))
def test_every_split_point(split: int) -> None:
    assert feed_all(LineFramer(100), [STREAM[:split], STREAM[split:]]) == MESSAGES


def test_trailing_data_without_newline_is_kept_until_eof() -> None:
    framer = LineFramer(100)
    assert framer.receive_data(STREAM + b'{"last":true}') == MESSAGES
    assert framer.buffered_bytes == len(b'{"last":true}')
    assert framer.receive_eof() == [b'{"last":true}']
    assert framer.receive_eof() == []


def test_blank_lines_are_skipped_and_crlf_is_left_to_the_json_parser() -> None:
    frames = feed_all(LineFramer(100), [b"\n\n  \r\n" + b'{"x":1}\r\n' + b"\n"])
    assert frames == [b'{"x":1}\r']  # orjson accepts the trailing CR as whitespace


def test_line_at_the_limit_passes_one_over_is_oversize() -> None:
    framer = LineFramer(10)
    assert framer.receive_data(b"x" * 10 + b"\n") == [b"x" * 10]
    assert framer.receive_data(b"y" * 11 + b"\nok\n") == [OVERSIZE, b"ok"]


def test_oversize_line_is_reported_before_its_end_and_never_buffered() -> None:
    framer = LineFramer(10)
    frames = framer.receive_data(b"z" * 8)
    assert frames == []
    frames = framer.receive_data(b"z" * 8)  # 16 bytes, no newline yet: reported now
    assert frames == [OVERSIZE]
    assert framer.buffered_bytes == 0
    for _ in range(1000):  # the rest of the huge line is dropped as it arrives
        assert framer.receive_data(b"z" * 1000) == []
        assert framer.buffered_bytes == 0
    # Framing resumes after the newline that ends the oversize line.
    assert framer.receive_data(b"zzz\n[1,2]\n") == [b"[1,2]"]


def test_oversize_line_byte_by_byte_then_recovery() -> None:
    framer = LineFramer(4)
    data = b"abcdefgh\n" + b"ok\n"
    frames: list[Frame] = []
    for index in range(len(data)):
        frames += framer.receive_data(data[index : index + 1])
        assert framer.buffered_bytes <= 4
    assert frames == [OVERSIZE, b"ok"]


def test_oversize_line_cut_by_eof_is_reported_once() -> None:
    framer = LineFramer(4)
    assert framer.receive_data(b"abcdefgh") == [OVERSIZE]
    assert framer.receive_eof() == []


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LineFramer(0)
