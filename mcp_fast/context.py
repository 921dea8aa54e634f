"""The per-request Context handed to handlers that ask for it, and the Outbound interface.

A handler declares a parameter annotated ``Context`` to get one. Through it the
handler reports progress and sends log messages; both travel on the request's
own response stream (a POST answered as SSE), which the transport opens only
when the first notification is sent.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mcp_fast.dispatch.cache import CacheSlot
from mcp_fast.protocol.input_required import DetachRequested, InputRequired, InputRound, check_answer
from mcp_fast.protocol.jsonrpc import McpError, RequestId, encode_request
from mcp_fast.protocol.spec import CAPABILITY_OF_METHOD, LOG_LEVELS, LogLevel
from mcp_fast.protocol.versions import VersionPolicy

logger = logging.getLogger("mcp_fast.context")

if TYPE_CHECKING:
    from mcp_fast.server import MCPServer


class SessionState:
    """What this process remembers of one session (bounded by the transport).

    Sessions themselves are stateless tokens; this holds only what must live
    where the connection is: the log level chosen with logging/setLevel, the
    requests in flight (for cancellation), resource subscriptions and the GET stream.
    """

    __slots__ = ("get_stream", "inflight", "log_level", "session_id", "subscriptions")

    def __init__(self, session_id: str = "") -> None:
        self.session_id = session_id
        self.log_level = 0  # debug: everything, until logging/setLevel says otherwise
        self.inflight: dict[RequestId, Context] = {}
        self.subscriptions: set[str] = set()
        self.get_stream: Any = None


@dataclass(frozen=True, slots=True)
class Question:
    """One thing to ask the client: ``ctx.ask(Question(...), ...)`` asks several in one round."""

    method: str  # elicitation/create, sampling/createMessage or roots/list
    params: dict[str, Any]
    key: str | None = None  # stable name of the question across rounds (2026-07-28)
    timeout: float = 300.0


class Outbound(Protocol):
    """Where a request's messages to the client go (the transport implements it)."""

    async def notify(self, method: str, params: dict[str, Any] | None) -> None: ...

    async def send_request(self, message: bytes) -> None:
        """Send a server-to-client request; raise McpError when this channel can't carry one."""

    async def close_stream(self) -> None:
        """End the HTTP response early; the client resumes with GET + Last-Event-ID."""

    def notify_nowait(self, method: str, params: dict[str, Any] | None) -> None:
        """A notification written at once (no wait for the client to read)."""

    async def wait_closed(self) -> None:
        """Return when the client went away."""

    def detached(self) -> Outbound:
        """Where messages of work that outlives this request go (a task): the session's GET stream."""


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

    def __init__(self) -> None:
        self._pending: dict[str, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self.instance = secrets.token_hex(4)  # names this process in the ids
        self._counter = itertools.count(1)
        # Where answers that reached another instance of a fleet come back (transport/relay.py).
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

    def fail_all(self, code: int, message: str) -> None:
        """The client is gone: every waiter gets this error now instead of waiting out its timeout."""
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(McpError(code, message))

    def __len__(self) -> int:
        return len(self._pending)


class Context:
    """What a handler knows about the request it serves, and how it talks back."""

    __slots__ = (
        "_outbound",
        "_server_requests",
        "asker",
        "cache_slot",
        "cancelled",
        "client_capabilities",
        "client_info",
        "detachable",
        "error_code",
        "inputs",
        "log_level",
        "meta",
        "policy",
        "request_id",
        "server",
        "session",
        "task",
    )

    def __init__(
        self,
        server: MCPServer,
        request_id: RequestId | None,
        meta: dict[str, Any] | None,
        policy: VersionPolicy,
        outbound: Outbound,
        *,
        client_capabilities: dict[str, Any] | None = None,
        client_info: dict[str, Any] | None = None,
        server_requests: ServerRequests | None = None,
        session: SessionState | None = None,
        log_level: int | None = None,
    ) -> None:
        self.server = server
        self.request_id = request_id
        self.meta = meta
        self.policy = policy
        self.client_capabilities = client_capabilities
        self.client_info = client_info
        self._outbound = outbound
        self._server_requests = server_requests
        self.session = session
        self.log_level = log_level  # 2026-07-28: the request's own _meta logLevel
        self.error_code: int | None = None  # set when the request was answered with an error
        self.inputs: InputRound | None = None  # 2026-07-28: answers and questions of this round
        self.detachable = False  # ctx.detach() turns this call into a task (tasks extension)
        # Inside a task of the tasks extension: questions wait for tasks/update.
        self.asker: Callable[[dict[str, dict[str, Any]]], Awaitable[dict[str, Any]]] | None = None
        self.task: asyncio.Task[Any] | None = None  # the handler's Task, for cancellation
        self.cancelled = False
        self.cache_slot: CacheSlot | None = None  # a cacheable request's result goes there

    @property
    def protocol_version(self) -> str:
        return self.policy.version

    @property
    def progress_token(self) -> str | int | None:
        """The client's ``_meta.progressToken`` (progress is sent only when it gave one)."""
        if self.meta is None:
            return None
        token = self.meta.get("progressToken")
        return token if type(token) in (str, int) else None

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send any notification on this request's stream."""
        await self._outbound.notify(method, params)

    def notify_nowait(self, method: str, params: dict[str, Any] | None = None) -> None:
        self._outbound.notify_nowait(method, params)

    async def wait_closed(self) -> None:
        """Until the client closes this request's stream."""
        await self._outbound.wait_closed()

    async def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        """``notifications/progress`` for this request; a no-op without a progress token."""
        token = self.progress_token
        if token is None:
            return
        params: dict[str, Any] = {"progressToken": token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self._outbound.notify("notifications/progress", params)

    async def log(self, level: LogLevel, data: Any, logger: str | None = None) -> None:
        """``notifications/message``, dropped when below the client's logging level."""
        rank = LOG_LEVELS.get(level)
        if rank is None:
            raise ValueError(f"unknown log level {level!r}")
        if self.policy.per_request_log_level:
            # 2026-07-28: log notifications only for a request that asked, at its level.
            if self.log_level is None or rank < self.log_level:
                return
        elif self.session is not None and rank < self.session.log_level:
            return
        params: dict[str, Any] = {"level": level, "data": data}
        if logger is not None:
            params["logger"] = logger
        await self._outbound.notify("notifications/message", params)

    async def debug(self, data: Any, logger: str | None = None) -> None:
        await self.log("debug", data, logger)

    async def info(self, data: Any, logger: str | None = None) -> None:
        await self.log("info", data, logger)

    async def warning(self, data: Any, logger: str | None = None) -> None:
        await self.log("warning", data, logger)

    async def error(self, data: Any, logger: str | None = None) -> None:
        await self.log("error", data, logger)

    # -- server-to-client requests ---------------------------------------------------

    async def request(
        self, method: str, params: dict[str, Any] | None, timeout: float = 300.0
    ) -> dict[str, Any]:
        """Send a request to the client on this request's stream and wait for its answer.

        Raises McpError when the client lacks the capability, answers with an
        error, or does not answer within ``timeout`` seconds.
        """
        self.require_client_capability(method)
        if self._server_requests is None:
            raise McpError(-32603, f"{method} is not available on this transport")
        owner = self.session.session_id if self.session is not None else ""
        request_id, answer = self._server_requests.open(owner)
        try:
            await self._outbound.send_request(encode_request(request_id, method, params))
            return await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            raise McpError(-32603, f"The client did not answer {method} within {timeout:g} s") from None
        finally:
            self._server_requests.close(request_id)

    # -- asking the client (server-to-client requests, or input-required results) ------

    async def ask(self, *questions: Question) -> tuple[dict[str, Any], ...]:
        """Ask several things in one round; returns the answers in order.

        2025 clients get each question as a server-to-client request (concurrently);
        in 2026-07-28 they go out together in one input-required result, and the
        handler runs again from the top with the answers (keep what comes before the
        questions free of side effects, and ask in a fixed order with stable keys).
        """
        if self.asker is not None:
            return await self._ask_in_task(questions)
        inputs = self.inputs
        if inputs is None:
            if not self.policy.handshake:
                raise McpError(-32603, "Client input is not available for this request")
            return tuple(
                await asyncio.gather(*(self.request(q.method, q.params, q.timeout) for q in questions))
            )
        answers: list[dict[str, Any]] = []
        missing = False
        for question in questions:
            self.require_client_capability(question.method)
            key = question.key or inputs.auto_key(question.method.split("/")[0])
            answer = inputs.answer(key)
            if answer is None:
                inputs.pending[key] = {"method": question.method, "params": question.params}
                missing = True
                continue
            check_answer(question.method, key, answer)
            answers.append(answer)
        if missing:
            raise InputRequired
        return tuple(answers)

    async def _ask_in_task(self, questions: tuple[Question, ...]) -> tuple[dict[str, Any], ...]:
        assert self.asker is not None
        keyed: dict[str, Question] = {}
        answers: dict[str, Any] = {}
        for question in questions:
            self.require_client_capability(question.method)
            key = question.key or f"{question.method.split('/')[0]}-{secrets.token_hex(4)}"
            keyed[key] = question
            # Answered before the call became a task (ctx.detach() after input-required rounds).
            earlier = self.inputs.answer(key) if self.inputs is not None and question.key else None
            if earlier is not None:
                answers[key] = earlier
        open_questions = {
            k: {"method": q.method, "params": q.params} for k, q in keyed.items() if k not in answers
        }
        if open_questions:
            answers.update(await self.asker(open_questions))
        for key, question in keyed.items():
            check_answer(question.method, key, answers[key])
        return tuple(answers[key] for key in keyed)

    async def sample(
        self,
        messages: str | list[dict[str, Any]],
        *,
        max_tokens: int = 1000,
        system_prompt: str | None = None,
        temperature: float | None = None,
        model_preferences: dict[str, Any] | None = None,
        key: str | None = None,
        timeout: float = 300.0,
    ) -> dict[str, Any]:
        """``sampling/createMessage``: ask the client's LLM; returns the CreateMessageResult."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": {"type": "text", "text": messages}}]
        params: dict[str, Any] = {"messages": messages, "maxTokens": max_tokens}
        if system_prompt is not None:
            params["systemPrompt"] = system_prompt
        if temperature is not None:
            params["temperature"] = temperature
        if model_preferences is not None:
            params["modelPreferences"] = model_preferences
        return (await self.ask(Question("sampling/createMessage", params, key, timeout)))[0]

    async def elicit(
        self,
        message: str,
        requested_schema: dict[str, Any],
        *,
        key: str | None = None,
        timeout: float = 600.0,
    ) -> dict[str, Any]:
        """``elicitation/create`` in form mode; returns ``{"action": ..., "content": ...}``."""
        params: dict[str, Any] = {"message": message, "requestedSchema": requested_schema}
        if self.policy.elicitation_modes:
            params = {"mode": "form", **params}
        return (await self.ask(Question("elicitation/create", params, key, timeout)))[0]

    async def elicit_url(
        self,
        message: str,
        url: str,
        elicitation_id: str | None = None,
        *,
        key: str | None = None,
        timeout: float = 600.0,
    ) -> dict[str, Any]:
        """``elicitation/create`` in URL mode (2025-11-25 on): send the user to ``url``."""
        params: dict[str, Any] = {"mode": "url", "message": message, "url": url}
        if self.policy.url_elicitation_ids:
            params["elicitationId"] = elicitation_id or secrets.token_urlsafe(12)
        return (await self.ask(Question("elicitation/create", params, key, timeout)))[0]

    async def list_roots(self, *, key: str | None = None, timeout: float = 60.0) -> list[dict[str, Any]]:
        """``roots/list``: the client's roots."""
        result = (await self.ask(Question("roots/list", {}, key, timeout)))[0]
        roots = result.get("roots")
        return roots if isinstance(roots, list) else []

    def client_supports(self, capability: str) -> bool:
        """Did the client declare ``capability`` ("sampling", "elicitation", "roots", ...)?"""
        capabilities = self.client_capabilities
        return capabilities is not None and capability in capabilities

    async def detach(self) -> None:
        """From here on, run as a task (tasks extension; tools registered with
        ``task_start="detach"``): questions asked before were answered synchronously.
        Elsewhere this does nothing."""
        if self.detachable:
            raise DetachRequested

    async def close_sse_stream(self) -> None:
        """Close this request's SSE stream now and finish on the client's resumed GET
        (2025-11-25 "polling"); does nothing where the stream is not resumable."""
        await self._outbound.close_stream()

    @property
    def owner(self) -> str:
        """Who owns what this request creates (tasks): its session, or "" without one."""
        return self.session.session_id if self.session is not None else ""

    def detached_copy(self) -> Context:
        """A Context for work that goes on after this request was answered (a task)."""
        return Context(
            self.server,
            self.request_id,
            self.meta,
            self.policy,
            self._outbound.detached(),
            client_capabilities=self.client_capabilities,
            client_info=self.client_info,
            server_requests=self._server_requests,
            session=self.session,
        )

    def cancel(self) -> None:
        """``notifications/cancelled`` for this request: stop the handler, send no answer."""
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()

    def require_client_capability(self, method: str) -> None:
        """Raise a clear error when the client did not declare what ``method`` needs.

        Without a session the capabilities are unknown, and the request is tried.
        """
        capability = CAPABILITY_OF_METHOD.get(method)
        if capability is None or self.client_capabilities is None:
            return
        if capability not in self.client_capabilities:
            code = self.policy.missing_capability
            raise McpError(
                code,
                f"The client did not declare the '{capability}' capability needed for {method}",
                {"requiredCapabilities": {capability: {}}} if code == -32021 else None,
            )
