"""``Idempotency-Key`` on ``tools/call``: a retry gets the first call's result, the tool runs once.

The pattern of the IETF draft "The Idempotency-Key HTTP Header Field" (draft-ietf-httpapi-
idempotency-key-header), applied per JSON-RPC ``tools/call``:
- the key is the client's, unique per intended operation; a retry sends the same key, from the
  same caller (principal, else session, else client address), with the same arguments;
- within ``--idempotency-ttl`` such a retry is answered with the first call's result and the tool
  does not run again; a retry while the first call still runs waits for it;
- the same key with other arguments (or another tool) is refused: -32602 naming the key (the
  draft's 422: a key reused for another request);
- a first call that fails with a JSON-RPC error, or is cancelled, is not remembered: a retry runs.

A built-in middleware that the pipeline enters only for a ``tools/call`` that carries the header:
other requests never see it. Entries are per process (bounded: ``max_entries``, least recently
used out first); behind a load balancer a retry reaching another instance runs again, as with
the result cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from mcp_fast.bounded import BoundedMap, kept
from mcp_fast.call import Call, CallNext
from mcp_fast.ops.ratelimit import caller_of
from mcp_fast.protocol.jsonrpc import INVALID_PARAMS, McpError, dumps

MAX_KEY_LENGTH: Final = 255
MAX_ENTRIES: Final = 10_000


@dataclass
class _Entry:
    fingerprint: bytes  # of the tool name and its canonical arguments
    expires: float
    result: bytes | None = None  # the first call's result object, as JSON
    running: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def fingerprint(call: Call) -> bytes:
    """SHA-256 of the tool name and its arguments as canonical JSON (sorted keys)."""
    params = call.params or {}
    try:
        canonical = orjson.dumps([params.get("name"), params.get("arguments")], option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits: fall back to the text the standard library writes
        canonical = repr([params.get("name"), params.get("arguments")]).encode()
    return hashlib.sha256(canonical).digest()


class Idempotency:
    """The middleware: ``async def __call__(call, call_next)``."""

    def __init__(
        self, ttl: float, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic
    ):
        self.ttl = ttl
        self._entries: BoundedMap[tuple[str, str], _Entry] = BoundedMap(max_entries)
        self._clock = clock
        self.replays = 0

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        raw = call.raw_header(b"idempotency-key")
        assert raw is not None  # the pipeline enters only with the header
        key = raw.decode("latin-1").strip()
        if not key or len(key) > MAX_KEY_LENGTH:
            raise McpError(
                INVALID_PARAMS,
                f"Invalid params: an Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters",
            )
        slot = (caller_of(call), key)
        mine = fingerprint(call)
        while True:
            entry = self._entries.get(slot)
            if entry is None or entry.expires <= self._clock():
                break
            if entry.fingerprint != mine:
                raise McpError(
                    INVALID_PARAMS,
                    f"Invalid params: the Idempotency-Key {key!r} was used for another tool call "
                    "(other arguments); use a new key for a new operation",
                    {"idempotencyKey": key},
                )
            if entry.result is not None:
                self.replays += 1
                return orjson.loads(entry.result)  # a fresh copy: middleware may change it
            await asyncio.shield(entry.running)  # the first call still runs: wait for its end
            # ...then look again: its result, or (it failed) nothing, and this call runs.
        entry = _Entry(mine, self._clock() + self.ttl)
        self._entries.put(slot, entry)
        try:
            result = await call_next(call)
        except BaseException:
            if self._entries.get(slot) is entry:
                self._entries.pop(slot, None)  # not remembered: a retry runs again
            raise
        finally:
            if not entry.running.done():
                entry.running.set_result(None)
        if call.cancelled or not _complete(result):
            if self._entries.get(slot) is entry:
                self._entries.pop(slot, None)
            return result
        try:
            entry.result = kept(dumps(result))
        except TypeError:
            self._entries.pop(slot, None)  # not JSON as it is: the pipeline's encoder decides
        return result


def _complete(result: Any) -> bool:
    """A final result (not a 2026-07-28 input-required round, which the client answers and
    retries with the same key)."""
    return type(result) is dict and result.get("resultType", "complete") == "complete"
