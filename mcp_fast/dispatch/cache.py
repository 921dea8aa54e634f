"""The in-process result cache: encoded results of calls whose answer only depends on the request.

What is cached (decided by the dispatcher, ``dispatch.py``):
- ``tools/call`` of a tool declared with ``cache_ttl`` (its result depends only on its
  arguments, for that long), ``resources/read`` of a resource declared with ``cache_ttl``;
- the list results (``tools/list`` ...), which are the same for every caller until the
  registry changes.

An entry is the JSON text of a ``result`` (without the JSON-RPC envelope): a hit is answered
by splicing it after the request's own id, with no handler, validation or encoding at all.
Keys carry the protocol version (results are shaped per version), the method, the target
(tool name or URI), the canonical JSON of the arguments and, for ``private`` results, who
asks (a session or an Authorization header; anonymous private calls are not cached).

Bounded by entries and by bytes, least recently used first out; an entry also expires after
its TTL. Invalidation goes by tag (a tool, a URI, a list kind): ``MCPServer.invalidate_cache``
and ``notify_resource_updated`` drop what they name, a registry change drops its lists.
Per process: in a fleet each process has its own cache, and TTLs bound how stale it may be.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mcp_fast.bounded import kept

# (protocol version, method, target, canonical arguments, who asks -- "" when public)
CacheKey = tuple[str, str, str, bytes, str]

NO_EXPIRY: Final = float("inf")


def caller_key(session_id: str | None, credentials: bytes | None) -> str | None:
    """Who asks, for results kept per caller (cacheScope "private"): the session, else the
    credentials (a digest: the cache keeps no bearer tokens), else nobody (None)."""
    if session_id is not None:
        return "session " + session_id
    if credentials is None:
        return None
    return "authorization " + hashlib.blake2b(credentials, digest_size=16).hexdigest()


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires: float
    tag: str


@dataclass(slots=True)
class CacheSlot:
    """Where a cacheable request's result goes once it is computed (a miss)."""

    key: CacheKey
    ttl: float
    tag: str


@dataclass(frozen=True, slots=True)
class CacheStats:
    entries: int
    bytes: int
    hits: int
    misses: int


class ResultCache:
    """LRU of encoded results, bounded by ``max_entries`` and ``max_bytes``."""

    __slots__ = (
        "_by_tag",
        "_clock",
        "_entries",
        "_size",
        "evictions",
        "hits",
        "max_bytes",
        "max_entries",
        "misses",
    )

    def __init__(self, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a result cache needs room for at least one entry")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        # Insertion order is recency order: a hit moves its entry to the end.
        self._entries: dict[CacheKey, _Entry] = {}
        self._by_tag: dict[str, set[CacheKey]] = {}
        self._size = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0  # entries dropped to stay within the bounds (metrics)

    def get(self, key: CacheKey) -> bytes | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            self.misses += 1
            return None
        if entry.expires <= self._clock():
            self._forget(key, entry)
            self.misses += 1
            return None
        self._entries[key] = entry  # most recently used now
        self.hits += 1
        return entry.value

    def put(self, key: CacheKey, value: bytes, ttl: float, tag: str) -> None:
        """Keep ``value`` for ``ttl`` seconds (``NO_EXPIRY``: until invalidated or evicted).

        A value larger than an eighth of the byte budget is not kept: one result must not
        wipe out the cache.
        """
        if ttl <= 0 or len(value) > self.max_bytes // 8:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._forget(key, old)
        self._entries[key] = _Entry(kept(value), self._clock() + ttl, tag)
        self._by_tag.setdefault(tag, set()).add(key)
        self._size += len(value)
        while len(self._entries) > self.max_entries or self._size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._forget(oldest, self._entries.pop(oldest))
            self.evictions += 1

    def invalidate(self, tag: str) -> int:
        """Drop every entry under ``tag``; how many there were."""
        keys = self._by_tag.pop(tag, None)
        if not keys:
            return 0
        for key in keys:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._size -= len(entry.value)
        return len(keys)

    def invalidate_prefix(self, prefix: str) -> None:
        """Drop every entry whose tag starts with ``prefix`` (e.g. every tool's results)."""
        for tag in [tag for tag in self._by_tag if tag.startswith(prefix)]:
            self.invalidate(tag)

    def clear(self) -> None:
        self._entries.clear()
        self._by_tag.clear()
        self._size = 0

    def stats(self) -> CacheStats:
        return CacheStats(len(self._entries), self._size, self.hits, self.misses)

    def __len__(self) -> int:
        return len(self._entries)

    def _forget(self, key: CacheKey, entry: _Entry) -> None:
        """``entry`` (already out of ``_entries``) leaves the byte count and its tag."""
        self._size -= len(entry.value)
        keys = self._by_tag.get(entry.tag)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_tag[entry.tag]
