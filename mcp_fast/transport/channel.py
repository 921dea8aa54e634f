"""One MCP session over one message channel: what stdio and the old HTTP+SSE transport share.

Both transports carry every server-to-client message (responses, notifications,
server-to-client requests) on one ordered channel, and every client message
(requests, notifications, responses to our requests) arrives on another, one at
a time. Everything above the framing is the same for both and lives here; the
transport frames messages (a line, an SSE event) in its ``Sink``.

- Lifecycle (basic/lifecycle.mdx): ``initialize`` negotiates the version with the
  same dispatcher as Streamable HTTP; before it only ``ping`` is served. The
  session remembers the client's capabilities, its ``logging/setLevel`` level
  and its resource subscriptions (``SessionState``).
- Requests run concurrently: one that has to wait becomes its own Task, so a slow
  tool does not hold up a ping. ``notifications/cancelled`` cancels one and no
  response is sent for it (basic/utilities/cancellation.mdx).
- Server-to-client requests (sampling, elicitation, roots) go out on the channel;
  the client's responses come back in and wake their waiter. Each session has its
  own table of them, so one client cannot answer another's.
- 2026-07-28 requests (per-request ``_meta``, no initialize) are served
  statelessly next to the session where the transport allows it (stdio):
  2026-07-28 basic/versioning.mdx, "Backward Compatibility with
  Initialization-Based Versions": a dual-era server MAY serve both eras on one process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Final, Protocol

from mcp_fast.context import Context, ServerRequests, SessionState
from mcp_fast.dispatch.dispatcher import Dispatcher
from mcp_fast.dispatch.tasks import Task
from mcp_fast.protocol import batch, jsonrpc
from mcp_fast.protocol.envelope import carries_envelope, check_version, read_envelope
from mcp_fast.protocol.jsonrpc import INVALID_REQUEST, Kind, McpError, Message, RequestId
from mcp_fast.protocol.versions import LATEST_VERSION, POLICIES, VersionPolicy, negotiate
from mcp_fast.server import MCPServer

logger = logging.getLogger("mcp_fast.transport")

_NO_PARAMS: Final[dict[str, Any]] = {}
# Lifecycle, "Initialization": before initialize a client SHOULD send nothing but pings.
_BEFORE_INITIALIZE: Final = (
    "Invalid request: the session is not initialized; send initialize first "
    "(or the 2026-07-28 _meta fields with every request)"
)
_CLIENT_GONE: Final = "The client went away before answering"
_ID_IN_USE: Final = "Invalid request: this id is in use by a request in flight"


class Sink(Protocol):
    """Where a session's messages to the client go (the transport frames them)."""

    def send(self, message: bytes) -> None:
        """Write one whole JSON-RPC message; dropped once the channel is gone."""

    async def drain(self) -> None:
        """Wait while the client reads slower than we write (backpressure)."""


class _Running:
    """A request in flight: its Context (the cancelled flag) and the Task that runs it."""

    __slots__ = ("ctx", "task")

    def __init__(self, ctx: Context, task: asyncio.Task[Any]) -> None:
        self.ctx = ctx
        self.task = task


class _RequestOutbound:
    """The ``Outbound`` of one request: the session's channel, silent from the moment the
    request is cancelled, before its handler has unwound (a thread cannot be stopped at all):
    basic/utilities/cancellation.mdx, no further messages for a cancelled request."""

    __slots__ = ("ctx", "session")

    def __init__(self, session: ChannelSession) -> None:
        self.session = session
        self.ctx: Context | None = None  # set right after the Context is made

    @property
    def _silent(self) -> bool:
        return self.ctx is not None and self.ctx.cancelled

    async def notify(self, method: str, params: dict[str, Any] | None) -> None:
        if not self._silent:
            await self.session.notify(method, params)

    def notify_nowait(self, method: str, params: dict[str, Any] | None) -> None:
        if not self._silent:
            self.session.notify_nowait(method, params)

    async def send_request(self, message: bytes) -> None:
        if self._silent:
            raise McpError(jsonrpc.INTERNAL_ERROR, "The request was cancelled")
        await self.session.send_request(message)

    async def close_stream(self) -> None:
        return None

    async def wait_closed(self) -> None:
        await self.session.wait_closed()

    def detached(self) -> ChannelSession:
        return self.session  # a task outlives its request, and its cancellation


def _meta(params: dict[str, Any] | None) -> dict[str, Any] | None:
    meta = params.get("_meta") if params is not None else None
    return meta if type(meta) is dict else None


def _error(request_id: RequestId | None, code: int, message: str) -> bytes:
    return jsonrpc.encode_error(request_id, McpError(code, message))


class ChannelSession:
    """One client's session on one channel. Also an ``Outbound``: every message goes to the
    same place, in the order it was sent (each request talks through a ``_RequestOutbound``)."""

    __slots__ = (
        "_batches",
        "_ended",
        "_loop",
        "_running",
        "client_capabilities",
        "client_info",
        "dispatcher",
        "policy",
        "server",
        "server_requests",
        "sessionless",
        "sink",
        "state",
    )

    def __init__(
        self, server: MCPServer, dispatcher: Dispatcher, sink: Sink, *, session_id: str, sessionless: bool
    ) -> None:
        self.server = server
        self.dispatcher = dispatcher
        self.sink = sink
        self.sessionless = sessionless  # serve 2026-07-28 requests too (stdio), not only the session's
        self.state = SessionState(session_id)
        self.policy: VersionPolicy | None = None  # set by initialize
        self.client_capabilities: dict[str, Any] = {}
        self.client_info: dict[str, Any] = {}
        self.server_requests = ServerRequests()
        self._running: dict[RequestId, _Running] = {}
        self._batches: set[asyncio.Task[None]] = set()
        self._ended = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    @property
    def in_flight(self) -> int:
        return len(self._running) + len(self._batches)

    # -- messages from the client ----------------------------------------------------

    def receive(self, value: Any) -> McpError | None:
        """One decoded JSON value from the client. An error refuses it as a whole, and the
        transport reports it its own way (stdio: an error line; HTTP+SSE: 400)."""
        if type(value) is list:
            return self._batch(value)
        try:
            message = jsonrpc.parse_message(value)
        except jsonrpc.InvalidMessage as exc:
            return exc
        if message.kind is Kind.REQUEST:
            answer = self._request(message, respond=True)
            if type(answer) is bytes:
                self.sink.send(answer)
        elif message.kind is Kind.NOTIFICATION:
            self._notification(message)
        else:
            self._resolve(message)
        return None

    def _request(self, message: Message, *, respond: bool) -> bytes | asyncio.Task[bytes | None]:
        """Start one request: its response at once, or the Task that finishes it
        (which sends the response itself when ``respond``, else returns it)."""
        request_id = message.id
        assert request_id is not None
        if request_id in self._running:
            # basic/index.mdx: an id MUST NOT repeat one still in flight; answering would
            # confuse the two, and cancellation could not tell them apart.
            return _error(request_id, INVALID_REQUEST, _ID_IN_USE)
        if message.method == "initialize" and not (self.sessionless and carries_envelope(message.params)):
            return self._initialize(message)
        ctx = self._context(message)
        if type(ctx) is bytes:
            return ctx
        assert isinstance(ctx, Context)
        if message.method in self.dispatcher.cached_methods:
            # The result cache, as on Streamable HTTP; this channel's one client is the caller
            # a private result is kept for.
            probe = self.dispatcher.from_cache(message, ctx.policy, self.state.session_id, None)
            if isinstance(probe, bytes):
                return probe
            ctx.cache_slot = probe
        outcome = self.dispatcher.dispatch(message, ctx)
        if isinstance(outcome, bytes):
            return outcome
        task = self._loop.create_task(self._complete(ctx, outcome, respond))
        self._running[request_id] = _Running(ctx, task)
        return task

    async def _complete(
        self, ctx: Context, outcome: Coroutine[Any, Any, bytes], respond: bool
    ) -> bytes | None:
        try:
            response = await outcome
        except asyncio.CancelledError:
            if not ctx.cancelled:
                raise  # the process is shutting down, not the client cancelling
            return None
        finally:
            self._running.pop(ctx.request_id, None)  # type: ignore[arg-type]
        if ctx.cancelled:
            return None  # cancellation: MUST NOT send a response for it
        if not respond:
            return response
        self.sink.send(response)
        await self.sink.drain()
        return None

    def _context(self, message: Message) -> Context | bytes:
        """The request's Context, or the error that answers it right away."""
        params = message.params
        if self.sessionless and carries_envelope(params):
            return self._sessionless_context(message)
        policy = self.policy
        if policy is None:
            if message.method != "ping":
                return _error(message.id, INVALID_REQUEST, _BEFORE_INITIALIZE)
            policy = POLICIES[LATEST_VERSION]
        outbound = _RequestOutbound(self)
        outbound.ctx = Context(
            self.server,
            message.id,
            _meta(params),
            policy,
            outbound,
            client_capabilities=self.client_capabilities,
            client_info=self.client_info,
            server_requests=self.server_requests,
            session=self.state,
        )
        return outbound.ctx

    def _sessionless_context(self, message: Message) -> Context | bytes:
        """A 2026-07-28 request: everything it needs travels with it. The envelope is checked
        as on HTTP, without the header rungs (draft/basic/transports/stdio.mdx, "Request
        Metadata": there is no header layer). It gets no server-to-client requests: it asks
        with input-required results (stdio.mdx: the server MUST NOT write requests)."""
        try:
            envelope = read_envelope(message.params)
            policy = check_version(envelope.version)
        except McpError as exc:
            return jsonrpc.encode_error(message.id, exc)
        outbound = _RequestOutbound(self)
        outbound.ctx = Context(
            self.server,
            message.id,
            _meta(message.params),
            policy,
            outbound,
            client_capabilities=envelope.capabilities,
            client_info=envelope.client_info,
            log_level=envelope.log_level,
        )
        return outbound.ctx

    def _initialize(self, message: Message) -> bytes:
        """initialize (basic/lifecycle.mdx, "Initialization"): once per session."""
        if self.policy is not None:
            return _error(message.id, INVALID_REQUEST, "Invalid request: the session is already initialized")
        params = message.params or _NO_PARAMS
        policy = POLICIES[negotiate(params.get("protocolVersion"))]
        ctx = Context(self.server, message.id, None, policy, self)
        outcome = self.dispatcher.dispatch(message, ctx)
        assert isinstance(outcome, bytes)  # initialize never waits
        if ctx.error_code is None:
            capabilities = params.get("capabilities")
            client_info = params.get("clientInfo")
            self.client_capabilities = capabilities if type(capabilities) is dict else {}
            self.client_info = client_info if type(client_info) is dict else {}
            self.policy = policy
        return outcome

    def _notification(self, message: Message) -> None:
        if message.method == "notifications/cancelled":
            self.cancel((message.params or _NO_PARAMS).get("requestId"))
        else:
            self.dispatcher.handle_notification(message)

    def cancel(self, request_id: object) -> None:
        """notifications/cancelled: stop the request; no response is sent for it."""
        if type(request_id) is not str and type(request_id) is not int:
            return
        running = self._running.get(request_id)
        if running is not None:
            running.ctx.cancel()  # marks it, and cancels a handler running as its own Task
            running.task.cancel()  # and whatever else it waits on (a thread's result is dropped)

    def _batch(self, items: list[Any]) -> McpError | None:
        """JSON-RPC 2.0 section 6: allowed only where the version policy says (2025-03-26)."""
        refused = batch.refusal(self.policy, items)
        if refused is not None:
            return refused
        answers = [
            entry if isinstance(entry, bytes) else self._request(entry, respond=False)
            for entry in batch.requests(items, self._notification, self._resolve)
        ]
        if answers:
            task = self._loop.create_task(self._answer_batch(answers))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
        return None

    def _resolve(self, response: Message) -> None:
        """A client's response to one of our requests wakes its waiter."""
        if not self.server_requests.resolve(response.id, response.raw, self.state.session_id):
            logger.debug("a response to an unknown server request %r was ignored", response.id)

    async def _answer_batch(self, answers: list[bytes | asyncio.Task[bytes | None]]) -> None:
        """One array with the responses, once all are there (cancelled ones are left out)."""
        pending = [answer for answer in answers if isinstance(answer, asyncio.Task)]
        if pending:
            await asyncio.wait(pending)
        responses: list[bytes] = []
        for answer in answers:
            if isinstance(answer, asyncio.Task):
                response = None if answer.cancelled() or answer.exception() else answer.result()
                if response is not None:
                    responses.append(response)
            else:
                responses.append(answer)
        if responses:
            self.sink.send(b"[" + b",".join(responses) + b"]")
            await self.sink.drain()

    # -- Outbound: what handlers send ------------------------------------------------

    async def notify(self, method: str, params: dict[str, Any] | None) -> None:
        self.sink.send(jsonrpc.encode_notification(method, params))
        await self.sink.drain()

    def notify_nowait(self, method: str, params: dict[str, Any] | None) -> None:
        self.sink.send(jsonrpc.encode_notification(method, params))

    async def send_request(self, message: bytes) -> None:
        if self._ended.is_set():
            raise McpError(jsonrpc.INTERNAL_ERROR, _CLIENT_GONE)
        self.sink.send(message)
        await self.sink.drain()

    async def close_stream(self) -> None:
        return None  # one channel for everything: nothing to close early

    async def wait_closed(self) -> None:
        """Until the session ends (a subscriptions/listen request holds on to this)."""
        await self._ended.wait()

    def detached(self) -> ChannelSession:
        return self  # work that outlives its request (a task) talks on the same channel

    # -- messages not tied to a request ----------------------------------------------

    def list_changed(self, kind: str) -> None:
        """notifications/{tools,resources,prompts}/list_changed (we declare listChanged)."""
        if self.policy is not None and not self._ended.is_set():
            self.sink.send(jsonrpc.encode_notification(f"notifications/{kind}/list_changed", None))

    def resource_updated(self, uri: str) -> None:
        """notifications/resources/updated for a URI this session subscribed to."""
        if uri in self.state.subscriptions and not self._ended.is_set():
            self.sink.send(jsonrpc.encode_notification("notifications/resources/updated", {"uri": uri}))

    def task_status(self, task: Task) -> None:
        """notifications/tasks/status for this session's tasks (2025-11-25, optional)."""
        if task.owner == self.state.session_id and not self._ended.is_set():
            self.sink.send(jsonrpc.encode_notification("notifications/tasks/status", task.to_json()))

    # -- the end ---------------------------------------------------------------------

    def end(self) -> None:
        """No more input will come: wake what waits for the end (subscriptions/listen) and
        fail server-to-client requests at once (no answer can arrive any more)."""
        if self._ended.is_set():
            return
        self._ended.set()
        self.server_requests.fail_all(jsonrpc.INTERNAL_ERROR, _CLIENT_GONE)

    def cancel_all(self) -> None:
        """The client is gone: stop everything still running, answer nothing."""
        for running in list(self._running.values()):
            running.ctx.cancel()
            running.task.cancel()
        for task in list(self._batches):
            task.cancel()

    async def finish(self, timeout: float) -> None:
        """End the session: requests in flight get ``timeout`` seconds to finish, then are cancelled."""
        self.end()
        pending = self._tasks()
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        self.cancel_all()
        pending = self._tasks()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    def _tasks(self) -> list[asyncio.Task[Any]]:
        return [running.task for running in self._running.values()] + list(self._batches)
