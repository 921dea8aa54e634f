"""One MCP request, any transport: from a ``Call`` to its encoded answer.

Every transport (Streamable HTTP over HTTP/1.1 and HTTP/2, the old HTTP+SSE transport, stdio,
the in-process test client) parses its framing, builds a ``Call`` with the facts of the
request's arrival and hands it here. The pipeline owns what follows, in this order:

0. the built-in checks (``RequestCheck``: rate limits, a tool's scopes; synchronous, but for a
   shared rate limit that must ask the fleet for more tokens) and, for a
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

The pipeline is also where this process meets its fleet (``mcp_fast.fleet``): a cancellation
or an answer for a request that runs on another instance goes there, list-changed and
resource-updated notifications raised here are told to the other instances (and theirs are
announced here as if raised here), and tasks are shared. With the default in-process fleet
none of that happens.

A ``RequestObserver`` (metrics, audit log, tracing) sees each request begin and end: two plain
calls, so the default configuration (metrics on) adds no coroutine and no chain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
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
from mcp_fast.fleet.base import (
    ANSWER,
    CANCEL,
    LIST_CHANGED,
    RESOURCE_UPDATED,
    Fleet,
    FleetUnavailable,
    LocalFleet,
)
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
    # What the instances share (--redis: RedisFleet); None: this process alone (a LocalFleet).
    fleet: Fleet | None = None
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
        self.fleet: Fleet = settings.fleet if settings.fleet is not None else LocalFleet()
        self.server_requests = ServerRequests(self.fleet.instance)
        self.dispatcher.tasks.share_with(self.fleet)
        self._relaying = False  # announcing another instance's notification: not told back
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fleet_jobs: set[asyncio.Task[Any]] = set()
        if self.fleet.shared:
            self._join_fleet(self.fleet)
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
        # Built-in checks are fixed when serving starts too: without any, ``request`` is the
        # admitted path itself (no loop, no frame for them).
        self.checks = settings.checks
        self._unobserved: Callable[[Call], Answer] = self._checked if self.checks else self._admitted
        self._observer: RequestObserver | None = None
        self._observer_begin: Callable[[Call], None] | None = None
        self.observer = settings.observer
        self._idempotent_chain: CallNext | None = None
        if settings.idempotency is not None:
            self._idempotent_chain = build_chain([settings.idempotency, *stack], self._innermost)

    # -- the fleet ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the fleet (before serving; an unreachable store is reported, not fatal)."""
        self._loop = asyncio.get_running_loop()
        await self.fleet.start()

    async def stop(self) -> None:
        await self.fleet.close()

    def _join_fleet(self, fleet: Fleet) -> None:
        fleet.subscribe(CANCEL, self._cancel_from_fleet)
        fleet.subscribe(ANSWER, self._answer_from_fleet)
        fleet.subscribe(LIST_CHANGED, self._list_changed_from_fleet)
        fleet.subscribe(RESOURCE_UPDATED, self._resource_updated_from_fleet)
        self.server.on_list_changed(self._tell_list_changed)
        self.server.on_resource_updated(self._tell_resource_updated)
        fleet.on_reconnect.append(self.dispatcher.tasks.wake_all)

    def _cancel_from_fleet(self, payload: dict[str, Any]) -> None:
        owner = payload.get("owner")
        if isinstance(owner, str):
            call = self.inflight.get(owner, payload.get("id"))
            if call is not None:
                call.cancel()

    def _answer_from_fleet(self, payload: dict[str, Any]) -> None:
        request_id, owner, message = payload.get("id"), payload.get("owner"), payload.get("message")
        resolved = isinstance(owner, str) and isinstance(message, dict)
        if resolved and not self.server_requests.resolve(request_id, message, owner):  # type: ignore[arg-type]
            logger.debug("an answer to %r from another instance found nobody waiting", request_id)

    def _list_changed_from_fleet(self, payload: dict[str, Any]) -> None:
        kind = payload.get("kind")
        if kind in ("tools", "resources", "prompts"):
            self._relaying = True
            try:
                self.server.notify_list_changed(kind)
            finally:
                self._relaying = False

    def _resource_updated_from_fleet(self, payload: dict[str, Any]) -> None:
        uri = payload.get("uri")
        if isinstance(uri, str):
            self._relaying = True
            try:
                self.server.notify_resource_updated(uri)
            finally:
                self._relaying = False

    def _tell_list_changed(self, kind: str) -> None:
        if not self._relaying:
            self._tell_fleet(LIST_CHANGED, {"kind": kind})

    def _tell_resource_updated(self, uri: str) -> None:
        if not self._relaying:
            self._tell_fleet(RESOURCE_UPDATED, {"uri": uri})

    def _tell_fleet(self, topic: str, payload: dict[str, Any]) -> None:
        """Tell the other instances without waiting (this instance has announced it already).
        Handlers may raise notifications from the thread pool: the loop does the telling."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._tell_fleet, topic, payload)
            return  # not serving yet: nobody to tell
        job = running.create_task(self.fleet.publish(topic, payload))
        self._fleet_jobs.add(job)
        job.add_done_callback(self._fleet_job_done)

    def _fleet_job_done(self, job: asyncio.Task[Any] | Future[Any]) -> None:
        self._fleet_jobs.discard(job)
        if not job.cancelled() and isinstance(job.exception(), FleetUnavailable):
            logger.debug("a notification was not told to the other instances: the fleet store is unavailable")

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
        self.request = self._unobserved if observer is None else self._observed_request  # type: ignore[method-assign,assignment]

    def request(self, call: Call) -> Answer:
        """Answer one request: its encoded response now, or a coroutine that produces it
        (and None when the request was cancelled: no answer is sent for it). (Replaced per
        instance by ``_checked``, ``_admitted`` or ``_observed_request``, see ``observer``.)"""
        return self._unobserved(call)

    def _observed_request(self, call: Call) -> Answer:
        """``request`` while an observer watches: it sees the request begin and end."""
        observer = self._observer
        assert observer is not None
        call.started = _perf_counter()
        if self._observer_begin is not None:
            self._observer_begin(call)
        answer = self._unobserved(call)
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

    def _checked(self, call: Call) -> Answer:
        """The built-in checks, in order, then the request. A check answers at once (the common
        case: None, or it raises McpError to refuse) or returns an awaitable when it must ask the
        fleet first (a rate limit whose lease of shared tokens ran out): then the request waits
        for it, and the checks after it run once it is settled."""
        checks = self.checks
        try:
            for index, check in enumerate(checks):
                pending = check(call)
                if pending is not None:
                    return self._checked_later(call, pending, checks[index + 1 :])
        except McpError as exc:
            return self._error(call, exc)
        return self._admitted(call)

    async def _checked_later(
        self, call: Call, pending: Awaitable[None], rest: tuple[RequestCheck, ...]
    ) -> bytes | None:
        try:
            await pending
            for check in rest:
                more = check(call)
                if more is not None:
                    await more
        except McpError as exc:
            return self._error(call, exc)
        answer = self._admitted(call)
        if isinstance(answer, bytes):
            return answer
        return await answer

    def _admitted(self, call: Call) -> Answer:
        """The request once the checks let it through (without checks: ``request`` itself)."""
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
        """The encoded error; its code stays on the Call (2026-07-28 maps it to an HTTP status,
        and an unavailable fleet store answers 503 on every version)."""
        call.error_code = error.code
        if isinstance(error, HttpError):
            # Streamable HTTP answers with its status and headers (401/403/429, and 503 when a
            # store the fleet shares is unavailable: FleetUnavailable is one).
            call.refusal = error
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
    ) -> Coroutine[Any, Any, None] | None:
        """A notification (no answer). ``notifications/cancelled`` stops the request it names in
        ``owner``'s session (``fleet_wide``: or tells the fleet, when it runs elsewhere). Returns
        a coroutine when the fleet must be told: it raises FleetUnavailable when it cannot be."""
        if method == "notifications/cancelled":
            if owner is not None:
                request_id = (params or _EMPTY).get("requestId")
                cancelled = self.inflight.cancel(owner, request_id, fleet_wide=fleet_wide)
                if (
                    not cancelled
                    and fleet_wide
                    and self.fleet.shared
                    and (type(request_id) is str or type(request_id) is int)
                ):
                    return self.fleet.publish(CANCEL, {"owner": owner, "id": request_id})
            return None
        self.dispatcher.handle_notification(method)
        return None

    def response(
        self, message: Message, owner: str, *, fleet_wide: bool = False
    ) -> Coroutine[Any, Any, None] | None:
        """A client's response to one of our server-to-client requests wakes its waiter; only the
        session that was asked (``owner``) can answer. ``fleet_wide`` (Streamable HTTP: the
        answer may reach any instance): returns a coroutine when the answer goes to the instance
        that asked (it raises FleetUnavailable when it cannot)."""
        if self.server_requests.resolve(message.id, message.raw, owner):
            return None
        # Behind a load balancer the answer often reaches another instance than the one that
        # asked (the id names it): pass it on, through the fleet or the fleet directory.
        asker = asking_instance(message.id)  # found only in a string id; None for others
        if fleet_wide and asker is not None and self.fleet.shared and asker != self.fleet.instance:
            return self._forward_answer(asker, str(message.id), owner, message.raw)
        relay = self.relay  # forward() refuses this instance's own id
        if (
            asker is not None
            and relay is not None
            and relay.forward(asker, str(message.id), owner, message.raw)
        ):
            return None
        logger.debug("a response to an unknown server request %r was ignored", message.id)
        return None

    async def _forward_answer(self, asker: str, request_id: str, owner: str, message: dict[str, Any]) -> None:
        payload = {"id": request_id, "owner": owner, "message": message}
        if not await self.fleet.send(asker, ANSWER, payload):
            logger.debug("an answer to %r was for instance %s, which is not running", request_id, asker)

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
        self.server.remove_listeners(self)
        if self.caching is not None:
            self.server.remove_listeners(self.caching)
        if self.relay is not None:
            self.relay.close()
