"""Interop: the official MCP Python client (`mcp` 2.3.0) over stdio against `python -m mcp_fast --transport stdio`.

Every test launches a real server process through the SDK's own `mcp.client.stdio.stdio_client`
(which closes stdin on exit and waits for the process to end) and drives it with `ClientSession`
or the SDK's `Client`. The server's stderr goes to a file, which must hold no traceback; its
stdout must carry nothing but protocol messages (the SDK fails on anything else).

Spec: docs/specification/2025-11-25/basic/transports.mdx "stdio"; 2026-07-28 basic/versioning.mdx
(a dual-era server serves both eras on one process); draft/basic/transports/stdio.mdx.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import mcp.client.session as sdk_session
import pytest
from conftest import ROOT, with_app
from mcp import Client, ClientSession, types
from mcp.client.context import ClientRequestContext
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

TIMEOUT_S = 30.0
TRANSPORT_APP = "tests.apps.transport_app:server"

T = TypeVar("T")

# The SDK marks the handshake-era methods (ping, logging/setLevel, resources/subscribe) deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


def params(*args: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_fast", *with_app(args), "--transport", "stdio"],
        cwd=str(ROOT),
        env={"PYTHONUNBUFFERED": "1"},
    )


@asynccontextmanager
async def stdio_transport(log_path: Path, *args: str) -> AsyncIterator[Any]:
    with open(log_path, "w") as log:
        async with stdio_client(params(*args), errlog=log) as streams:
            yield streams


def server_log(log_path: Path) -> str:
    text = log_path.read_text()
    assert "Traceback" not in text, text
    return text


def run_client(tmp_path: Path, body: Callable[[Client], Awaitable[T]], *args: str, **kwargs: Any) -> T:
    """The SDK's `Client` on a fresh stdio server (legacy mode unless `mode=` says otherwise)."""
    log_path = tmp_path / "server-stderr.log"
    kwargs.setdefault("mode", "legacy")

    async def main() -> T:
        with anyio.fail_after(TIMEOUT_S):
            async with Client(stdio_transport(log_path, *args), cache=None, **kwargs) as client:
                return await body(client)

    result = anyio.run(main)
    server_log(log_path)
    return result


def text_of(result: types.CallToolResult) -> str:
    [block] = result.content
    assert isinstance(block, types.TextContent), result
    return block.text


def test_client_session_lists_calls_reads_and_gets(tmp_path: Path) -> None:
    """`stdio_client` + `ClientSession`: initialize, then every list/call/read/get the demo offers."""
    log_path = tmp_path / "stderr.log"

    async def main() -> None:
        with anyio.fail_after(TIMEOUT_S):
            async with stdio_transport(log_path) as (read, write), ClientSession(read, write) as session:
                init = await session.initialize()
                assert init.protocol_version == "2025-11-25"
                assert init.server_info.name == "mcp-fast-conformance"
                assert init.capabilities.tools is not None and init.capabilities.logging is not None
                await session.send_ping()
                tools = {tool.name: tool for tool in (await session.list_tools()).tools}
                assert {"echo", "add", "countdown", "test_sampling"} <= set(tools)
                assert tools["add"].output_schema is not None
                echoed = await session.call_tool("echo", {"message": "hé\nllo"})
                assert text_of(echoed) == "hé\nllo"
                added = await session.call_tool("add", {"a": 2, "b": 40})
                assert added.structured_content == {"a": 2, "b": 40, "sum": 42}
                failed = await session.call_tool("test_error_handling", {})
                assert failed.is_error is True
                resources = {r.uri for r in (await session.list_resources()).resources}
                assert "test://static-text" in {str(uri) for uri in resources}
                templates = (await session.list_resource_templates()).resource_templates
                assert any(t.uri_template == "test://template/{id}/data" for t in templates)
                read = await session.read_resource("test://static-text")
                [contents] = read.contents
                assert isinstance(contents, types.TextResourceContents)
                assert contents.text == "This is the content of the static text resource."
                prompts = {p.name for p in (await session.list_prompts()).prompts}
                assert {"test_simple_prompt", "test_prompt_with_arguments"} <= prompts
                prompt = await session.get_prompt("test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})
                [message] = prompt.messages
                assert isinstance(message.content, types.TextContent)
                assert message.content.text == "Prompt with arguments: arg1='a', arg2='b'"
                try:
                    await session.call_tool("no_such_tool", {})
                except MCPError as exc:
                    assert exc.code == -32602
                else:
                    raise AssertionError("an unknown tool must be an error")

    anyio.run(main)
    server_log(log_path)


def test_progress_logging_and_set_level(tmp_path: Path) -> None:
    progress: list[tuple[float, float | None, str | None]] = []
    logs: list[tuple[str, Any]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append((params.level, params.data))

    async def body(client: Client) -> tuple[str, str]:
        first = await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
        counted = await client.call_tool("countdown", {"steps": 2})
        await client.set_logging_level("warning")  # info messages are dropped from here on
        quiet = await client.call_tool("test_tool_with_logging", {})
        return text_of(first), text_of(counted) + "|" + text_of(quiet)

    first, rest = run_client(tmp_path, body, logging_callback=on_log)
    assert first == "Progress test completed"
    assert rest == "liftoff|Logging test completed"
    assert progress == [(0, 100, "0% done"), (50, 100, "50% done"), (100, 100, "100% done")]
    assert logs == [("info", "step 1"), ("info", "step 2")]


def test_sampling_elicitation_and_roots_callbacks(tmp_path: Path) -> None:
    """Server-to-client requests go out on stdout; the client's responses come back on stdin."""

    async def sampling(
        context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        [message] = params.messages
        assert isinstance(message.content, types.TextContent)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"echo of {message.content.text}"),
            model="test-model",
            stop_reason="endTurn",
        )

    async def elicitation(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})

    async def roots(context: ClientRequestContext) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///work", name="work")])

    async def body(client: Client) -> list[str]:
        results = [
            await client.call_tool("test_sampling", {"prompt": "hi"}),
            await client.call_tool("test_elicitation", {"message": "who?"}),
            await client.call_tool("test_input_required_result_list_roots", {}),
        ]
        return [text_of(result) for result in results]

    sampled, elicited, listed = run_client(
        tmp_path,
        body,
        sampling_callback=sampling,
        elicitation_callback=elicitation,
        list_roots_callback=roots,
    )
    assert sampled == "LLM response: echo of hi"
    assert elicited == "User response: action=accept, content={'username': 'ada', 'email': 'ada@example.com'}"
    assert listed == "Roots: file:///work"


def test_cancellation_stops_the_handler(tmp_path: Path) -> None:
    """Abandoning a call makes the SDK send notifications/cancelled; the handler's Task is cancelled."""

    async def body(client: Client) -> dict[str, Any]:
        started = anyio.Event()

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            started.set()

        async with anyio.create_task_group() as group:

            async def call() -> None:
                await client.call_tool("block", {}, progress_callback=on_progress)

            group.start_soon(call)
            await started.wait()
            group.cancel_scope.cancel()
        # The cancellation and the next request travel in order; the handler sees it at its next step.
        with anyio.fail_after(10):
            while True:
                counts = (await client.call_tool("counters", {})).structured_content
                assert counts is not None
                if counts["cancelled"]:
                    return counts
                await anyio.sleep(0.01)

    assert run_client(tmp_path, body, TRANSPORT_APP) == {"started": 1, "cancelled": 1}


def test_a_slow_call_does_not_block_other_requests(tmp_path: Path) -> None:
    async def body(client: Client) -> list[str]:
        order: list[str] = []
        sleeping = anyio.Event()

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            sleeping.set()

        async def slow() -> None:
            order.append(
                text_of(await client.call_tool("slow", {"seconds": 1.5}, progress_callback=on_progress))
            )

        async with anyio.create_task_group() as group:
            group.start_soon(slow)
            await sleeping.wait()
            await client.send_ping()
            order.append(text_of(await client.call_tool("echo", {"message": "fast"})))
        return order

    assert run_client(tmp_path, body, TRANSPORT_APP) == ["fast", "slept 1.5"]


def test_stray_stdout_output_goes_to_stderr(tmp_path: Path) -> None:
    """print() at import time and in a tool, and raw writes to fd 1, never reach the protocol."""
    result = run_client(tmp_path, lambda client: client.call_tool("noisy", {}), TRANSPORT_APP)
    assert text_of(result) == "quiet"
    log = server_log(tmp_path / "server-stderr.log")
    for noise in ("noise at import time", "noise from print()", "noise written to fd 1"):
        assert noise in log


def test_subscriptions_and_list_changed_arrive_as_notifications(tmp_path: Path) -> None:
    seen: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification):
            seen.append(message.method)

    async def body(client: Client) -> str:
        await client.subscribe_resource("test://watched-resource")
        updated = await client.call_tool("update_watched_resource", {})
        await client.call_tool("test_trigger_tool_change", {})
        await client.send_ping()  # both notifications were written before this answer
        return text_of(updated)

    text = run_client(tmp_path, body, message_handler=on_message)
    assert text.startswith("test://watched-resource is now at version")
    assert seen == ["notifications/resources/updated", "notifications/tools/list_changed"]


@pytest.mark.parametrize("version", ["2024-11-05", "2025-03-26"])
def test_older_versions_are_negotiated_and_their_policy_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    """The SDK proposes an older version; the server echoes it (lifecycle, "Version Negotiation")
    and shapes results by that version's row of the policy table (no titles, no outputSchema)."""
    monkeypatch.setattr(sdk_session, "LATEST_HANDSHAKE_VERSION", version)

    async def body(client: Client) -> tuple[str | None, types.Tool, types.CallToolResult]:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        return client.protocol_version, tools["add"], await client.call_tool("add", {"a": 1, "b": 2})

    negotiated, add, added = run_client(tmp_path, body)
    assert negotiated == version
    assert add.title is None and add.output_schema is None
    assert added.structured_content is None and text_of(added) == '{"a":1,"b":2,"sum":3}'


def test_sessionless_2026_client_on_the_same_process_kind(tmp_path: Path) -> None:
    """SDK `mode="auto"` probes server/discover on stdio (draft stdio.mdx "Backward Compatibility");
    the server answers it, so the client speaks 2026-07-28: per-request _meta, input-required
    results instead of server-to-client requests, log messages only when asked for."""
    logs: list[Any] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async def elicitation(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"name": "Grace"})

    async def body(client: Client) -> tuple[str | None, str, str, int]:
        hello = await client.call_tool("test_input_required_result_elicitation", {})
        logged = await client.call_tool("test_tool_with_logging", {})
        tools = await client.list_tools()
        return client.protocol_version, text_of(hello), text_of(logged), len(tools.tools)

    version, hello, logged, count = run_client(
        tmp_path,
        body,
        mode="auto",
        elicitation_callback=elicitation,
        logging_callback=on_log,
        log_level="info",
    )
    assert version == "2026-07-28"
    assert hello == "Hello, Grace!"
    assert logged == "Logging test completed"
    assert logs == ["Tool execution started", "Tool processing data", "Tool execution completed"]
    assert count > 10
