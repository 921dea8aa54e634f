"""The per-request ``Context`` handed to handlers that ask for it.

A handler declares a parameter annotated ``Context`` to get one. Through it the handler sees
the request (``ctx.call``: headers, client, principal, transport ...), reports progress, sends
log messages and asks the client (sampling, elicitation, roots). Messages travel on the
request's own channel (a POST answered as SSE, the session's pipe), which the transport opens
only when the first one is sent.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from mcp_fast.call import Call, Outbound, SessionState
from mcp_fast.protocol.input_required import DetachRequested, InputRequired, InputRound, check_answer
from mcp_fast.protocol.jsonrpc import McpError, RequestId, encode_request
from mcp_fast.protocol.spec import CAPABILITY_OF_METHOD, LOG_LEVELS, LogLevel
from mcp_fast.protocol.versions import VersionPolicy

if TYPE_CHECKING:
    from mcp_fast.server import MCPServer

__all__ = ["Context", "Question"]


@dataclass(frozen=True, slots=True)
class Question:
    """One thing to ask the client: ``ctx.ask(Question(...), ...)`` asks several in one round."""

    method: str  # elicitation/create, sampling/createMessage or roots/list
    params: dict[str, Any]
    key: str | None = None  # stable name of the question across rounds (2026-07-28)
    timeout: float = 300.0


class _Sent:
    """What a notification returns once it is written: awaiting it returns at once."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


_SENT: Final = _Sent()


class _Drain:
    """What a notification written on the loop returns: awaiting it waits while the client reads
    slower than we write; not awaiting it (a def handler on the loop) is fine too."""

    __slots__ = ("_outbound",)

    def __init__(self, outbound: Outbound) -> None:
        self._outbound = outbound

    def __await__(self) -> Generator[Any, None, None]:
        return self._outbound.drain().__await__()


async def _send(outbound: Outbound, method: str, params: dict[str, Any] | None) -> None:
    await outbound.notify(method, params)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # a Context made outside a loop (a test driving a transport by hand)
        return None


class ServerRequestTable(Protocol):
    """The process's table of server-to-client requests waiting for an answer
    (``pipeline/server_requests.py``)."""

    def open(self, owner: str = "") -> tuple[str, asyncio.Future[dict[str, Any]]]: ...

    def close(self, request_id: str) -> None: ...


class Context:
    """What a handler knows about the request it serves, and how it talks back."""

    __slots__ = ("_loop", "_server_requests", "_thread", "asker", "call", "detachable", "inputs", "server")

    def __init__(
        self, server: MCPServer, call: Call, server_requests: ServerRequestTable | None = None
    ) -> None:
        self.server = server
        # Made on the event loop's thread; a def handler in the thread pool talks back through it.
        self._loop = _running_loop()
        self._thread = threading.get_ident()
        self.call = call  # the request as it arrived: what a middleware sees too
        # 2025 sessions: where server-to-client requests wait (None: this request can't send one).
        self._server_requests = server_requests
        self.inputs: InputRound | None = None  # 2026-07-28: answers and questions of this round
        self.detachable = False  # ctx.detach() turns this call into a task (tasks extension)
        # Inside a task of the tasks extension: questions wait for tasks/update.
        self.asker: Callable[[dict[str, dict[str, Any]]], Awaitable[dict[str, Any]]] | None = None

    # -- the request -------------------------------------------------------------------

    @property
    def request_id(self) -> RequestId:
        return self.call.id

    @property
    def meta(self) -> dict[str, Any] | None:
        return self.call.meta

    @property
    def policy(self) -> VersionPolicy:
        return self.call.policy

    @property
    def protocol_version(self) -> str:
        return self.call.policy.version

    @property
    def client_capabilities(self) -> dict[str, Any] | None:
        return self.call.client_capabilities

    @property
    def client_info(self) -> dict[str, Any] | None:
        return self.call.client_info

    @property
    def session(self) -> SessionState | None:
        return self.call.session

    @property
    def log_level(self) -> int | None:
        return self.call.log_level

    @property
    def cancelled(self) -> bool:
        return self.call.cancelled

    @property
    def lifespan(self) -> Any:
        """What the server's ``@server.lifespan`` function yielded (None without one)."""
        return self.server.lifespan_state

    @property
    def _outbound(self) -> Outbound:
        return self.call.open_outbound()

    @property
    def progress_token(self) -> str | int | None:
        """The client's ``_meta.progressToken`` (progress is sent only when it gave one)."""
        meta = self.call.meta
        if meta is None:
            return None
        token = meta.get("progressToken")
        return token if type(token) in (str, int) else None

    # -- notifications: await them in an async def handler; a def handler calls them plainly --

    def notify(self, method: str, params: dict[str, Any] | None = None) -> Awaitable[None]:
        """Send any notification on this request's stream.

        In an ``async def`` handler, ``await`` it: it is written at once, and the await waits
        while the client reads slower than we write. In a ``def`` handler call it without
        ``await``: on the event loop it is written at once; from the thread pool it is written by
        the loop and the call returns once it is (so a slow client slows the handler down).
        """
        outbound = self.call.open_outbound()
        if threading.get_ident() == self._thread:
            outbound.notify_nowait(method, params)
            return _Drain(outbound)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(_send(outbound, method, params), loop).result()
        return _SENT

    def notify_nowait(self, method: str, params: dict[str, Any] | None = None) -> None:
        """A notification written at once, without waiting for a slow client (on the loop)."""
        self.call.open_outbound().notify_nowait(method, params)

    async def wait_closed(self) -> None:
        """Until the client closes this request's stream."""
        await self._outbound.wait_closed()

    def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> Awaitable[None]:
        """``notifications/progress`` for this request; nothing without a progress token."""
        token = self.progress_token
        if token is None:
            return _SENT
        params: dict[str, Any] = {"progressToken": token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        return self.notify("notifications/progress", params)

    def log(self, level: LogLevel, data: Any, logger: str | None = None) -> Awaitable[None]:
        """``notifications/message``, dropped when below the client's logging level."""
        rank = LOG_LEVELS.get(level)
        if rank is None:
            raise ValueError(f"unknown log level {level!r}")
        if self.policy.per_request_log_level:
            # 2026-07-28: log notifications only for a request that asked, at its level.
            if self.log_level is None or rank < self.log_level:
                return _SENT
        elif self.call.session is not None and rank < self.call.session.log_level:
            return _SENT
        params: dict[str, Any] = {"level": level, "data": data}
        if logger is not None:
            params["logger"] = logger
        return self.notify("notifications/message", params)

    def debug(self, data: Any, logger: str | None = None) -> Awaitable[None]:
        return self.log("debug", data, logger)

    def info(self, data: Any, logger: str | None = None) -> Awaitable[None]:
        return self.log("info", data, logger)

    def warning(self, data: Any, logger: str | None = None) -> Awaitable[None]:
        return self.log("warning", data, logger)

    def error(self, data: Any, logger: str | None = None) -> Awaitable[None]:
        return self.log("error", data, logger)

    # -- server-to-client requests ---------------------------------------------------

    async def send_request(
        self, method: str, params: dict[str, Any] | None, timeout: float = 300.0
    ) -> dict[str, Any]:
        """Send a request to the client on this request's stream and wait for its answer
        (a 2025 session; 2026-07-28 clients are asked with input-required results: ``ask``).

        Raises McpError when the client lacks the capability, answers with an
        error, or does not answer within ``timeout`` seconds.
        """
        self.require_client_capability(method)
        if self._server_requests is None:
            raise McpError(-32603, f"{method} is not available on this transport")
        request_id, answer = self._server_requests.open(self.owner)
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
                await asyncio.gather(*(self.send_request(q.method, q.params, q.timeout) for q in questions))
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
        session = self.call.session
        return session.session_id if session is not None else ""

    def detached_copy(self) -> Context:
        """A Context for work that goes on after this request was answered (a task): the same
        facts, messages to the session's stream, and a cancellation of its own."""
        return Context(self.server, self.call.detached_copy(), self._server_requests)

    def cancel(self) -> None:
        """Stop the handler and send no answer (``notifications/cancelled``)."""
        self.call.cancel()

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
