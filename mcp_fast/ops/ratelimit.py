"""Rate limits: token buckets per caller (``--rate-limit 100/60s``) and per tool and caller
(``@server.tool(rate_limit="10/60s")``), a pipeline ``RequestCheck``.

A caller is the authorized principal, else the session, else the client address (after
``--forwarded-allow-ips``). A bucket holds ``count`` tokens and refills at ``count/window`` per
second, so a client may burst up to ``count`` and then goes at the average rate. Over the limit:
HTTP 429 with ``Retry-After`` (RFC 6585 section 4, RFC 9110 section 10.2.3) and the JSON-RPC error
-32000 with ``data.retryAfter`` (seconds) for transports without HTTP status.

Memory is bounded: at most ``max_callers`` buckets per limit, least recently used first out. A
flood of distinct callers evicts old buckets (an evicted caller starts again with a full bucket);
it cannot grow the table.

With ``--redis`` the buckets are the fleet's (``SharedTokenBuckets``): one bucket per caller in
Redis, taken atomically by every instance, so a caller is limited across the fleet. The check
stays synchronous: each instance spends tokens it leased from the shared bucket beforehand
(``lease_size`` at a time), and asks Redis again in the background when half of its lease is
spent. While Redis is unavailable each instance limits with its own buckets, as without it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, Protocol

from mcp_fast.bounded import BoundedMap
from mcp_fast.call import Call
from mcp_fast.fleet.base import Fleet, FleetUnavailable
from mcp_fast.protocol.jsonrpc import HttpError
from mcp_fast.registry import Rate, Registry

logger = logging.getLogger("mcp_fast.ratelimit")

# JSON-RPC 2.0 section 5.1: -32000 to -32099 are implementation-defined server errors.
RATE_LIMITED: Final = -32000
MAX_CALLERS: Final = 100_000
# A lease: 5 % of a limit's count, 50 at most, 1 at least (see SharedTokenBuckets).
LEASE_FRACTION: Final = 20
MAX_LEASE: Final = 50

# Seconds until a token (0.0: taken now), or the coroutine that says so once the fleet answered.
Wait = float | Coroutine[Any, Any, float]


def caller_of(call: Call) -> str:
    """Who a limit (and an idempotency key) belongs to: principal, else session, else address."""
    principal = call.principal
    if principal is not None:
        return "principal " + principal.subject
    session = call.session
    if session is not None and session.session_id:
        return "session " + session.session_id
    client = call.client
    if client is not None:
        return "address " + client[0]
    return "anonymous"


class TokenBuckets:
    """One limit's buckets, by caller: [tokens, last refill time]."""

    __slots__ = ("_buckets", "capacity", "per_second")

    def __init__(self, rate: Rate, max_callers: int = MAX_CALLERS) -> None:
        self.capacity = float(rate.count)
        self.per_second = rate.per_second
        self._buckets: BoundedMap[str, list[float]] = BoundedMap(max_callers)

    def take(self, caller: str, now: float) -> float:
        """Take one token: 0.0 when there was one, else the seconds until there will be."""
        bucket = self._buckets.get(caller)
        if bucket is None:
            self._buckets.put(caller, [self.capacity - 1.0, now])
            return 0.0
        self._buckets.move_to_end(caller)
        tokens = min(self.capacity, bucket[0] + (now - bucket[1]) * self.per_second)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.per_second

    def __len__(self) -> int:
        return len(self._buckets)


class Buckets(Protocol):
    def take(self, caller: str, now: float) -> Wait: ...


def lease_size(rate: Rate) -> int:
    """How many tokens an instance takes from the fleet's bucket at a time."""
    return max(1, min(MAX_LEASE, rate.count // LEASE_FRACTION))


class _Lease:
    """The tokens this instance holds of one caller's shared bucket."""

    __slots__ = ("empty_until", "fetching", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        # The shared bucket had no token for this caller: refused here until then (monotonic s).
        self.empty_until = 0.0
        self.fetching: asyncio.Task[bool] | None = None


class _Outage:
    """Says once that the limits fell back to this process's buckets, and once that they are
    shared again (the fleet logs the outage itself)."""

    __slots__ = ("local",)

    def __init__(self) -> None:
        self.local = False

    def fell_back(self) -> None:
        if not self.local:
            self.local = True
            logger.warning(
                "rate limits: the fleet store is unavailable; each instance limits callers with its "
                "own buckets until it is back"
            )

    def shared_again(self) -> None:
        if self.local:
            self.local = False
            logger.info("rate limits are shared by the fleet again")


class SharedTokenBuckets:
    """One limit's buckets kept by the fleet (``--redis``): every instance takes from the same
    bucket per caller (``Fleet.take_up_to``, one atomic Redis call), so a caller is limited
    across the fleet.

    The request path stays synchronous: an instance holds a lease of up to ``size`` tokens per
    caller, taken from the shared bucket at once, and a request spends one of them without
    waiting. When half the lease is spent the rest is topped up in the background, so Redis sees
    about one call per ``size / 2`` requests of a busy caller and the caller rarely waits: only
    its first request on an instance, or one that finds the lease empty while its top-up is on
    the way, waits for Redis (``--redis-timeout`` at most). A caller the shared bucket has no
    token for is refused here without asking again until one will be there.

    The bound: tokens leave the shared bucket only through leases and every admitted request
    spends one, so the fleet never admits more than the bucket gives out, except that tokens a
    lease holds are not refilled meanwhile: in any window a caller gets at most ``count`` plus
    the refill plus ``size`` per instance (what the leases held at its start). The other way, a
    caller refused by one instance while another still holds part of a lease is refused up to
    ``size`` tokens per other instance early. With ``--rate-limit 100/60s`` (a lease of 5) on two
    instances, a fresh caller whose requests alternate between them gets its first 429 after 95
    to 100 requests (plus what refilled meanwhile), and 100 pass in all.

    While the fleet store is unavailable, a request that finds its lease empty is limited by this
    process's own bucket (``local``), as without ``--redis``; once the store is back, leases are
    taken from it again.
    """

    __slots__ = (
        "_clock",
        "_fleet",
        "_key",
        "_leases",
        "_low",
        "_outage",
        "capacity",
        "local",
        "per_second",
        "size",
    )

    def __init__(
        self,
        rate: Rate,
        fleet: Fleet,
        key: str,
        outage: _Outage,
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = MAX_CALLERS,
    ) -> None:
        self.capacity = float(rate.count)
        self.per_second = rate.per_second
        self.size = lease_size(rate)
        self._low = self.size // 2  # top up when no more than this is left
        self._fleet = fleet
        self._key = key  # the shared buckets' key, before the caller
        self._outage = outage
        self._clock = clock
        self._leases: BoundedMap[str, _Lease] = BoundedMap(max_callers)
        self.local = TokenBuckets(rate, max_callers)

    def take(self, caller: str, now: float) -> Wait:
        """Take one token: 0.0 when there was one, the seconds until there will be, or (the
        lease is empty) a coroutine that asks the fleet and says the same."""
        lease = self._leases.get(caller)
        if lease is not None:
            if lease.tokens >= 1:
                lease.tokens -= 1
                if lease.tokens <= self._low and lease.fetching is None and self._fleet.available:
                    self._top_up(caller, lease)
                self._leases.move_to_end(caller)
                return 0.0
            if not self._fleet.available:
                self._outage.fell_back()
                return self.local.take(caller, now)
            if lease.empty_until > now:
                return lease.empty_until - now
        elif not self._fleet.available:
            self._outage.fell_back()
            return self.local.take(caller, now)
        return self._take_later(caller, lease)

    async def _take_later(self, caller: str, lease: _Lease | None) -> float:
        if lease is None:
            lease = _Lease()
            self._leases.put(caller, lease)
        while True:
            if lease.tokens >= 1:
                lease.tokens -= 1
                return 0.0
            now = self._clock()
            if lease.empty_until > now:
                return lease.empty_until - now
            fetching = lease.fetching if lease.fetching is not None else self._top_up(caller, lease)
            if not await asyncio.shield(fetching):  # another request of the caller may share it
                self._outage.fell_back()
                return self.local.take(caller, self._clock())

    def _top_up(self, caller: str, lease: _Lease) -> asyncio.Task[bool]:
        fetching = lease.fetching = asyncio.get_running_loop().create_task(self._lease(caller, lease))
        return fetching

    async def _lease(self, caller: str, lease: _Lease) -> bool:
        """Fill ``lease`` up to ``size`` from the shared bucket; False: the fleet store is unavailable."""
        wanted = max(1, self.size - lease.tokens)
        try:
            grant = await self._fleet.take_up_to(self._key + caller, self.per_second, self.capacity, wanted)
        except FleetUnavailable:
            return False
        finally:
            lease.fetching = None
        self._outage.shared_again()
        lease.tokens += grant.tokens
        if not grant.tokens:
            lease.empty_until = self._clock() + grant.retry_after
        return True

    def __len__(self) -> int:
        return len(self._leases)


class RateLimits:
    """The ``RequestCheck``: the server-wide limit on every request, then the tool's own limit
    on its ``tools/call``. Synchronous, but for a shared limit whose lease ran out (then the
    awaitable the pipeline waits for)."""

    def __init__(
        self,
        registry: Registry,
        rate: Rate | None,
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = MAX_CALLERS,
    ) -> None:
        self.registry = registry
        self.rate = rate
        self.server_wide: Buckets | None = TokenBuckets(rate, max_callers) if rate is not None else None
        self._per_tool: dict[str, tuple[Rate, Buckets]] = {}
        self._clock = clock
        self._max_callers = max_callers
        self._fleet: Fleet | None = None
        self._outage = _Outage()
        self.refusals: dict[str, int] = {}  # by tool name ("" for the server-wide limit)

    def share(self, fleet: Fleet) -> None:
        """Keep the buckets in ``fleet`` (``--redis``): a caller is limited across the fleet."""
        self._fleet = fleet
        self._per_tool.clear()
        if self.rate is not None:
            self.server_wide = self._new_buckets("", self.rate)

    def _new_buckets(self, tool: str, rate: Rate) -> Buckets:
        if self._fleet is None:
            return TokenBuckets(rate, self._max_callers)
        key = f"limit:{tool}:" if tool else "limit::"
        return SharedTokenBuckets(rate, self._fleet, key, self._outage, self._clock, self._max_callers)

    def __call__(self, call: Call) -> Awaitable[None] | None:
        caller: str | None = None
        now = self._clock()
        if self.server_wide is not None:
            caller = caller_of(call)
            wait = self.server_wide.take(caller, now)
            if type(wait) is not float:
                return self._server_wide_later(call, caller, wait)  # type: ignore[arg-type]
            if wait:
                self._refuse("", wait, "this server's rate limit")
        return self._tool_limit(call, caller, now)

    def _tool_limit(self, call: Call, caller: str | None, now: float) -> Awaitable[None] | None:
        if call.method != "tools/call":
            return None
        name = call.tool_name
        tool = self.registry.tools.get(name) if name is not None else None
        if tool is None or tool.rate_limit is None:
            return None
        buckets = self._buckets_of(tool.name, tool.rate_limit)
        wait = buckets.take(caller or caller_of(call), now)
        if type(wait) is not float:
            return self._tool_limit_later(tool.name, wait)  # type: ignore[arg-type]
        if wait:
            self._refuse(tool.name, wait, f"the rate limit of the tool {tool.name!r}")
        return None

    async def _server_wide_later(self, call: Call, caller: str, waiting: Awaitable[float]) -> None:
        wait = await waiting
        if wait:
            self._refuse("", wait, "this server's rate limit")
        pending = self._tool_limit(call, caller, self._clock())
        if pending is not None:
            await pending

    async def _tool_limit_later(self, name: str, waiting: Awaitable[float]) -> None:
        wait = await waiting
        if wait:
            self._refuse(name, wait, f"the rate limit of the tool {name!r}")

    def _buckets_of(self, name: str, rate: Rate) -> Buckets:
        known = self._per_tool.get(name)
        if known is None or known[0] != rate:  # a tool registered again may change its limit
            known = self._per_tool[name] = (rate, self._new_buckets(name, rate))
        return known[1]

    def _refuse(self, tool: str, wait: float, what: str) -> None:
        self.refusals[tool] = self.refusals.get(tool, 0) + 1
        seconds = max(1, math.ceil(wait))  # Retry-After is whole seconds (RFC 9110 10.2.3)
        raise HttpError(
            429,
            RATE_LIMITED,
            f"Too many requests: {what} is exceeded; retry after {seconds} s",
            {"retryAfter": seconds},
            ((b"retry-after", str(seconds).encode()),),
        )
