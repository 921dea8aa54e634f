"""A bounded LRU map: what every per-process table uses so that no client can grow it without end;
and ``kept``, for the bytes such a table holds."""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedMap(OrderedDict[K, V]):
    """An LRU map: the oldest entry goes when a new one would pass ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


def kept(data: bytes) -> bytes:
    """A copy of ``data`` allocated to its length, for bytes a table keeps for a while.

    orjson (3.12 and later) returns bytes whose allocation is at least 4 KiB whatever their
    length, and never shrinks it: a 150-byte SSE event kept for resumption held 4 KiB, and the
    event store's 10,000 streams grew the server by 200 MiB in bench/soak.py. The copy costs
    about 0.15 us; what is answered and dropped at once needs none.
    """
    return bytes(memoryview(data))
