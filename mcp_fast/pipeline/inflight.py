"""Requests in flight that a client may cancel, by session and request id.

``notifications/cancelled`` (basic/utilities/cancellation.mdx) names a request by its id within
the session that sent it: the handler is stopped and no response is sent. A request is in this
table from the moment the pipeline starts waiting for it until its answer is ready.

In a fleet the cancellation may reach another instance than the one that runs the request:
that instance writes it to the fleet's shared log (``fleet/shared_log.py``), and an instance
that runs cancellable requests reads the log every ``poll_seconds`` while it does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

import orjson

from mcp_fast.call import Call
from mcp_fast.fleet.shared_log import SharedLog
from mcp_fast.protocol.jsonrpc import RequestId

logger = logging.getLogger("mcp_fast.pipeline")

# How long a cancellation stays in the fleet's log for an instance that runs the request to see.
CANCELLATION_KEPT_S: Final = 600.0


class InFlight:
    """The table, and the way cancellations of the fleet reach it."""

    def __init__(self, fleet_log: SharedLog | None = None) -> None:
        self._calls: dict[str, dict[RequestId, Call]] = {}  # owner (session id) -> its requests
        self.fleet_log = fleet_log
        self._watcher: asyncio.Task[None] | None = None

    def add(self, owner: str, call: Call, *, fleet_wide: bool = False) -> None:
        """``call`` runs for ``owner``; ``fleet_wide``: another instance may be told to cancel it."""
        calls = self._calls.get(owner)
        if calls is None:
            calls = self._calls[owner] = {}
        calls[call.id] = call
        if fleet_wide and self.fleet_log is not None and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(
                self._apply_fleet_cancellations(self.fleet_log)
            )

    def remove(self, owner: str, call: Call) -> None:
        calls = self._calls.get(owner)
        if calls is not None and calls.get(call.id) is call:
            del calls[call.id]
            if not calls:
                del self._calls[owner]

    def get(self, owner: str, request_id: object) -> Call | None:
        calls = self._calls.get(owner)
        if calls is None or (type(request_id) is not str and type(request_id) is not int):
            return None
        return calls.get(request_id)

    def of(self, owner: str) -> list[Call]:
        """Every request ``owner`` has in flight."""
        return list(self._calls.get(owner, {}).values())

    def cancel(self, owner: str, request_id: object, *, fleet_wide: bool = False) -> bool:
        """``notifications/cancelled``: stop the request here (True), or (``fleet_wide``) tell the
        fleet directory. Request ids are never reused within a session (basic/index.mdx), so a
        late entry in the fleet's log harms nothing."""
        call = self.get(owner, request_id)
        if call is not None:
            call.cancel()
            return True
        if fleet_wide and self.fleet_log is not None and (type(request_id) is str or type(request_id) is int):
            now = time.time()
            self.fleet_log.add(owner, now + CANCELLATION_KEPT_S, now, orjson.dumps(request_id))
        return False

    def __len__(self) -> int:
        return sum(len(calls) for calls in self._calls.values())

    async def _apply_fleet_cancellations(self, log: SharedLog) -> None:
        """While requests run, cancel those that another instance was told to cancel."""
        try:
            while self._calls:
                await asyncio.sleep(log.poll_seconds)
                for owner, _, payload in log.refresh(time.time()):
                    call = self.get(owner, _loads_request_id(payload))
                    if call is not None:
                        call.cancel()
        finally:
            self._watcher = None


def _loads_request_id(payload: bytes) -> RequestId | None:
    """A request id written to the fleet's cancellations (a JSON string or integer), or None."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return value if type(value) is str or type(value) is int else None
