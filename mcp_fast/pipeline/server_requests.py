"""Server-to-client requests waiting for the client's answer (sampling, elicitation, roots).

A 2025 handler that calls ``ctx.elicit(...)`` sends a JSON-RPC request to the client and waits;
the client's response arrives as a separate message (a POST, a line on stdin) and must find its
waiter. One table per process: ids are unique in it and name the process, so in a fleet an
answer that reached another instance can be passed on (``fleet/relay.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from typing import Any, Protocol

from mcp_fast.protocol.jsonrpc import McpError

logger = logging.getLogger("mcp_fast.pipeline")


class RelayedAnswers(Protocol):
    """Answers to this process's server-to-client requests that another instance received."""

    poll_seconds: float

    def prepare(self) -> None:
        """Be ready to receive answers (called before a request goes out)."""
        ...

    def take(self, now: float) -> list[tuple[str, str, dict[str, Any]]]:
        """(request id, answering session id, JSON-RPC message) of each answer waiting."""
        ...


class ServerRequests:
    """Server-to-client requests waiting for the client's answer.

    Ids are unique in the process, so the client's response (a separate POST) finds its waiter
    by id. Each waiter also remembers the session it asked (its owner): only a response from
    that session answers it. The ids are easy to guess, and without this check any client of
    the process could answer another session's sampling or elicitation request.
    """

    def __init__(self, instance: str | None = None) -> None:
        self._pending: dict[str, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self.instance = instance or secrets.token_hex(4)  # names this process in the ids (its fleet's)
        self._counter = itertools.count(1)
        # Where answers that reached another instance of a fleet come back (fleet/relay.py).
        self.relay: RelayedAnswers | None = None
        self._watching: asyncio.Task[None] | None = None

    def open(self, owner: str = "") -> tuple[str, asyncio.Future[dict[str, Any]]]:
        """A new request id and the future its answer resolves; ``owner``: the asking session."""
        request_id = f"srv-{self.instance}-{next(self._counter)}"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[request_id] = (owner, future)
        if self.relay is not None and self._watching is None:
            self.relay.prepare()  # before the request goes out, so its answer can come back
            self._watching = loop.create_task(self._watch_relayed(self.relay))
        return request_id, future

    async def _watch_relayed(self, relay: RelayedAnswers) -> None:
        """While anything waits, look for its answer among those relayed by other instances."""
        try:
            while self._pending:
                await asyncio.sleep(relay.poll_seconds)
                for request_id, owner, message in relay.take(time.time()):
                    if not self.resolve(request_id, message, owner):
                        logger.debug("a relayed answer to %r found nobody waiting", request_id)
        finally:
            self._watching = None

    def close(self, request_id: str) -> None:
        self._pending.pop(request_id, None)

    def resolve(self, request_id: object, message: dict[str, Any], owner: str = "") -> bool:
        """Hand the client's response to its waiter; False when nobody of ``owner`` waits for it."""
        pending = self._pending.get(request_id) if isinstance(request_id, str) else None
        if pending is None or pending[0] != owner:
            return False
        future = pending[1]
        if future.done():
            return False
        error = message.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            text = error.get("message")
            future.set_exception(
                McpError(
                    code if type(code) is int else -32603, str(text) if text else "error from the client"
                )
            )
        else:
            result = message.get("result")
            future.set_result(result if isinstance(result, dict) else {})
        return True

    def fail_all(self, code: int, message: str, owner: str | None = None) -> None:
        """The client is gone: every waiter (of ``owner``, when given) gets this error now
        instead of waiting out its timeout."""
        for asker, future in self._pending.values():
            if (owner is None or asker == owner) and not future.done():
                future.set_exception(McpError(code, message))

    def __len__(self) -> int:
        return len(self._pending)
