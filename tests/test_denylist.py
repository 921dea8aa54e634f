"""The denylist of ended sessions in one process (``EndedSessions`` in
mcp_fast/transport/sessions.py): what it refuses, what it forgets, its bound and its size.

Shared between instances: test_shared_log.py; over real processes: test_sessions.py.
"""

from __future__ import annotations

import gc
import secrets
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from mcp_fast.transport.sessions import EndedSessions, JwtSessions, JwtSettings, Session, SessionNotFound

SECRET = "a-secret-for-the-denylist-tests-0123456789"
LATER = time.time() + 3600


def sessions(**settings: object) -> JwtSessions:
    return JwtSessions(JwtSettings(secrets=(SECRET,), **settings))  # type: ignore[arg-type]


def new_token(store: JwtSessions) -> str:
    return store.create("2025-11-25", {}, {"name": "t", "version": "1"}).token


def queued(ended: EndedSessions) -> int:
    """Entries in the FIFO (live ones: past the head)."""
    return len(ended._fifo_keys) - ended._head


def test_an_ended_session_is_refused_and_only_it() -> None:
    store = sessions()
    token, other = new_token(store), new_token(store)
    store.end(store.resolve(token))
    for _ in range(2):  # refused every time, not remembered as verified
        with pytest.raises(SessionNotFound, match="ended"):
            store.resolve(token)
    assert store.resolve(other).token == other


def test_a_session_ended_elsewhere_is_refused() -> None:
    store = sessions()
    token = new_token(store)
    session = store.resolve(token)  # remembered as verified ...
    store.ended_elsewhere({"sid": session.id, "exp": session.expires_at})
    with pytest.raises(SessionNotFound, match="ended"):  # ... and refused all the same
        store.resolve(token)
    # An ending that has expired already, or a malformed one, is not kept.
    store.ended_elsewhere({"sid": "gone", "exp": time.time() - 1})
    store.ended_elsewhere({"sid": 7, "exp": LATER})
    assert len(store._ended) == 1


def test_expired_endings_are_forgotten_from_the_front() -> None:
    ended = EndedSessions(100)
    for session_id, expires_at in (("a", 10.0), ("b", 20.0), ("c", 15.0), ("d", 30.0)):
        ended.add(session_id, expires_at)
    ended.forget_expired(16.0)
    # "c" has expired but ended after "b": it waits behind it.
    assert ("a" in ended, "b" in ended, "c" in ended, "d" in ended) == (False, True, True, True)
    ended.forget_expired(20.0)  # an entry expiring at ``now`` is forgotten (its token is refused anyway)
    assert ("b" in ended, "c" in ended, "d" in ended) == (False, False, True)
    assert len(ended) == queued(ended) == 1
    ended.forget_expired(31.0)
    assert len(ended) == queued(ended) == 0


def test_ending_a_session_forgets_the_expired_endings() -> None:
    store = sessions()
    now = time.time()
    old = Session("old", "t-old", "2025-11-25", {}, {}, now - 1)
    store.end(old)  # (its own expiry has passed: it goes at once)
    store.end(Session("new", "t-new", "2025-11-25", {}, {}, now + 3600))
    assert "old" not in store._ended
    assert "new" in store._ended
    assert len(store._ended) == 1


def test_the_bound_evicts_the_oldest() -> None:
    ended = EndedSessions(3)
    for session_id in "abcd":
        ended.add(session_id, LATER)
    assert [session_id in ended for session_id in "abcd"] == [False, True, True, True]
    assert len(ended) == queued(ended) == 3
    # Many more: the last ``limit`` stay, and the FIFO is compacted as it goes.
    ended = EndedSessions(100)
    ids = [f"s{n}" for n in range(10_000)]
    for session_id in ids:
        ended.add(session_id, LATER)
        assert len(ended._fifo_keys) <= 2 * 100 + 1
    assert len(ended) == queued(ended) == 100
    assert not any(session_id in ended for session_id in ids[:-100])
    assert all(session_id in ended for session_id in ids[-100:])


def test_the_bound_through_the_sessions() -> None:
    store = sessions(denylist_size=2)
    first, second, third = (new_token(store) for _ in range(3))
    for token in (first, second, third):
        store.end(store.resolve(token))
    assert store.resolve(first).token == first  # past the bound: the oldest ending is forgotten
    for token in (second, third):
        with pytest.raises(SessionNotFound, match="ended"):
            store.resolve(token)


def test_a_session_ended_again_is_kept_once(tmp_path: Path) -> None:
    ended = EndedSessions(2)
    ended.add("a", LATER)
    ended.add("a", LATER)
    ended.add("b", LATER)  # "a" is still within the bound: it was kept once
    assert "a" in ended and "b" in ended
    assert len(ended) == queued(ended) == 2
    # Ended here, heard again from the fleet (its message, and its line in the shared directory).
    store = sessions(denylist_dir=tmp_path, denylist_poll_seconds=0.0)
    token, other = new_token(store), new_token(store)
    session = store.resolve(token)
    store.end(session)
    store.end(session)
    store.ended_elsewhere({"sid": session.id, "exp": session.expires_at})
    assert store.resolve(other)  # reads the directory: this instance's own line comes back
    assert len(store._ended) == queued(store._ended) == 1


def test_keys_are_small_ints() -> None:
    """60 bits: each key is a 32-byte int (a full 64-bit hash would take 36)."""
    ended = EndedSessions(1000)
    for _ in range(1000):
        ended.add(secrets.token_urlsafe(16), LATER)
    assert all(0 <= key < 1 << 60 and sys.getsizeof(key) == 32 for key in ended.keys)


def test_100k_endings_cost_under_100_bytes_each() -> None:
    """What the denylist holds at its default bound, counted by tracemalloc (a map from the id to
    its expiry held about 186 bytes an entry; this about 90)."""
    count = 100_000
    ids = [secrets.token_urlsafe(16) for _ in range(count)]  # made before: not counted
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ended = EndedSessions(count)
        for n, session_id in enumerate(ids):
            ended.add(session_id, LATER + n)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(ended) == count
    assert held / count < 100, f"{held / count:.1f} bytes an entry"
