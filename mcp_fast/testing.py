"""Test a server in plain pytest: an MCP client connected to an ``MCPServer`` in the same process.

    from mcp_fast.testing import connect

    async def test_echo() -> None:
        async with connect(server) as client:
            result = await client.call_tool("echo", {"message": "hi"})
            assert result["content"][0]["text"] == "hi"

No socket and no subprocess: the client talks JSON-RPC to the server through the same request
pipeline every transport uses (middleware, the result cache, handlers, the server's lifespan),
with ``call.transport == "memory"``. Results are the JSON objects the protocol defines (dicts);
a JSON-RPC error is raised as ``McpError``. Progress and log notifications reach callbacks;
sampling, elicitation and roots requests reach the handlers given to ``connect``, in both
protocol eras (2025 server-to-client requests, 2026-07-28 input-required rounds).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final

import orjson

from mcp_fast.call import Principal, RequestCheck
from mcp_fast.dispatch.cache import ResultCache
from mcp_fast.ops.auth import ScopeCheck
from mcp_fast.ops.ratelimit import RateLimits
from mcp_fast.pipeline import Pipeline, PipelineSettings
from mcp_fast.protocol import jsonrpc
from mcp_fast.protocol.envelope import (
    CLIENT_CAPABILITIES_KEY,
    CLIENT_INFO_KEY,
    LOG_LEVEL_KEY,
    PROTOCOL_VERSION_KEY,
)
from mcp_fast.protocol.jsonrpc import METHOD_NOT_FOUND, McpError
from mcp_fast.protocol.versions import LATEST_VERSION, POLICIES
from mcp_fast.server import MCPServer
from mcp_fast.transport.channel import ChannelSession

__all__ = ["TestClient", "connect"]

# What a handler of a server-to-client request gets (its params) and returns (its result).
ClientHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]] | dict[str, Any]]
ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None] | None]
LogCallback = Callable[[dict[str, Any]], Awaitable[None] | None]

_MAX_INPUT_ROUNDS: Final = 16


class _Sink:
    """The server's side of the channel: every message it sends comes to the client."""

    def __init__(self, client: TestClient) -> None:
        self._client = client

    def send(self, message: bytes) -> None:
        self._client._received(orjson.loads(message))

    async def drain(self) -> None:
        return None


class TestClient:
    """An MCP client over an in-process channel (made by ``connect``)."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        protocol_version: str,
        client_info: dict[str, Any],
        handlers: dict[str, ClientHandler],
        roots: list[dict[str, Any]] | None,
        on_log: LogCallback | None,
        headers: Mapping[str, str] | None,
        client: tuple[str, int] | None,
    ) -> None:
        self.pipeline = pipeline
        self.protocol_version = protocol_version
        self.sessionless = not POLICIES[protocol_version].handshake
        self.client_info = client_info
        self._handlers = dict(handlers)
        if roots is not None:
            self._handlers.setdefault("roots/list", lambda params: {"roots": list(roots)})
        self._on_log = on_log
        self._headers = {
            name.lower().encode("latin-1"): value.encode("latin-1") for name, value in (headers or {}).items()
        }
        self._client = client
        self._ids = itertools.count(1)
        self._waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._progress: dict[str, ProgressCallback] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.notifications: list[tuple[str, dict[str, Any] | None]] = []  # all but progress and logs
        self.logs: list[dict[str, Any]] = []  # params of every notifications/message
        self.log_level: str | None = None
        self.server_info: dict[str, Any] = {}
        self.capabilities: dict[str, Any] = {}
        self.instructions: str | None = None
        self.session = ChannelSession(
            pipeline,
            _Sink(self),
            session_id="memory-" + secrets.token_hex(8),
            transport="memory",
            sessionless=True,
        )

    @property
    def client_capabilities(self) -> dict[str, Any]:
        capabilities: dict[str, Any] = {}
        if "sampling/createMessage" in self._handlers:
            capabilities["sampling"] = {}
        if "elicitation/create" in self._handlers:
            capabilities["elicitation"] = {"form": {}, "url": {}}
        if "roots/list" in self._handlers:
            capabilities["roots"] = {}
        return capabilities

    # -- the protocol ---------------------------------------------------------------------

    async def start(self) -> None:
        """initialize (2025 versions) or server/discover (2026-07-28)."""
        if self.sessionless:
            result = await self.request("server/discover")
            self.capabilities = result.get("capabilities", {})
            self.instructions = result.get("instructions")
            self.server_info = (result.get("_meta") or {}).get("io.modelcontextprotocol/serverInfo", {})
            return
        result = await self.request(
            "initialize",
            {
                "protocolVersion": self.protocol_version,
                "capabilities": self.client_capabilities,
                "clientInfo": self.client_info,
            },
        )
        self.protocol_version = result["protocolVersion"]
        self.server_info = result.get("serverInfo", {})
        self.capabilities = result.get("capabilities", {})
        self.instructions = result.get("instructions")
        await self.notify("notifications/initialized")

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Send a request and return its result (raises McpError for an error answer). In
        2026-07-28 an input-required result is answered with the handlers and retried."""
        params = dict(params or {})
        for _ in range(_MAX_INPUT_ROUNDS):
            result = await self._round_trip(method, params, on_progress)
            if result.get("resultType") != "input_required":
                return result
            params["inputResponses"] = await self._answer_all(result.get("inputRequests") or {})
            params["requestState"] = result.get("requestState")
        raise McpError(
            jsonrpc.INTERNAL_ERROR, f"{method} still asked for input after {_MAX_INPUT_ROUNDS} rounds"
        )

    async def _round_trip(
        self, method: str, params: dict[str, Any], on_progress: ProgressCallback | None
    ) -> dict[str, Any]:
        request_id = next(self._ids)
        meta = dict(params.get("_meta") or {})
        if on_progress is not None:
            token = f"progress-{request_id}"
            meta["progressToken"] = token
            self._progress[token] = on_progress
        if self.sessionless:
            meta[PROTOCOL_VERSION_KEY] = self.protocol_version
            meta[CLIENT_CAPABILITIES_KEY] = self.client_capabilities
            meta[CLIENT_INFO_KEY] = self.client_info
            if self.log_level is not None:
                meta[LOG_LEVEL_KEY] = self.log_level
        if meta:
            params = {**params, "_meta": meta}
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = answer
        try:
            self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            message = await answer
        finally:
            self._waiting.pop(request_id, None)
            if on_progress is not None:
                self._progress.pop(f"progress-{request_id}", None)
        error = message.get("error")
        if isinstance(error, dict):
            raise McpError(
                int(error.get("code", jsonrpc.INTERNAL_ERROR)), str(error.get("message")), error.get("data")
            )
        result = message.get("result")
        return result if isinstance(result, dict) else {}

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._send(message)

    def _send(self, message: dict[str, Any]) -> None:
        error = self.session.receive(message, self._headers, self._client)
        if error is not None:  # refused as a whole (a malformed message)
            request_id = message.get("id")
            waiter = self._waiting.get(request_id)
            if waiter is not None and not waiter.done():
                waiter.set_result({"error": error.to_error_object()})

    # -- what the server sends ------------------------------------------------------------

    def _received(self, message: Any) -> None:
        if isinstance(message, list):
            for item in message:
                self._received(item)
            return
        if not isinstance(message, dict):
            return
        if "method" not in message:
            waiter = self._waiting.get(message.get("id"))
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
            return
        method = message["method"]
        params = message.get("params")
        if "id" in message:
            self._in_background(self._answer_server_request(message["id"], method, params or {}))
        elif method == "notifications/progress" and isinstance(params, dict):
            callback = self._progress.get(str(params.get("progressToken")))
            if callback is not None:
                self._in_background(
                    _maybe_await(
                        callback(params.get("progress", 0), params.get("total"), params.get("message"))
                    )
                )
        elif method == "notifications/message" and isinstance(params, dict):
            self.logs.append(params)
            if self._on_log is not None:
                self._in_background(_maybe_await(self._on_log(params)))
        else:
            self.notifications.append((method, params))

    def _in_background(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _answer_server_request(self, request_id: Any, method: str, params: dict[str, Any]) -> None:
        """A 2025 server-to-client request (sampling, elicitation, roots): the handler answers."""
        try:
            result = await self._ask_handler(method, params)
            answer: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "result": result}
        except McpError as exc:
            answer = {"jsonrpc": "2.0", "id": request_id, "error": exc.to_error_object()}
        self._send(answer)

    async def _ask_handler(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        handler = self._handlers.get(method)
        if handler is None:
            raise McpError(METHOD_NOT_FOUND, f"This test client has no handler for {method}")
        result: dict[str, Any] = await _maybe_await(handler(params))
        return result

    async def _answer_all(self, requests: dict[str, Any]) -> dict[str, Any]:
        """2026-07-28: the answers to an input-required result's questions, by key."""
        answers: dict[str, Any] = {}
        for key, question in requests.items():
            if isinstance(question, dict):
                answers[key] = await self._ask_handler(
                    str(question.get("method")), question.get("params") or {}
                )
        return answers

    # -- conveniences ---------------------------------------------------------------------

    async def _all_pages(self, method: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            result = await self.request(method, {"cursor": cursor} if cursor is not None else None)
            items.extend(result.get(key, []))
            cursor = result.get("nextCursor")
            if not cursor:
                return items

    async def list_tools(self) -> list[dict[str, Any]]:
        """Every tool (all pages of tools/list)."""
        return await self._all_pages("tools/list", "tools")

    async def list_resources(self) -> list[dict[str, Any]]:
        return await self._all_pages("resources/list", "resources")

    async def list_resource_templates(self) -> list[dict[str, Any]]:
        return await self._all_pages("resources/templates/list", "resourceTemplates")

    async def list_prompts(self) -> list[dict[str, Any]]:
        return await self._all_pages("prompts/list", "prompts")

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """tools/call: the CallToolResult (a tool's failure is ``isError: true`` in it)."""
        return await self.request(
            "tools/call", {"name": name, "arguments": arguments or {}}, on_progress=on_progress
        )

    async def read_resource(self, uri: str) -> dict[str, Any]:
        return await self.request("resources/read", {"uri": uri})

    async def get_prompt(self, name: str, arguments: dict[str, str] | None = None) -> dict[str, Any]:
        return await self.request("prompts/get", {"name": name, "arguments": arguments or {}})

    async def complete(
        self, ref: dict[str, Any], argument: dict[str, Any], context: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"ref": ref, "argument": argument}
        if context is not None:
            params["context"] = context
        return await self.request("completion/complete", params)

    async def ping(self) -> None:
        await self.request("ping")

    async def set_log_level(self, level: str) -> None:
        """logging/setLevel (2025), or the per-request logLevel of 2026-07-28."""
        self.log_level = level
        if not self.sessionless:
            await self.request("logging/setLevel", {"level": level})

    async def close(self) -> None:
        await self.session.finish(1.0)
        for task in list(self._background):
            task.cancel()


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value


@contextlib.asynccontextmanager
async def connect(
    server: MCPServer,
    *,
    protocol_version: str = LATEST_VERSION,
    client_info: dict[str, Any] | None = None,
    sampling: ClientHandler | None = None,
    elicitation: ClientHandler | None = None,
    roots: list[dict[str, Any]] | None = None,
    on_log: LogCallback | None = None,
    headers: Mapping[str, str] | None = None,
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
    principal: Principal | None = None,
    cache: bool = True,
    lifespan: bool = True,
) -> AsyncIterator[TestClient]:
    """A client connected to ``server`` in this process, initialized and ready.

    ``protocol_version``: any supported version ("2026-07-28": sessionless requests).
    ``sampling``/``elicitation``: handlers of those requests (params -> result), which also
    declare the capability; ``roots``: the client's roots. ``on_log``: every log message.
    ``headers``, ``client`` and ``principal``: what middleware and handlers see in ``call``.
    ``cache``: the result cache as the server runs it by default. ``lifespan``: run the server's
    ``@server.lifespan`` around the connection.
    """
    if protocol_version not in POLICIES:
        raise ValueError(f"unknown protocol version {protocol_version!r}; supported: {', '.join(POLICIES)}")
    handlers: dict[str, ClientHandler] = {}
    if sampling is not None:
        handlers["sampling/createMessage"] = sampling
    if elicitation is not None:
        handlers["elicitation/create"] = elicitation
    # A tool's scopes and rate limit hold here as over HTTP (a connection with a principal).
    tools = server.registry.tools.values()
    checks: list[RequestCheck] = []
    if any(tool.scopes for tool in tools):
        checks.append(ScopeCheck(server.registry, ""))
    if any(tool.rate_limit is not None for tool in tools):
        checks.append(RateLimits(server.registry, None))
    settings = PipelineSettings(cache=ResultCache(10_000, 64 << 20) if cache else None, checks=tuple(checks))
    running = server.running() if lifespan else contextlib.nullcontext()
    async with running:
        pipeline = Pipeline(server, settings)
        test_client = TestClient(
            pipeline,
            protocol_version=protocol_version,
            client_info=client_info or {"name": "mcp_fast.testing", "version": "1"},
            handlers=handlers,
            roots=roots,
            on_log=on_log,
            headers=headers,
            client=client,
        )
        test_client.session.principal = principal
        server.on_list_changed(test_client.session.list_changed)
        server.on_resource_updated(test_client.session.resource_updated)
        pipeline.on_task_status(test_client.session.task_status)
        try:
            await test_client.start()
            yield test_client
        finally:
            await test_client.close()
            server.remove_listeners(test_client.session)
            pipeline.close()
