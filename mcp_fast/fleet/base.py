"""The fleet: what the instances of one server share, behind one small interface.

JWT sessions and the 2026-07-28 protocol make most requests independent of the instance that
serves them. What is left needs state every instance sees:

- ended sessions (a DELETE on one instance ends the session on all of them);
- messages addressed to the instance that runs something: ``notifications/cancelled`` (to the
  instance running the request), answers to server-to-client requests (to the instance whose
  handler waits), tasks/cancel and tasks/update (to the instance running the task);
- notifications not tied to a request (list-changed, resource-updated, task status), fanned out
  to the streams every instance holds;
- the event store (a stream resumed on another instance), tasks, rate-limit buckets.

``Fleet`` is that interface. ``LocalFleet`` (this module) is the default: one process, so it
shares nothing and every message goes to this process's own handlers. ``RedisFleet``
(``redis_fleet.py``, ``--redis``) shares all of it through Redis. The request path never asks
the fleet anything it could know locally: a session's denylist check is a local set that the
fleet keeps up to date (pub/sub, and a load at each reconnect).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from mcp_fast.bounded import BoundedMap
from mcp_fast.fleet.event_store import EventStore, MemoryEventStore
from mcp_fast.protocol.jsonrpc import INTERNAL_ERROR, HttpError

logger = logging.getLogger("mcp_fast.fleet")

# What the instances tell each other (the payloads are JSON objects).
ENDED: Final = "ended"  # {"sid": session id, "exp": expiry}: the session was ended
CANCEL: Final = "cancel"  # {"owner": session id, "id": request id}: notifications/cancelled
ANSWER: Final = "answer"  # {"id": request id, "owner": session id, "message": the response}
LIST_CHANGED: Final = "list_changed"  # {"kind": "tools" | "resources" | "prompts"}
RESOURCE_UPDATED: Final = "resource_updated"  # {"uri": ...}
TASK_STATUS: Final = "task_status"  # a task's record (tasks.py): its status changed
TASK_CANCEL: Final = "task_cancel"  # {"taskId": ...}: to the instance running the task
TASK_UPDATE: Final = "task_update"  # {"taskId": ..., "inputResponses": {...}}: the same

UNAVAILABLE_MESSAGE: Final = "Internal error: the fleet store (Redis) is unavailable"

# One message handler: called on the event loop with the message's payload.
Handler = Callable[[dict[str, Any]], None]


class FleetUnavailable(HttpError):
    """The shared store cannot be reached in time: the operation that needs it fails at once.

    Clients see JSON-RPC -32603 with this message, and HTTP 503 where the transport answers with
    a status (an ``HttpError``: Streamable HTTP answers a request refused with it as it answers a
    401 or a 429). Nothing about it is the client's fault, and a retry once the store is back works.
    """

    http_status: Final = 503

    def __init__(self) -> None:
        super().__init__(self.http_status, INTERNAL_ERROR, UNAVAILABLE_MESSAGE)


@dataclass(frozen=True, slots=True)
class BucketResult:
    """What ``Fleet.take`` decided: allowed or not, tokens left, seconds until ``cost`` would be."""

    allowed: bool
    remaining: float
    retry_after: float


@dataclass(frozen=True, slots=True)
class Grant:
    """What ``Fleet.take_up_to`` gave: whole tokens taken (0: none), and, when none, the seconds
    until one will be there."""

    tokens: int
    retry_after: float


class Fleet(Protocol):
    """What the instances of a server share. Every coroutine raises ``FleetUnavailable`` when the
    shared store cannot be reached within the fleet's timeout; nothing waits longer."""

    instance: str  # names this process in server-to-client request ids and direct messages
    shared: bool  # False: one process, there is nobody to tell
    event_store: EventStore
    # Called each time the shared store is (back) up: messages may have been missed meanwhile.
    on_reconnect: list[Callable[[], None]]

    @property
    def available(self) -> bool:
        """The shared store is reachable (``/ready`` reports it)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Call ``handler`` for every message on ``topic``, published by any instance."""
        ...

    async def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """Tell every other instance (this one has acted on it already)."""
        ...

    async def send(self, instance: str, topic: str, payload: dict[str, Any]) -> bool:
        """Tell one instance; False when no such instance listens."""
        ...

    async def end_session(self, session_id: str, expires_at: float) -> None:
        """Remember an ended session until ``expires_at`` and tell every other instance
        (``ENDED``; an instance that connects later loads it)."""
        ...

    async def save_task(self, task_id: str, owner: str, record: dict[str, Any], ttl_seconds: float) -> None:
        """Keep a task's record where every instance finds it."""
        ...

    async def load_task(self, task_id: str) -> dict[str, Any] | None: ...

    async def owner_tasks(self, owner: str) -> list[dict[str, Any]]:
        """The records of ``owner``'s tasks that have not expired."""
        ...

    async def take(self, key: str, rate: float, burst: float, cost: float = 1.0) -> BucketResult:
        """Take ``cost`` tokens from the bucket ``key`` (``burst`` at most, refilled at ``rate``
        per second), atomically for the whole fleet."""
        ...

    async def take_up_to(self, key: str, rate: float, burst: float, most: int) -> Grant:
        """Take as many whole tokens as the bucket ``key`` has, ``most`` at most, atomically for
        the whole fleet (the rate limiter's leases: ``ops/ratelimit.py``)."""
        ...


def new_instance_id() -> str:
    """Eight hex digits: what names an instance in request ids and channels."""
    return secrets.token_hex(4)


class Buckets:
    """Token buckets in this process (the in-process ``Fleet.take``), bounded in number."""

    def __init__(self, max_buckets: int = 100_000) -> None:
        # key -> (tokens, when they were counted, monotonic seconds)
        self._buckets: BoundedMap[str, tuple[float, float]] = BoundedMap(max_buckets)

    def take(
        self, key: str, rate: float, burst: float, cost: float = 1.0, now: float | None = None
    ) -> BucketResult:
        if now is None:
            now = time.monotonic()
        state = self._buckets.get(key)
        tokens, then = (burst, now) if state is None else state
        tokens = min(burst, tokens + max(0.0, now - then) * rate)
        if tokens >= cost:
            tokens -= cost
            allowed, retry_after = True, 0.0
        else:
            allowed, retry_after = False, (cost - tokens) / rate if rate > 0 else float("inf")
        self._buckets.put(key, (tokens, now))
        return BucketResult(allowed, tokens, retry_after)

    def take_up_to(self, key: str, rate: float, burst: float, most: int, now: float | None = None) -> Grant:
        if now is None:
            now = time.monotonic()
        state = self._buckets.get(key)
        tokens, then = (burst, now) if state is None else state
        tokens = min(burst, tokens + max(0.0, now - then) * rate)
        granted = min(most, int(tokens))
        if granted >= 1:
            tokens -= granted
            retry_after = 0.0
        else:
            granted, retry_after = 0, (1.0 - tokens) / rate if rate > 0 else float("inf")
        self._buckets.put(key, (tokens, now))
        return Grant(granted, retry_after)


class Subscribers:
    """The message handlers of this process, by topic (what ``Fleet.subscribe`` keeps)."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}

    def subscribe(self, topic: str, handler: Handler) -> None:
        self._handlers.setdefault(topic, []).append(handler)

    def deliver(self, topic: str, payload: dict[str, Any]) -> None:
        """Run this process's handlers of ``topic`` (a handler's bug is logged, never spread)."""
        for handler in self._handlers.get(topic, ()):
            try:
                handler(payload)
            except Exception:
                logger.exception("a fleet message handler of %r failed", topic)


class LocalFleet(Subscribers):
    """One process: nothing is shared, every message goes to this process's handlers."""

    shared = False

    def __init__(self, event_store: EventStore | None = None, instance: str | None = None) -> None:
        super().__init__()
        self.instance = instance or new_instance_id()
        self.event_store: EventStore = event_store if event_store is not None else MemoryEventStore()
        self._buckets = Buckets()
        self.on_reconnect: list[Callable[[], None]] = []  # never called: nothing to reconnect to

    @property
    def available(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, topic: str, payload: dict[str, Any]) -> None:
        return None  # no other instance

    async def send(self, instance: str, topic: str, payload: dict[str, Any]) -> bool:
        if instance != self.instance:
            return False
        self.deliver(topic, payload)
        return True

    async def end_session(self, session_id: str, expires_at: float) -> None:
        return None  # the session store of this process is the only one

    async def save_task(self, task_id: str, owner: str, record: dict[str, Any], ttl_seconds: float) -> None:
        return None  # the task store of this process is the only one

    async def load_task(self, task_id: str) -> dict[str, Any] | None:
        return None

    async def owner_tasks(self, owner: str) -> list[dict[str, Any]]:
        return []

    async def take(self, key: str, rate: float, burst: float, cost: float = 1.0) -> BucketResult:
        return self._buckets.take(key, rate, burst, cost)

    async def take_up_to(self, key: str, rate: float, burst: float, most: int) -> Grant:
        return self._buckets.take_up_to(key, rate, burst, most)
