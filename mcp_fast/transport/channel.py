"""One MCP session over one message channel: what stdio, the old HTTP+SSE transport and the
in-process test client share.

They carry every server-to-client message (responses, notifications, server-to-client requests)
on one ordered channel, and every client message (requests, notifications, responses to our
requests) arrives on another, one at a time. The transport frames messages (a line, an SSE
event) in its ``Sink``; what happens to a request is the pipeline's business. Here:

- Lifecycle (basic/lifecycle.mdx): ``initialize`` negotiates the version; before it only
  ``ping`` is served. The session remembers the client's capabilities, its ``logging/setLevel``
  level and its resource subscriptions.
- Requests run concurrently: one that has to wait becomes its own Task, so a slow tool does not
  hold up a ping. ``notifications/cancelled`` cancels one and no response is sent for it.
- Server-to-client requests (sampling, elicitation, roots) go out on the channel; the client's
  responses come back in and wake their waiter; only this session's client can answer them.
- 2026-07-28 requests (per-request ``_meta``, no initialize) are served statelessly next to the
  session where the transport allows it (stdio): 2026-07-28 basic/versioning.mdx, "Backward
  Compatibility with Initialization-Based Versions": a dual-era server MAY serve both eras.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from mcp_fast.call import Call, Outbound, Principal, SessionState, TransportName
from mcp_fast.pipeline import Pipeline
from mcp_fast.protocol import batch, jsonrpc
from mcp_fast.protocol.envelope import carries_envelope, check_version, read_envelope
from mcp_fast.protocol.jsonrpc import INVALID_REQUEST, Kind, McpError, Message, RequestId
from mcp_fast.protocol.versions import LATEST_VERSION, POLICIES, VersionPolicy, negotiate

if TYPE_CHECKING:
    from mcp_fast.dispatch.tasks import Task

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


class ChannelCall(Call):
    """A request on a channel: its messages go to the channel, silent once it is cancelled."""

    __slots__ = ("channel",)

    channel: ChannelSession

    def cancel_scope(self) -> str | None:
        return self.channel.state.session_id  # both eras: the channel is the client

    def open_outbound(self) -> Outbound:
        outbound = self.outbound
        if outbound is None:
            outbound = self.outbound = _RequestOutbound(self.channel, self)
        return outbound


class _RequestOutbound:
    """The ``Outbound`` of one request: the session's channel, silent from the moment the
    request is cancelled, before its handler has unwound (a thread cannot be stopped at all):
    basic/utilities/cancellation.mdx, no further messages for a cancelled request."""

    __slots__ = ("call", "session")

    def __init__(self, session: ChannelSession, call: Call) -> None:
        self.session = session
        self.call = call

    async def notify(self, method: str, params: dict[str, Any] | None) -> None:
        if not self.call.cancelled:
            await self.session.notify(method, params)

    def notify_nowait(self, method: str, params: dict[str, Any] | None) -> None:
        if not self.call.cancelled:
            self.session.notify_nowait(method, params)

    async def send_request(self, message: bytes) -> None:
        if self.call.cancelled:
            raise McpError(jsonrpc.INTERNAL_ERROR, "The request was cancelled")
        await self.session.send_request(message)

    async def close_stream(self) -> None:
        return None

    async def wait_closed(self) -> None:
        await self.session.wait_closed()

    async def drain(self) -> None:
        await self.session.drain()

    def detached(self) -> Outbound:
        return self.session  # a task outlives its request, and its cancellation


def _error(request_id: RequestId | None, code: int, message: str) -> bytes:
    return jsonrpc.encode_error(request_id, McpError(code, message))


class ChannelSession:
    """One client's session on one channel. Also an ``Outbound``: every message goes to the
    same place, in the order it was sent (each request talks through a ``_RequestOutbound``).

    The transport tells it what is not tied to a request (``list_changed``,
    ``resource_updated``, ``task_status``): one listener per transport, not per session."""

    __slots__ = (
        "_ended",
        "_loop",
        "_tasks",
        "client_capabilities",
        "client_info",
        "pipeline",
        "policy",
        "principal",
        "sessionless",
        "sink",
        "state",
        "transport",
    )

    def __init__(
        self,
        pipeline: Pipeline,
        sink: Sink,
        *,
        session_id: str,
        transport: TransportName,
        sessionless: bool,
    ) -> None:
        self.pipeline = pipeline
        self.sink = sink
        self.transport: TransportName = transport
        self.sessionless = sessionless  # serve 2026-07-28 requests too (stdio), not only the session's
        self.state = SessionState(session_id)
        self.policy: VersionPolicy | None = None  # set by initialize
        self.client_capabilities: dict[str, Any] = {}
        self.client_info: dict[str, Any] = {}
        # Who the client is, when the transport knows (the in-process test client may say).
        self.principal: Principal | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ended = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def idle(self) -> None:
        """Return once no request of this session runs (each one's answer sent)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    # -- messages from the client ----------------------------------------------------

    def receive(
        self, value: Any, headers: Mapping[bytes, bytes] | None = None, client: tuple[str, int] | None = None
    ) -> McpError | None:
        """One decoded JSON value from the client (``headers`` and ``client``: of the HTTP request
        that carried it, if one did). An error refuses it as a whole, and the transport reports it
        its own way (stdio: an error line; HTTP+SSE: 400)."""
        if type(value) is list:
            return self._batch(value, headers, client)
        try:
            message = jsonrpc.parse_message(value)
        except jsonrpc.InvalidMessage as exc:
            return exc
        if message.kind is Kind.REQUEST:
            answer = self._request(message, headers, client, respond=True)
            if type(answer) is bytes:
                self.sink.send(answer)
        elif message.kind is Kind.NOTIFICATION:
            self._notification(message)
        else:
            self._resolve(message)
        return None

    def _request(
        self,
        message: Message,
        headers: Mapping[bytes, bytes] | None,
        client: tuple[str, int] | None,
        *,
        respond: bool,
    ) -> bytes | asyncio.Task[bytes | None]:
        """Start one request: its response at once, or the Task that finishes it (which sends the
        response itself when ``respond``, else returns it)."""
        call = self._call(message, headers, client)
        if type(call) is bytes:
            return call
        assert isinstance(call, ChannelCall)
        answer = self.pipeline.request(call)
        if type(answer) is bytes:
            self._answered(call)
            return answer
        task = self._loop.create_task(self._complete(call, answer, respond))  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _complete(
        self, call: ChannelCall, answer: Coroutine[Any, Any, bytes | None], respond: bool
    ) -> bytes | None:
        response = await answer
        if response is None:
            return None  # cancelled: MUST NOT send a response for it
        self._answered(call)
        if not respond:
            return response
        self.sink.send(response)
        await self.sink.drain()
        return None

    def _call(
        self, message: Message, headers: Mapping[bytes, bytes] | None, client: tuple[str, int] | None
    ) -> ChannelCall | bytes:
        """The request's Call, or the error that answers it right away."""
        request_id = message.id
        assert request_id is not None
        if self.pipeline.inflight.get(self.state.session_id, request_id) is not None:
            # basic/index.mdx: an id MUST NOT repeat one still in flight; answering would
            # confuse the two, and cancellation could not tell them apart.
            return _error(request_id, INVALID_REQUEST, _ID_IN_USE)
        params = message.params
        if self.sessionless and carries_envelope(params):
            return self._sessionless_call(message, headers, client)
        if message.method == "initialize":
            if self.policy is not None:
                return _error(
                    request_id, INVALID_REQUEST, "Invalid request: the session is already initialized"
                )
            negotiated = POLICIES[negotiate((params or _NO_PARAMS).get("protocolVersion"))]
            return self._make_call(message, negotiated, self.state, headers, client)
        policy = self.policy
        if policy is None:
            if message.method != "ping":
                return _error(request_id, INVALID_REQUEST, _BEFORE_INITIALIZE)
            policy = POLICIES[LATEST_VERSION]
        call = self._make_call(message, policy, self.state, headers, client)
        call.client_capabilities = self.client_capabilities
        call.client_info = self.client_info
        return call

    def _sessionless_call(
        self, message: Message, headers: Mapping[bytes, bytes] | None, client: tuple[str, int] | None
    ) -> ChannelCall | bytes:
        """A 2026-07-28 request: everything it needs travels with it. The envelope is checked as
        on HTTP, without the header rungs (draft/basic/transports/stdio.mdx, "Request Metadata":
        there is no header layer). It asks with input-required results, never with a
        server-to-client request (stdio.mdx: the server MUST NOT write requests)."""
        try:
            version, capabilities, client_info, log_level = read_envelope(message.params)
            policy = check_version(version)
        except McpError as exc:
            return jsonrpc.encode_error(message.id, exc)
        call = self._make_call(message, policy, None, headers, client)
        call.client_capabilities = capabilities
        call.client_info = client_info
        call.log_level = log_level
        return call

    def _make_call(
        self,
        message: Message,
        policy: VersionPolicy,
        session: SessionState | None,
        headers: Mapping[bytes, bytes] | None,
        client: tuple[str, int] | None,
    ) -> ChannelCall:
        assert message.id is not None  # a request
        call = ChannelCall(
            self.transport, message.id, message.method, message.params, policy, session, headers, client
        )
        call.channel = self
        call.principal = self.principal
        return call

    def _answered(self, call: Call) -> None:
        """A request was answered: an ``initialize`` that succeeded starts the session."""
        if call.method != "initialize" or self.policy is not None:
            return
        handshake = Pipeline.handshake(call)
        if handshake is not None:
            self.client_capabilities = handshake.capabilities
            self.client_info = handshake.client_info
            self.policy = POLICIES[handshake.version]

    def _notification(self, message: Message) -> None:
        self.pipeline.notification(message.method, message.params, self.state.session_id)

    def cancel(self, request_id: object) -> None:
        """notifications/cancelled: stop the request; no response is sent for it."""
        self.pipeline.notification(
            "notifications/cancelled", {"requestId": request_id}, self.state.session_id
        )

    def _batch(
        self, items: list[Any], headers: Mapping[bytes, bytes] | None, client: tuple[str, int] | None
    ) -> McpError | None:
        """JSON-RPC 2.0 section 6: allowed only where the version policy says (2025-03-26)."""
        refused = batch.refusal(self.policy, items)
        if refused is not None:
            return refused
        answers = [
            entry if isinstance(entry, bytes) else self._request(entry, headers, client, respond=False)
            for entry in batch.requests(items, self._notification, self._resolve)
        ]
        if answers:
            task = self._loop.create_task(self._answer_batch(answers))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return None

    def _resolve(self, response: Message) -> None:
        """A client's response to one of our requests wakes its waiter."""
        self.pipeline.response(response, self.state.session_id)

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

    async def drain(self) -> None:
        await self.sink.drain()

    def detached(self) -> Outbound:
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
        self.pipeline.server_requests.fail_all(jsonrpc.INTERNAL_ERROR, _CLIENT_GONE, self.state.session_id)

    def cancel_all(self) -> None:
        """The client is gone: stop everything still running, answer nothing."""
        for call in self.pipeline.inflight.of(self.state.session_id):
            call.cancel()
        for task in list(self._tasks):
            task.cancel()

    async def finish(self, timeout: float) -> None:
        """End the session: requests in flight get ``timeout`` seconds to finish, then are cancelled."""
        self.end()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        self.cancel_all()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
