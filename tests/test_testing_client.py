"""`mcp_fast.testing`: the in-process client that teams test their servers with."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from examples.conformance import server as conformance
from mcp_fast import Context, McpError, MCPServer
from mcp_fast.demo import server as demo
from mcp_fast.testing import connect

BOTH_ERAS = ("2025-11-25", "2026-07-28")


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@pytest.mark.parametrize("version", BOTH_ERAS)
def test_tools_resources_prompts_of_the_demo(version: str) -> None:
    async def main() -> None:
        async with connect(demo, protocol_version=version) as client:
            assert client.server_info["name"] == "mcp-fast-demo"
            assert "tools" in client.capabilities
            names = [tool["name"] for tool in await client.list_tools()]
            assert names == ["echo", "add", "word_count", "countdown", "save_note"]
            echoed = await client.call_tool("echo", {"message": "hi"})
            assert echoed["content"] == [{"type": "text", "text": "hi"}] and echoed["isError"] is False
            counted = await client.call_tool("word_count", {"text": "two words"})
            assert counted["structuredContent"] == {"words": 2, "characters": 9}
            invalid = await client.call_tool("add", {"a": "1", "b": 2})
            assert invalid["isError"] is True and "Invalid arguments for tool 'add'" in invalid["content"][0]["text"]
            await client.call_tool("save_note", {"name": f"n-{version}", "text": "remember"})
            note = await client.read_resource(f"notes://n-{version}")
            assert note["contents"][0]["text"] == "remember"
            with pytest.raises(McpError) as missing:
                await client.read_resource("notes://nothing")
            assert missing.value.code == -32002
            prompt = await client.get_prompt("summarize", {"text": "abc"})
            assert prompt["messages"][0]["content"]["text"].endswith("abc")
            templates = await client.list_resource_templates()
            assert [template["uriTemplate"] for template in templates] == ["notes://{name}"]

    run(main())


@pytest.mark.parametrize("version", BOTH_ERAS)
def test_progress_and_log_messages(version: str) -> None:
    progress: list[tuple[float, float | None, str | None]] = []
    logs: list[dict[str, Any]] = []

    async def main() -> None:
        async with connect(demo, protocol_version=version, on_log=logs.append) as client:
            await client.set_log_level("info")
            result = await client.call_tool(
                "countdown", {"steps": 2}, on_progress=lambda done, total, message: progress.append((done, total, message))
            )
            assert result["content"][0]["text"] == "liftoff"

    run(main())
    assert progress == [(0, 2, "2 to go"), (1, 2, "1 to go"), (2, 2, "done")]
    assert [entry["data"] for entry in logs] == ["step 1 of 2", "step 2 of 2"]


@pytest.mark.parametrize("version", BOTH_ERAS)
def test_sampling_elicitation_and_roots_reach_the_handlers(version: str) -> None:
    """2025: server-to-client requests; 2026-07-28: input-required rounds the client retries."""
    asked: list[str] = []

    async def sampling(params: dict[str, Any]) -> dict[str, Any]:
        asked.append("sampling")
        return {"role": "assistant", "content": {"type": "text", "text": "Paris"}, "model": "test"}

    def elicitation(params: dict[str, Any]) -> dict[str, Any]:
        asked.append("elicitation")
        return {"action": "accept", "content": {"name": "Ann", "username": "ann", "email": "ann@example.com"}}

    async def main() -> None:
        async with connect(
            conformance,
            protocol_version=version,
            sampling=sampling,
            elicitation=elicitation,
            roots=[{"uri": "file:///work", "name": "work"}],
        ) as client:
            sampled = await client.call_tool("test_sampling", {"prompt": "Capital of France?"})
            assert sampled["content"][0]["text"] == "LLM response: Paris"
            elicited = await client.call_tool("test_elicitation", {"message": "Who are you?"})
            assert "action=accept" in elicited["content"][0]["text"]
            if version == "2026-07-28":
                several = await client.call_tool("test_input_required_result_multiple_inputs")
                assert several["content"][0]["text"] == "Paris, Ann! Roots: 1"

    run(main())
    assert asked[:2] == ["sampling", "elicitation"]


def test_a_capability_the_client_lacks_is_an_error() -> None:
    async def main() -> None:
        async with connect(conformance) as client:  # no sampling handler: no sampling capability
            with pytest.raises(McpError) as refused:
                await client.call_tool("test_sampling", {"prompt": "hi"})
            assert refused.value.code == -32600 and "'sampling' capability" in refused.value.message

    run(main())


def test_lifespan_headers_client_and_principal_reach_the_handler() -> None:
    server = MCPServer("facts")
    events: list[str] = []

    @server.lifespan
    @contextlib.asynccontextmanager
    async def lifespan(app: MCPServer) -> AsyncIterator[str]:
        events.append("enter")
        yield "a database"
        events.append("exit")

    @server.tool()
    async def facts(ctx: Context) -> dict[str, Any]:
        call = ctx.call
        principal = call.principal
        return {
            "lifespan": ctx.lifespan,
            "transport": call.transport,
            "header": call.headers.get("X-Team"),
            "client": list(call.client) if call.client else None,
            "principal": principal.subject if principal else None,
            "session": call.session_id is not None,
        }

    from mcp_fast.call import Principal

    async def main() -> None:
        async with connect(
            server, headers={"X-Team": "blue"}, client=("10.1.2.3", 4567), principal=Principal("ann")
        ) as client:
            assert events == ["enter"]
            result = await client.call_tool("facts")
            assert result["structuredContent"] == {
                "lifespan": "a database",
                "transport": "memory",
                "header": "blue",
                "client": ["10.1.2.3", 4567],
                "principal": "ann",
                "session": True,
            }
        assert events == ["enter", "exit"]

    run(main())


def test_list_changed_notifications_are_collected() -> None:
    server = MCPServer("dynamic")

    @server.tool(inline=True)
    def first() -> str:
        return "1"

    async def main() -> None:
        async with connect(server) as client:

            @server.tool(inline=True)
            def second() -> str:
                return "2"

            assert ("notifications/tools/list_changed", None) in client.notifications
            assert [tool["name"] for tool in await client.list_tools()] == ["first", "second"]

    run(main())
    assert server._changed_listeners == []  # the client's listeners are gone with it


def test_errors_of_the_protocol_are_raised() -> None:
    async def main() -> None:
        async with connect(demo) as client:
            with pytest.raises(McpError) as unknown:
                await client.request("no/such/method")
            assert unknown.value.code == -32601
            with pytest.raises(McpError) as bad_cursor:
                await client.request("tools/list", {"cursor": "nonsense"})
            assert bad_cursor.value.code == -32602

    run(main())
    with pytest.raises(ValueError, match="unknown protocol version"):
        run(connect(demo, protocol_version="1999-01-01").__aenter__())
