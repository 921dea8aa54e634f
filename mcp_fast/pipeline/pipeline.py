"""One MCP request, any transport: from a ``Call`` to its encoded answer.

Every transport (Streamable HTTP over HTTP/1.1 and HTTP/2, the old HTTP+SSE transport, stdio,
the in-process test client) parses its framing, builds a ``Call`` with the facts of the
request's arrival and hands it here. The pipeline owns what follows, in this order:

0. the built-in checks (``RequestCheck``: rate limits, a tool's scopes; synchronous) and, for a
   ``tools/call`` with an ``Idempotency-Key``, the built-in idempotency middleware;
1. the middleware chain (the user's ``@server.middleware`` functions; none: no chain at all);
2. the result cache (``caching.py``): a hit is answered without the handler;
3. a plain tool (inline, no Context) is called directly; anything else gets a ``Context`` and
   goes through the dispatcher's method table;
4. the in-flight table (``inflight.py``) while the request waits, for ``notifications/cancelled``;
5. the answer: shaped for the protocol version (2026-07-28 ``resultType``, cache hints),
   encoded, kept in the cache when it may be.

``request`` answers at once when nothing had to wait (the common case: no Task, no coroutine),
or returns a coroutine that produces the answer; None from it means the request was cancelled
and gets no answer. Notifications and the client's responses to server-to-client requests come
here too (``notification``, ``response``).

A ``RequestObserver`` (metrics, audit log, tracing) sees each request begin and end: two plain
calls, so the default configuration (metrics on) adds no coroutine and no chain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import CoroutineType
from typing import Any, Final

import orjson

from mcp_fast.call import Call, CallNext, Middleware, RequestCheck, RequestObserver
from mcp_fast.context import Context
from mcp_fast.dispatch.cache import CacheSlot, ResultCache
from mcp_fast.dispatch.dispatcher import Dispatcher
from mcp_fast.dispatch.tasks import Task
from mcp_fast.fleet.relay import AnswerRelay, asking_instance
from mcp_fast.fleet.shared_log import SharedLog
from mcp_fast.pipeline.caching import CachePolicy
from mcp_fast.pipeline.inflight import InFlight
from mcp_fast.pipeline.middleware import build_chain, settle_failure, settle_result
from mcp_fast.pipeline.server_requests import ServerRequests
from mcp_fast.protocol import jsonrpc
from mcp_fast.protocol.input_required import StateCodec
from mcp_fast.protocol.jsonrpc import INTERNAL_ERROR, HttpError, McpError, Message
from mcp_fast.protocol.versions import negotiate
from mcp_fast.server import MCPServer

logger = logging.getLogger("mcp_fast.pipeline")

_perf_counter: Final = time.perf_counter
_ENCODE_FAILED: Final = McpError(INTERNAL_ERROR, "Internal error: the result could not be encoded")
_EMPTY: Final[dict[str, Any]] = {}

Answer = bytes | Coroutine[Any, Any, bytes | None]


@dataclass(frozen=True, slots=True)
class Handshake:
    """What a successful ``initialize`` settled: the transport starts its session with it."""

    version: str
    capabilities: dict[str, Any]
    client_info: dict[str, Any]


@dataclass(frozen=True)
class PipelineSettings:
    page_size: int = 100
    # Secrets that sign 2026 requestState (first signs, all verify); empty: random per process.
    state_secrets: tuple[str, ...] = ()
    # The in-process result cache; None: nothing is cached.
    cache: ResultCache | None = None
    # The directory this instance shares with the rest of its fleet: answers to server-to-client
    # requests and cancellations that reached the wrong instance go through it, looked at every
    # fleet_poll s while something waits for them.
    fleet_dir: Path | None = None
    fleet_poll: float = 0.1
    # Built-in checks run first, in order, on every request (ops: rate limits, scopes).
    checks: tuple[RequestCheck, ...] = ()
    # The built-in middleware for tools/call requests that carry an Idempotency-Key header
    # (ops/idempotency.py); other requests never enter it.
    idempotency: Middleware | None = None
    # Sees every request begin and end (metrics, audit log, tracing).
    observer: RequestObserver | None = None


class Pipeline:
    """The request path of one server in one process, shared by all its transports."""

    def __init__(self, server: MCPServer, settings: PipelineSettings | None = None) -> None:
        settings = settings or PipelineSettings()
        self.server = server
        self.settings = settings
        self.dispatcher = Dispatcher(
            server, page_size=settings.page_size, state_codec=StateCodec(settings.state_secrets)
        )
        self.caching = CachePolicy(server, settings.cache) if settings.cache is not None else None
        self.server_requests = ServerRequests()
        self.relay: AnswerRelay | None = None
        fleet_log: SharedLog | None = None
        if settings.fleet_dir is not None:
            self.relay = AnswerRelay(
                settings.fleet_dir / "answers", self.server_requests.instance, settings.fleet_poll
            )
            self.server_requests.relay = self.relay
            fleet_log = SharedLog(settings.fleet_dir / "cancelled", settings.fleet_poll, "cancellations")
        self.inflight = InFlight(fleet_log)
        # Middleware is fixed when serving starts: the chain is built once, and not at all
        # without middleware (then ``request`` takes the direct path).
        stack = server.middleware_stack
        self._chain: CallNext | None = build_chain(stack, self._innermost) if stack else None
        self.checks = settings.checks
        self._observer: RequestObserver | None = None
        self._observer_begin: Callable[[Call], None] | None = None
        self.observer = settings.observer
        self._idempotent_chain: CallNext | None = None
        if settings.idempotency is not None:
            self._idempotent_chain = build_chain([settings.idempotency, *stack], self._innermost)

    # -- requests ----------------------------------------------------------------------

    @property
    def observer(self) -> RequestObserver | None:
        """What sees every request begin and end (metrics, audit log, tracing); may be replaced
        while serving (tracing starts once the app's lifespan installed its provider)."""
        return self._observer

    @observer.setter
    def observer(self, observer: RequestObserver | None) -> None:
        self._observer = observer
        self._observer_begin = observer.begin if observer is not None and observer.needs_begin else None
        # ``request`` is the plain path itself while nothing observes: no wrapper frame.
        self.request = self._request if observer is None else self._observed_request  # type: ignore[method-assign]

    def request(self, call: Call) -> Answer:
        """Answer one request: its encoded response now, or a coroutine that produces it
        (and None when the request was cancelled: no answer is sent for it). (Replaced per
        instance by ``_request`` or ``_observed_request``, see ``observer``.)"""
        return self._request(call)

    def _observed_request(self, call: Call) -> Answer:
        """``request`` while an observer watches: it sees the request begin and end."""
        observer = self._observer
        assert observer is not None
        call.started = _perf_counter()
        if self._observer_begin is not None:
            self._observer_begin(call)
        answer = self._request(call)
        if type(answer) is bytes:
            observer.end(call, True)
            return answer
        return self._observed(call, answer, observer)  # type: ignore[arg-type]

    @staticmethod
    async def _observed(
        call: Call, answer: Coroutine[Any, Any, bytes | None], observer: RequestObserver
    ) -> bytes | None:
        try:
            response = await answer
        except BaseException:
            observer.end(call, False)
            raise
        observer.end(call, response is not None)
        return response

    def _request(self, call: Call) -> Answer:
        if self.checks:
            try:
                for check in self.checks:
                    check(call)
            except McpError as exc:
                return self._error(call, exc)
        if (
            self._idempotent_chain is not None
            and (headers := call.raw_headers) is not None
            and b"idempotency-key" in headers
            and call.method == "tools/call"
        ):
            self._track(call)
            return self._through_chain(call, self._idempotent_chain)
        if self._chain is not None:
            self._track(call)  # before anything can wait: a cancellation may come meanwhile
            return self._through_chain(call, self._chain)
        slot: CacheSlot | None = None
        caching = self.caching
        if caching is not None and call.method in caching.methods:
            probe = caching.probe(call)
            if type(probe) is bytes:
                return jsonrpc.encode_result(call.id, orjson.Fragment(probe))
            slot = probe  # type: ignore[assignment]
        try:
            result = self.dispatcher.call_plain(call)
            if result is None:
                result = self.dispatcher.dispatch(call, self.context(call))
        except McpError as exc:
            return self._error(call, exc)
        if type(result) is CoroutineType:
            self._track(call)
            return self._complete(call, result, slot)
        return self._answer(call, result, slot)

    def context(self, call: Call) -> Context:
        """The Context of a request whose handler (or method) needs one: the one place it is made.
        2025 sessions may send server-to-client requests; 2026-07-28 asks with input-required results."""
        return Context(self.server, call, self.server_requests if call.policy.handshake else None)

    async def _complete(
        self, call: Call, pending: Coroutine[Any, Any, Any], slot: CacheSlot | None
    ) -> bytes | None:
        try:
            result = await pending
        except McpError as exc:
            return None if call.cancelled else self._error(call, exc)
        except asyncio.CancelledError:
            if call.cancelled:
                return None
            raise  # the server is shutting down: not the client's cancellation
        finally:
            self._untrack(call)
        if call.cancelled:
            return None  # cancellation: MUST NOT send a response for it
        return self._answer(call, result, slot)

    async def _through_chain(self, call: Call, chain: CallNext) -> bytes | None:
        try:
            result = settle_result(call, await chain(call))
        except asyncio.CancelledError:
            self._untrack(call)
            if call.cancelled:
                return None
            raise
        except Exception as exc:  # noqa: BLE001 - settle_failure answers each kind (bugs logged)
            try:
                result = settle_failure(call, exc)
            except McpError as error:
                self._untrack(call)
                return None if call.cancelled else self._error(call, error)
        self._untrack(call)
        if call.cancelled:
            return None
        return self._answer(call, result, None)

    async def _innermost(self, call: Call) -> Any:
        """The end of the middleware chain: the cache, then the handler. Returns the result
        object (a middleware may look at it); the cache keeps the finished result."""
        slot: CacheSlot | None = None
        caching = self.caching
        if caching is not None and call.method in caching.methods:
            probe = caching.probe(call)
            if type(probe) is bytes:
                return caching.stored(probe)
            slot = probe  # type: ignore[assignment]
        result = self.dispatcher.call_plain(call)
        if result is None:
            result = self.dispatcher.dispatch(call, self.context(call))
        if type(result) is CoroutineType:
            result = await result
        if slot is not None and caching is not None and not call.cancelled:
            caching.keep(slot, self._shaped(call, result))
        return result

    def _shaped(self, call: Call, result: Any) -> Any:
        """The result as the protocol version wants it (2026-07-28: resultType, hints, _meta)."""
        if call.policy.result_type:
            return self.dispatcher.finalize(call.method, result)
        return result

    def _answer(self, call: Call, result: Any, slot: CacheSlot | None) -> bytes:
        """A method's result, shaped for the version and encoded (and kept, when cacheable)."""
        if self._observer is not None and type(result) is dict and result.get("isError") is True:
            call.tool_error = True  # what metrics and the audit log call the outcome
        if call.policy.result_type:
            result = self.dispatcher.finalize(call.method, result)
        if slot is not None and self.caching is not None:
            kept = self.caching.keep(slot, result)
            if kept is not None:
                return jsonrpc.encode_result(call.id, orjson.Fragment(kept))
        try:
            return jsonrpc.encode_result(call.id, result)
        except TypeError:
            logger.exception("result of %s is not JSON serializable", call.method)
            return self._error(call, _ENCODE_FAILED)

    @staticmethod
    def _error(call: Call, error: McpError) -> bytes:
        """The encoded error; its code stays on the Call (2026-07-28 maps it to an HTTP status)."""
        call.error_code = error.code
        if isinstance(error, HttpError):
            call.refusal = error  # Streamable HTTP answers with its status and headers
        return jsonrpc.encode_error(call.id, error)

    def _track(self, call: Call) -> None:
        scope = call.cancel_scope()
        if scope is not None:
            self.inflight.add(scope, call, fleet_wide=call.transport == "streamable-http")

    def _untrack(self, call: Call) -> None:
        scope = call.cancel_scope()
        if scope is not None:
            self.inflight.remove(scope, call)

    # -- the handshake ------------------------------------------------------------------

    @staticmethod
    def handshake(call: Call) -> Handshake | None:
        """What an answered ``initialize`` settled, when it succeeded (basic/lifecycle.mdx):
        the transport starts the session with it. None for a failed one."""
        if call.method != "initialize" or call.error_code is not None:
            return None
        params = call.params or _EMPTY
        capabilities = params.get("capabilities")
        client_info = params.get("clientInfo")
        return Handshake(
            negotiate(params.get("protocolVersion")),
            capabilities if type(capabilities) is dict else {},
            client_info if type(client_info) is dict else {},
        )

    # -- notifications and responses from the client ------------------------------------

    def notification(
        self, method: str, params: dict[str, Any] | None, owner: str | None, *, fleet_wide: bool = False
    ) -> None:
        """A notification (no answer). ``notifications/cancelled`` stops the request it names in
        ``owner``'s session (``fleet_wide``: or tells the fleet, when it runs elsewhere)."""
        if method == "notifications/cancelled":
            if owner is not None:
                request_id = (params or _EMPTY).get("requestId")
                self.inflight.cancel(owner, request_id, fleet_wide=fleet_wide)
            return
        self.dispatcher.handle_notification(method)

    def response(self, message: Message, owner: str) -> None:
        """A client's response to one of our server-to-client requests wakes its waiter; only the
        session that was asked (``owner``) can answer."""
        if self.server_requests.resolve(message.id, message.raw, owner):
            return
        # Behind a load balancer the answer often reaches another instance than the one that
        # asked (the id names it): pass it on through the fleet directory.
        asker = asking_instance(message.id)  # found only in a string id; None for others
        relay = self.relay  # forward() refuses this instance's own id
        if (
            asker is not None
            and relay is not None
            and relay.forward(asker, str(message.id), owner, message.raw)
        ):
            return
        logger.debug("a response to an unknown server request %r was ignored", message.id)

    def end_session(self, owner: str, reason: str) -> None:
        """The session's client is gone: what it runs is cancelled, what it was asked fails."""
        for call in self.inflight.of(owner):
            call.cancel()
        self.server_requests.fail_all(INTERNAL_ERROR, reason, owner)

    # -- what transports listen to --------------------------------------------------------

    def on_task_status(self, listener: Callable[[Task], None]) -> None:
        """Called whenever a task's status changes (notifications/tasks/status)."""
        self.dispatcher.tasks.on_status.append(listener)

    def close(self) -> None:
        """This pipeline stops serving: the server forgets its listeners, its fleet mailbox goes."""
        self.server.remove_listeners(self.dispatcher.hub)
        if self.caching is not None:
            self.server.remove_listeners(self.caching)
        if self.relay is not None:
            self.relay.close()
