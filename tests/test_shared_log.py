"""The fleet's shared logs (mcp_fast/transport/shared_log.py), in process: ended sessions, and
entries that carry a payload (the cancellations).

Two `JwtSessions` with one secret stand for two instances of a fleet; they share a directory the
way instances share a volume (and `--workers` share a private one: test_workers.py). Over real
processes and nginx: test_sessions.py and test_nginx.py.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from mcp_fast.fleet.shared_log import SharedLog, parse_lines
from mcp_fast.transport.sessions import JwtSessions, JwtSettings, SessionNotFound

SECRET = "a-secret-for-the-shared-denylist-tests-0123"
HOUR = 3600


def instance(directory: Path, poll_seconds: float = 0.0) -> JwtSessions:
    settings = JwtSettings(secrets=(SECRET,), denylist_dir=directory, denylist_poll_seconds=poll_seconds)
    return JwtSessions(settings)


def new_session(sessions: JwtSessions) -> str:
    return sessions.create("2025-11-25", {}, {"name": "t", "version": "1"}).token


def test_a_session_ended_on_one_instance_is_refused_by_another(tmp_path: Path) -> None:
    a, b = instance(tmp_path / "ended"), instance(tmp_path / "ended")
    token = new_session(a)
    assert b.resolve(token).token == token
    a.end(a.resolve(token))
    with pytest.raises(SessionNotFound, match="ended"):
        b.resolve(token)
    with pytest.raises(SessionNotFound, match="ended"):
        a.resolve(token)
    other = new_session(a)  # only that session
    assert b.resolve(other).token == other


def test_an_instance_started_later_knows_the_earlier_endings(tmp_path: Path) -> None:
    a = instance(tmp_path)
    token = new_session(a)
    a.end(a.resolve(token))
    with pytest.raises(SessionNotFound):
        instance(tmp_path).resolve(token)


def test_the_directory_is_read_at_most_once_per_poll_interval(tmp_path: Path) -> None:
    a, b = instance(tmp_path), instance(tmp_path, poll_seconds=3600)
    token = new_session(a)
    assert b.resolve(token)  # the first resolve looks (nothing ended yet) ...
    a.end(a.resolve(token))
    assert b.resolve(token)  # ... and the next look is an hour away: B does not know yet
    assert b._shared is not None
    b._shared.next_poll = 0.0  # the hour has passed
    with pytest.raises(SessionNotFound):
        b.resolve(token)


def test_parse_lines_takes_whole_lines_only_however_the_data_is_cut() -> None:
    data = b"abc_-9 1900000000\nxyz 1900000001\n"
    assert parse_lines(data) == ([("abc_-9", 1900000000.0, b""), ("xyz", 1900000001.0, b"")], len(data))
    # Byte by byte: each prefix gives exactly the lines it completes.
    for cut in range(len(data) + 1):
        endings, taken = parse_lines(data[:cut])
        assert taken == data[:cut].rfind(b"\n") + 1
        assert endings == parse_lines(data[:taken])[0]
    # Trailing data of a line still being written waits.
    assert parse_lines(data + b"half 19") == parse_lines(data)


@pytest.mark.parametrize(
    "line",
    [
        b"no-expiry\n",
        b"id notanumber\n",
        b"id nan\n",
        b"id inf\n",
        b"bad/id 1900000000\n",
        b"../../etc 1900000000\n",
        b" 1900000000\n",
        b"\xff\xfe 1900000000\n",
        b"x" * 200 + b" 1900000000\n",
    ],
)
def test_malformed_lines_are_skipped_and_the_rest_is_read(line: bytes) -> None:
    data = b"good1 1900000000\n" + line + b"good2 1900000000\n"
    endings, taken = parse_lines(data)
    assert [session_id for session_id, _, _ in endings] == ["good1", "good2"]
    assert taken == len(data)


def test_a_half_written_line_is_taken_once_it_is_complete(tmp_path: Path) -> None:
    shared = SharedLog(tmp_path, 0.0, "test")
    now = time.time()
    segment = tmp_path / f"{int(now) // HOUR}.log"
    segment.write_bytes(b"first 1900000000\nsecond 19")
    assert shared.refresh(now) == [("first", 1900000000.0, b"")]
    with open(segment, "ab") as file:
        file.write(b"00000000\n")
    assert shared.refresh(now) == [("second", 1900000000.0, b"")]
    assert shared.refresh(now) == []  # nothing new


def test_old_segments_go_once_every_token_in_them_has_expired(tmp_path: Path) -> None:
    now = time.time()
    hour = int(now) // HOUR
    expired = tmp_path / f"{hour - 3}.log"
    expired.write_bytes(b"gone %d\n" % (now - 10))
    still_valid = tmp_path / f"{hour - 3 + 1}.log"  # an old hour, but a token that lives on
    still_valid.write_bytes(b"kept %d\n" % (now + HOUR))
    recent = tmp_path / f"{hour - 1}.log"  # may still be written by a writer whose clock is behind
    recent.write_bytes(b"recent %d\n" % (now - 10))
    unrelated = tmp_path / "notes.txt"
    unrelated.write_bytes(b"not ours 1\n")
    endings = SharedLog(tmp_path, 0.0, "test").refresh(now)
    assert sorted(session_id for session_id, _, _ in endings) == ["gone", "kept", "recent"]
    assert not expired.exists()
    assert still_valid.exists() and recent.exists() and unrelated.exists()


def test_a_segment_written_again_from_its_start_is_read_again(tmp_path: Path) -> None:
    shared = SharedLog(tmp_path, 0.0, "test")
    now = time.time()
    segment = tmp_path / f"{int(now) // HOUR}.log"
    segment.write_bytes(b"one-that-is-long 1900000000\n")
    assert len(shared.refresh(now)) == 1
    segment.unlink()
    segment.write_bytes(b"two 1900000000\n")  # shorter than what was read before
    assert shared.refresh(now) == [("two", 1900000000.0, b"")]


def test_ending_appends_one_line_per_session_to_the_current_segment(tmp_path: Path) -> None:
    a = instance(tmp_path)
    sessions = [a.resolve(new_session(a)) for _ in range(3)]
    for session in sessions:
        a.end(session)
    [segment] = [path for path in tmp_path.iterdir()]
    assert segment.name == f"{int(time.time()) // HOUR}.log"
    lines = segment.read_bytes().splitlines()
    assert [line.split(b" ")[0].decode() for line in lines] == [session.id for session in sessions]
    assert all(int(line.split(b" ")[1]) >= session.expires_at for line, session in zip(lines, sessions, strict=True))
    assert oct(segment.stat().st_mode & 0o777) == oct(0o600)


def test_a_broken_directory_is_logged_once_and_local_endings_still_hold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "ended"
    a = instance(directory)
    token, other = new_session(a), new_session(a)
    directory.rmdir()
    directory.write_bytes(b"")  # a file where the directory was: listing and appending fail
    with caplog.at_level(logging.ERROR, logger="mcp_fast.sessions"):
        a.end(a.resolve(token))
        for _ in range(3):
            assert a.resolve(other).token == other  # each resolve looks again, and fails again
    with pytest.raises(SessionNotFound):
        a.resolve(token)  # ended here all the same
    messages = [record.getMessage() for record in caplog.records]
    assert sum("other instances are not told" in message for message in messages) == 1
    assert sum("cannot read the fleet's" in message for message in messages) == 1
    # Once the directory is back, the reads go on (and a later failure is logged again).
    directory.unlink()
    directory.mkdir()
    assert a.resolve(other).token == other
    assert a._shared is not None and a._shared._failing is False


def test_the_directory_is_created_private(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "ended"
    SharedLog(directory, 0.1, "test")
    assert directory.is_dir() and oct(directory.stat().st_mode & 0o777) == oct(0o700)
    assert os.listdir(directory) == []


def test_entries_carry_a_payload_of_one_line(tmp_path: Path) -> None:
    writer, reader = SharedLog(tmp_path, 0.0, "test"), SharedLog(tmp_path, 0.0, "test")
    now = time.time()
    writer.add("s1", now + 60, now, b'"request 1"')  # a JSON string with a space
    writer.add("s2", now + 60, now, b"17")
    writer.add("s3", now + 60, now)
    assert [(key, payload) for key, _, payload in reader.refresh(now)] == [
        ("s1", b'"request 1"'), ("s2", b"17"), ("s3", b""),
    ]  # fmt: skip
    with pytest.raises(ValueError):
        writer.add("s4", now + 60, now, b"two\nlines")
