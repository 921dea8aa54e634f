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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

from mcp_fast.bounded import BoundedMap
from mcp_fast.call import Call
from mcp_fast.protocol.jsonrpc import HttpError
from mcp_fast.registry import Rate, Registry

# JSON-RPC 2.0 section 5.1: -32000 to -32099 are implementation-defined server errors.
RATE_LIMITED: Final = -32000
MAX_CALLERS: Final = 100_000


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


class RateLimits:
    """The ``RequestCheck``: the server-wide limit on every request, then the tool's own limit
    on its ``tools/call``."""

    def __init__(
        self,
        registry: Registry,
        rate: Rate | None,
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = MAX_CALLERS,
    ) -> None:
        self.registry = registry
        self.server_wide = TokenBuckets(rate, max_callers) if rate is not None else None
        self._per_tool: dict[str, tuple[Rate, TokenBuckets]] = {}
        self._clock = clock
        self._max_callers = max_callers
        self.refusals: dict[str, int] = {}  # by tool name ("" for the server-wide limit)

    def __call__(self, call: Call) -> None:
        caller: str | None = None
        now = self._clock()
        if self.server_wide is not None:
            caller = caller_of(call)
            wait = self.server_wide.take(caller, now)
            if wait:
                self._refuse("", wait, "this server's rate limit")
        if call.method != "tools/call":
            return
        name = call.tool_name
        tool = self.registry.tools.get(name) if name is not None else None
        if tool is None or tool.rate_limit is None:
            return
        buckets = self._buckets_of(tool.name, tool.rate_limit)
        wait = buckets.take(caller or caller_of(call), now)
        if wait:
            self._refuse(tool.name, wait, f"the rate limit of the tool {tool.name!r}")

    def _buckets_of(self, name: str, rate: Rate) -> TokenBuckets:
        known = self._per_tool.get(name)
        if known is None or known[0] != rate:  # a tool registered again may change its limit
            known = self._per_tool[name] = (rate, TokenBuckets(rate, self._max_callers))
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
