"""What the per-process tables keep for a while is held at its size: orjson (3.12 and later)
returns bytes whose allocation is at least 4 KiB, and the soak (bench/soak.py) saw the event
store's 10,000 streams of small SSE events grow the server by 200 MiB before they were copied."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import orjson

from mcp_fast.bounded import kept
from mcp_fast.dispatch.cache import NO_EXPIRY, ResultCache
from mcp_fast.fleet.event_store import MemoryEventStore

COUNT = 2000


def event(n: int) -> bytes:
    params = {"progressToken": f"p{n}", "progress": n, "total": 3, "message": "2 to go"}
    return orjson.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})


def held_per_item(fill: Callable[[int], None]) -> float:
    """Bytes still allocated per item after ``fill(i)`` for each of COUNT items."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(COUNT):
            fill(n)
        return (tracemalloc.get_traced_memory()[0] - before) / COUNT
    finally:
        tracemalloc.stop()


def test_kept_copies_to_the_length() -> None:
    data = event(1)
    copy = kept(data)
    assert copy == data and copy is not data


def test_the_event_store_keeps_events_at_their_size() -> None:
    store = MemoryEventStore()
    streams = [store.open_stream("session") for _ in range(COUNT)]
    per_event = held_per_item(lambda n: store.append(streams[n], event(n)) and None)
    assert per_event < 1024, f"{per_event:.0f} bytes held per ~110-byte event"


def test_the_result_cache_keeps_results_at_their_size() -> None:
    cache = ResultCache(COUNT * 2, 64 << 20)

    def fill(n: int) -> None:
        cache.put(("2025-11-25", "tools/call", "echo", str(n).encode(), ""), event(n), NO_EXPIRY, "echo")

    per_entry = held_per_item(fill)
    assert per_entry < 1536, f"{per_entry:.0f} bytes held per ~110-byte result"
