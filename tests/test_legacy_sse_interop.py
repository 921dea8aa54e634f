"""Interop: the official MCP Python client's HTTP+SSE transport (`mcp.client.sse.sse_client`, `mcp` 2.3.0)
against a real `python -m mcp_fast` (the old transport of 2024-11-05 is on by default, on `/sse`).

The SDK opens `GET /sse`, waits for the `endpoint` event, POSTs every message to the URI it names
and reads every server message from the stream. A POST answered with anything but 2xx makes the
SDK's writer fail, so each passing call also shows the POSTs were accepted.

Spec: docs/specification/2024-11-05/basic/transports.mdx "HTTP with SSE"; 2025-11-25
basic/transports.mdx "Backwards Compatibility".
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import mcp.client.session as sdk_session
import pytest
from conftest import RunningServer, module_server
from httpclient import RawClient, client_request_bytes
from mcp import Client, ClientSession, types
from mcp.client.context import ClientRequestContext
from mcp.client.sse import sse_client

TIMEOUT_S = 30.0
T = TypeVar("T")

pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


demo = module_server()
app = module_server("tests.apps.transport_app:server")


def sse_url(server: RunningServer) -> str:
    return f"http://{server.host}:{server.port}/sse"


def run_client(server: RunningServer, body: Callable[[Client], Awaitable[T]], **kwargs: Any) -> T:
    kwargs.setdefault("mode", "legacy")

    async def main() -> T:
        with anyio.fail_after(TIMEOUT_S):
            async with Client(sse_client(sse_url(server)), cache=None, **kwargs) as client:
                return await body(client)

    return anyio.run(main)


def text_of(result: types.CallToolResult) -> str:
    [block] = result.content
    assert isinstance(block, types.TextContent), result
    return block.text


def post_status(server: RunningServer, session_id: str) -> int:
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    headers = {"Content-Type": "application/json"}
    with RawClient(server.port) as raw:
        raw.send(client_request_bytes("POST", f"/messages?session_id={session_id}", body, headers))
        return raw.read_response().status


def test_client_session_lists_calls_reads_and_gets(demo: RunningServer) -> None:
    async def main() -> None:
        with anyio.fail_after(TIMEOUT_S):
            async with sse_client(sse_url(demo)) as (read, write), ClientSession(read, write) as session:
                init = await session.initialize()
                assert init.protocol_version == "2025-11-25"
                assert init.server_info.name == "mcp-fast-conformance"
                await session.send_ping()
                tools = {tool.name for tool in (await session.list_tools()).tools}
                assert {"echo", "add", "test_sampling"} <= tools
                assert text_of(await session.call_tool("echo", {"message": "over SSE"})) == "over SSE"
                added = await session.call_tool("add", {"a": 1, "b": 2})
                assert added.structured_content == {"a": 1, "b": 2, "sum": 3}
                read_result = await session.read_resource("test://static-text")
                [contents] = read_result.contents
                assert isinstance(contents, types.TextResourceContents)
                assert contents.text == "This is the content of the static text resource."
                templates = (await session.list_resource_templates()).resource_templates
                assert any(t.uri_template == "test://template/{id}/data" for t in templates)
                prompts = {p.name for p in (await session.list_prompts()).prompts}
                assert "test_simple_prompt" in prompts
                prompt = await session.get_prompt("test_simple_prompt")
                [message] = prompt.messages
                assert isinstance(message.content, types.TextContent)
                assert message.content.text == "This is a simple prompt for testing."

    anyio.run(main)


def test_progress_and_logging_notifications(demo: RunningServer) -> None:
    progress: list[tuple[float, float | None, str | None]] = []
    logs: list[Any] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async def body(client: Client) -> list[str]:
        done = [text_of(await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress))]
        done.append(text_of(await client.call_tool("test_tool_with_logging", {})))
        await client.set_logging_level("error")
        done.append(text_of(await client.call_tool("test_tool_with_logging", {})))
        return done

    assert run_client(demo, body, logging_callback=on_log) == [
        "Progress test completed",
        "Logging test completed",
        "Logging test completed",
    ]
    assert progress == [(0, 100, "0% done"), (50, 100, "50% done"), (100, 100, "100% done")]
    assert logs == ["Tool execution started", "Tool processing data", "Tool execution completed"]


def test_sampling_and_elicitation_callbacks(demo: RunningServer) -> None:
    async def sampling(
        context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="42"),
            model="m",
            stop_reason="endTurn",
        )

    async def elicitation(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        return types.ElicitResult(action="decline")

    async def body(client: Client) -> tuple[str, str]:
        sampled = await client.call_tool("test_sampling", {"prompt": "the answer?"})
        elicited = await client.call_tool("test_elicitation", {"message": "name?"})
        return text_of(sampled), text_of(elicited)

    sampled, elicited = run_client(demo, body, sampling_callback=sampling, elicitation_callback=elicitation)
    assert sampled == "LLM response: 42"
    assert elicited == "User response: action=decline, content=None"


def test_2024_11_05_is_negotiated_over_its_own_transport(
    demo: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdk_session, "LATEST_HANDSHAKE_VERSION", "2024-11-05")

    async def body(client: Client) -> tuple[str | None, types.Tool]:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        return client.protocol_version, tools["add"]

    version, add = run_client(demo, body)
    assert version == "2024-11-05"
    assert add.title is None and add.output_schema is None  # 2024-11-05 has neither


def test_auto_mode_falls_back_to_initialize(demo: RunningServer) -> None:
    """SDK mode="auto" first probes server/discover; the old transport's session is legacy-only,
    so the probe gets an error and the client falls back to initialize (versioning.mdx)."""

    async def body(client: Client) -> tuple[str | None, str]:
        return client.protocol_version, text_of(await client.call_tool("echo", {"message": "x"}))

    assert run_client(demo, body, mode="auto") == ("2025-11-25", "x")


def test_two_clients_at_once_have_separate_sessions(demo: RunningServer) -> None:
    """Each stream is its own session: its own log level and its own notifications."""
    logs: dict[str, list[Any]] = {"quiet": [], "chatty": []}
    session_ids: list[str] = []

    def on_log_for(name: str) -> Callable[[types.LoggingMessageNotificationParams], Awaitable[None]]:
        async def on_log(params: types.LoggingMessageNotificationParams) -> None:
            logs[name].append(params.data)

        return on_log

    @asynccontextmanager
    async def client(name: str) -> AsyncIterator[Client]:
        transport = sse_client(sse_url(demo), on_session_created=session_ids.append)
        async with Client(transport, mode="legacy", cache=None, logging_callback=on_log_for(name)) as c:
            yield c

    async def main() -> list[str]:
        results: list[str] = []
        with anyio.fail_after(TIMEOUT_S):
            async with client("quiet") as quiet, client("chatty") as chatty:
                await quiet.set_logging_level("error")

                async def count(c: Client) -> None:
                    results.append(text_of(await c.call_tool("countdown", {"steps": 3})))

                async with anyio.create_task_group() as group:
                    group.start_soon(count, quiet)
                    group.start_soon(count, chatty)
        return results

    assert anyio.run(main) == ["liftoff", "liftoff"]
    assert len(set(session_ids)) == 2
    assert logs == {"quiet": [], "chatty": ["step 1", "step 2", "step 3"]}


def test_the_client_going_away_ends_its_session(demo: RunningServer) -> None:
    """The stream is the session: once the client has left, its messages URI is 404."""
    session_ids: list[str] = []

    async def main() -> str:
        with anyio.fail_after(TIMEOUT_S):
            transport = sse_client(sse_url(demo), on_session_created=session_ids.append)
            async with Client(transport, mode="legacy", cache=None) as client:
                return text_of(await client.call_tool("echo", {"message": "bye"}))

    assert anyio.run(main) == "bye"
    [session_id] = session_ids
    deadline = time.monotonic() + 10
    while (status := post_status(demo, session_id)) != 404:  # the server notices the close at once
        assert status == 202 and time.monotonic() < deadline, status
        time.sleep(0.01)


def test_cancellation_stops_the_handler(app: RunningServer) -> None:
    async def body(client: Client) -> dict[str, Any]:
        before = (await client.call_tool("counters", {})).structured_content
        assert before is not None
        started = anyio.Event()

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            started.set()

        async with anyio.create_task_group() as group:

            async def call() -> None:
                await client.call_tool("block", {}, progress_callback=on_progress)

            group.start_soon(call)
            await started.wait()
            group.cancel_scope.cancel()  # the SDK POSTs notifications/cancelled
        with anyio.fail_after(10):
            while True:
                now = (await client.call_tool("counters", {})).structured_content
                assert now is not None
                if now["cancelled"] > before["cancelled"]:
                    return {"started": now["started"] - before["started"], "cancelled": 1}
                await anyio.sleep(0.01)

    assert run_client(app, body) == {"started": 1, "cancelled": 1}
