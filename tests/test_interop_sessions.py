"""Interop: sessions and server-to-client requests with the official MCP Python SDK client (`mcp` 2.3.0).

The SDK's `Client` drives real `python -m mcp_fast` processes in legacy mode (the `initialize`
handshake, `Mcp-Session-Id`, the GET stream, DELETE on exit). An httpx2 client with event hooks
records every exchange, so the tests see the session id on the wire without reaching into the SDK.

SDK 2.3.0 behaviour relied on (read from `mcp/client/streamable_http.py` and `mcp/client/session.py`):
- `streamable_http_client(url, terminate_on_close=True)` sends `DELETE` with the session id when the
  client context exits; `Client(url)` uses that default.
- The client declares `sampling` / `elicitation` capabilities only when the matching callback is given.
- A server-to-client request arriving on a POST's SSE stream is answered with a separate POST.

Spec: `docs/specification/2025-11-25/` basic/transports.mdx ("Session Management"),
client/sampling.mdx, client/elicitation.mdx, basic/utilities/progress.mdx.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import httpx2
import orjson
import pytest
from conftest import RunningServer, module_server
from httpclient import RawClient, rpc_bytes
from mcp import Client, types
from mcp.client.context import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

LATEST = "2025-11-25"
TIMEOUT_S = 20.0
INVALID_REQUEST = -32600
SECRET = "interop-sessions-secret-0123456789abcdef0123456789abcdef"

T = TypeVar("T")


# -- servers ---------------------------------------------------------------------------------------


jwt_a = module_server("--session-secret", SECRET)
jwt_b = module_server("--session-secret", SECRET)
memory = module_server("--session-mode", "memory")


# -- a recording HTTP client -----------------------------------------------------------------------


@dataclass
class Exchange:
    method: str
    port: int | None
    rpc_method: str | None  # the JSON-RPC method of a POSTed request or notification
    request_headers: dict[str, str]
    status: int
    response_headers: dict[str, str]


class Recorder:
    """httpx2 event hooks that note every request/response pair the SDK makes."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        rpc_method = None
        if request.method == "POST":
            try:
                body = orjson.loads(request.content)
            except orjson.JSONDecodeError:
                body = None
            if isinstance(body, dict):
                rpc_method = body.get("method")
        self.exchanges.append(
            Exchange(
                request.method,
                request.url.port,
                rpc_method,
                {k.lower(): v for k, v in request.headers.items()},
                response.status_code,
                {k.lower(): v for k, v in response.headers.items()},
            )
        )

    def http_client(self, transport: httpx2.AsyncBaseTransport | None = None) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            timeout=httpx2.Timeout(30.0, read=300.0),
            event_hooks={"response": [self.on_response]},
            transport=transport,
        )

    def session_id(self) -> str:
        [init] = [e for e in self.exchanges if e.rpc_method == "initialize"]
        assert init.status == 200, init
        session = init.response_headers.get("mcp-session-id")
        assert session, init.response_headers
        return session


class RoundRobin(httpx2.AsyncBaseTransport):
    """A load balancer without sticky sessions: each request goes to the next port in turn."""

    def __init__(self, ports: list[int]) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self._ports = itertools.cycle(ports)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(port=next(self._ports))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def run_client(
    server: RunningServer,
    body: Callable[[Client], Awaitable[T]],
    *,
    recorder: Recorder | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
    **client_kwargs: Any,
) -> T:
    """Open an SDK `Client` (legacy handshake) on `server`, run `body(client)`, exit the client."""
    recorder = recorder or Recorder()

    async def main() -> T:
        with anyio.fail_after(TIMEOUT_S):
            async with recorder.http_client(transport) as http:
                connection = streamable_http_client(server.url, http_client=http)
                async with Client(connection, mode="legacy", cache=None, **client_kwargs) as client:
                    return await body(client)

    return anyio.run(main)


def only_text(result: types.CallToolResult) -> str:
    assert len(result.content) == 1, result
    block = result.content[0]
    assert isinstance(block, types.TextContent), result
    return block.text


def raw_ping_status(server: RunningServer, session: str) -> int:
    with RawClient(server.port) as client:
        client.send(rpc_bytes("ping", None, 1, **{"Mcp-Session-Id": session, "MCP-Protocol-Version": LATEST}))
        return client.read_response().status


# -- the session id ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["jwt", "memory"])
def test_client_uses_the_session_and_ends_it_on_exit(
    jwt_a: RunningServer, memory: RunningServer, mode: str
) -> None:
    server = jwt_a if mode == "jwt" else memory
    recorder = Recorder()

    async def body(client: Client) -> str:
        assert client.protocol_version == LATEST
        result = await client.call_tool("echo", {"message": "with a session"})
        await client.list_tools()
        return only_text(result)

    assert run_client(server, body, recorder=recorder) == "with a session"
    session = recorder.session_id()
    assert all(0x21 <= ord(char) <= 0x7E for char in session)
    if mode == "jwt":
        assert session.count(".") == 2
    later = [e for e in recorder.exchanges if e.rpc_method != "initialize"]
    methods = {e.rpc_method for e in later if e.method == "POST"}
    assert {"notifications/initialized", "tools/call", "tools/list"} <= methods, methods
    for exchange in later:
        # Every request after initialize carries the session id and the negotiated version.
        assert exchange.request_headers.get("mcp-session-id") == session, exchange
        assert exchange.request_headers.get("mcp-protocol-version") == LATEST, exchange
        assert exchange.status in (200, 202), exchange
    # SDK 2.3.0 ends the session with DELETE when the client context exits.
    deletes = [e for e in recorder.exchanges if e.method == "DELETE"]
    assert len(deletes) == 1, recorder.exchanges
    assert deletes[0].status == 200
    # The ended session is unknown now: 404 (the client would have to initialize again).
    assert raw_ping_status(server, session) == 404


def test_each_client_gets_its_own_session(jwt_a: RunningServer) -> None:
    first, second = Recorder(), Recorder()
    run_client(jwt_a, lambda client: client.list_tools(), recorder=first)
    run_client(jwt_a, lambda client: client.list_tools(), recorder=second)
    assert first.session_id() != second.session_id()


# -- sampling and elicitation ------------------------------------------------------------------------


def test_sampling_callback_answers_the_tool(jwt_a: RunningServer) -> None:
    seen: list[types.CreateMessageRequestParams] = []

    async def sampling(
        context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        seen.append(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="Paris, of course"),
            model="test-model",
            stop_reason="endTurn",
        )

    async def body(client: Client) -> types.CallToolResult:
        return await client.call_tool("test_sampling", {"prompt": "What is the capital of France?"})

    result = run_client(jwt_a, body, sampling_callback=sampling)
    assert result.is_error is False
    assert only_text(result) == "LLM response: Paris, of course"
    [params] = seen
    [message] = params.messages
    assert message.role == "user"
    assert isinstance(message.content, types.TextContent)
    assert message.content.text == "What is the capital of France?"
    assert params.max_tokens == 100


@pytest.mark.parametrize(
    ("action", "content", "expected"),
    [
        (
            "accept",
            {"username": "ada", "email": "ada@example.com"},
            "User response: action=accept, content={'username': 'ada', 'email': 'ada@example.com'}",
        ),
        ("decline", None, "User response: action=decline, content=None"),
        ("cancel", None, "User response: action=cancel, content=None"),
    ],
    ids=["accept", "decline", "cancel"],
)
def test_elicitation_callback_answers_the_tool(
    jwt_a: RunningServer, action: str, content: dict[str, Any] | None, expected: str
) -> None:
    seen: list[types.ElicitRequestParams] = []

    async def elicitation(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        seen.append(params)
        return types.ElicitResult(action=action, content=content)  # type: ignore[arg-type]

    async def body(client: Client) -> types.CallToolResult:
        return await client.call_tool("test_elicitation", {"message": "Who are you?"})

    result = run_client(jwt_a, body, elicitation_callback=elicitation)
    assert result.is_error is False
    assert only_text(result) == expected
    [params] = seen
    assert isinstance(params, types.ElicitRequestFormParams)
    assert params.message == "Who are you?"
    assert set(params.requested_schema["properties"]) == {"username", "email"}


@pytest.mark.parametrize(
    ("tool", "arguments", "capability"),
    [("test_sampling", {"prompt": "hi"}, "sampling"), ("test_elicitation", {"message": "hi"}, "elicitation")],
)
def test_server_request_without_the_client_capability_is_a_readable_error(
    jwt_a: RunningServer, tool: str, arguments: dict[str, Any], capability: str
) -> None:
    """No callback -> the SDK declares no such capability; the server refuses to ask (-32600)."""

    async def body(client: Client) -> MCPError | types.CallToolResult:
        try:
            return await client.call_tool(tool, arguments)
        except MCPError as error:
            return error

    outcome = run_client(jwt_a, body)
    assert isinstance(outcome, MCPError), f"expected a JSON-RPC error, got {outcome!r}"
    assert outcome.code == INVALID_REQUEST
    assert f"'{capability}' capability" in outcome.message, outcome.message


# -- progress ------------------------------------------------------------------------------------------


def test_progress_reaches_the_callback(jwt_a: RunningServer) -> None:
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    async def body(client: Client) -> types.CallToolResult:
        return await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)

    result = run_client(jwt_a, body)
    assert only_text(result) == "Progress test completed"
    assert updates == [(0, 100, "0% done"), (50, 100, "50% done"), (100, 100, "100% done")]


# -- no sticky sessions ------------------------------------------------------------------------------


def test_client_through_a_round_robin_balancer(jwt_a: RunningServer, jwt_b: RunningServer) -> None:
    """Two processes with one secret behind a balancer that alternates per request: the SDK's
    session works whichever process answers (tools, streamed progress and logs)."""
    recorder = Recorder()
    logs: list[Any] = []
    updates: list[float] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(progress)

    async def body(client: Client) -> list[str]:
        texts = []
        for index in range(4):
            texts.append(only_text(await client.call_tool("echo", {"message": f"m{index}"})))
        await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
        await client.call_tool("test_tool_with_logging", {})
        return texts

    texts = run_client(
        jwt_a,
        body,
        recorder=recorder,
        transport=RoundRobin([jwt_a.port, jwt_b.port]),
        logging_callback=on_log,
    )
    assert texts == ["m0", "m1", "m2", "m3"]
    assert updates == [0, 50, 100]
    assert logs == ["Tool execution started", "Tool processing data", "Tool execution completed"]
    session = recorder.session_id()
    calls = [e for e in recorder.exchanges if e.rpc_method == "tools/call"]
    assert {e.port for e in calls} == {jwt_a.port, jwt_b.port}, [e.port for e in calls]
    for exchange in recorder.exchanges:
        if exchange.rpc_method != "initialize":
            assert exchange.request_headers.get("mcp-session-id") == session
            assert exchange.status in (200, 202), exchange


# -- cancellation ---------------------------------------------------------------------------------------


def test_client_timeout_sends_cancelled_and_the_session_goes_on(jwt_a: RunningServer) -> None:
    """The SDK abandons a call after `read_timeout_seconds` with `notifications/cancelled`
    (basic/utilities/cancellation); the server takes it (202) and the session keeps working."""
    recorder = Recorder()

    async def body(client: Client) -> str:
        with pytest.raises(MCPError):
            await client.call_tool("countdown", {"steps": 50}, read_timeout_seconds=0.15)
        return only_text(await client.call_tool("echo", {"message": "after the timeout"}))

    assert run_client(jwt_a, body, recorder=recorder) == "after the timeout"
    cancels = [e for e in recorder.exchanges if e.rpc_method == "notifications/cancelled"]
    assert len(cancels) == 1, [e.rpc_method for e in recorder.exchanges]
    assert cancels[0].status == 202
    assert cancels[0].request_headers.get("mcp-session-id") == recorder.session_id()


# -- resumption ---------------------------------------------------------------------------------------


def test_client_resumes_a_stream_the_server_closed(jwt_a: RunningServer) -> None:
    """test_reconnection ends its POST's SSE stream after the priming event; the official client
    reconnects with GET + Last-Event-ID and gets the result there (2025-11-25 resumability)."""
    recorder = Recorder()

    async def body(client: Client) -> types.CallToolResult:
        return await client.call_tool("test_reconnection", {})

    result = run_client(jwt_a, body, recorder=recorder)
    assert only_text(result) == "Reconnection test completed successfully"
    resumes = [e for e in recorder.exchanges if e.method == "GET" and "last-event-id" in e.request_headers]
    assert resumes, recorder.exchanges
    assert all(e.status == 200 for e in resumes)
