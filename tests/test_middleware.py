"""Middleware in process, through `mcp_fast.testing` (the same pipeline every transport uses):
order, what a middleware may return or raise, and that nothing gets past the chain."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from mcp_fast import Context, McpError, MCPServer, ToolError
from mcp_fast.call import Call, CallNext, Principal
from mcp_fast.testing import connect

VERSIONS = ("2025-03-26", "2025-11-25", "2026-07-28")


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def echo_server() -> MCPServer:
    server = MCPServer("mw")

    @server.tool(inline=True)
    def plain(message: str) -> str:
        """A plain tool: the fast path without a Context."""
        return message

    @server.tool()
    async def general(message: str, ctx: Context) -> str:
        """A tool with a Context: the general path."""
        principal = ctx.call.principal
        return f"{message} for {principal.subject if principal else 'nobody'}"

    @server.tool(inline=True, cache_ttl=60, cache_scope="public")
    def cached(key: str) -> str:
        """Cached for everyone: later calls are answered from the result cache."""
        runs.append(key)
        return f"value of {key}"

    runs: list[str] = []
    server.runs = runs  # type: ignore[attr-defined]
    return server


@pytest.mark.parametrize("version", VERSIONS)
def test_middleware_run_in_the_order_added_first_outermost(version: str) -> None:
    server = echo_server()
    order: list[str] = []

    def make(name: str) -> Any:
        async def middleware(call: Call, call_next: CallNext) -> Any:
            order.append(f"{name} in")
            result = await call_next(call)
            order.append(f"{name} out")
            return result

        return middleware

    server.add_middleware(make("a"))
    server.middleware(make("b"))

    async def main() -> None:
        async with connect(server, protocol_version=version) as client:
            order.clear()
            assert (await client.call_tool("plain", {"message": "x"}))["content"][0]["text"] == "x"
            assert order == ["a in", "b in", "b out", "a out"]

    run(main())


@pytest.mark.parametrize("version", VERSIONS)
def test_every_call_passes_the_chain_also_plain_tools_and_cache_hits(version: str) -> None:
    server = echo_server()
    seen: list[tuple[str, str | None]] = []
    refuse = {"on": False}

    @server.middleware
    async def gate(call: Call, call_next: CallNext) -> Any:
        seen.append((call.method, call.tool_name))
        if refuse["on"]:
            raise McpError(-32001, "Refused")
        return await call_next(call)

    async def main() -> None:
        async with connect(server, protocol_version=version) as client:
            seen.clear()
            for _ in range(2):
                assert (await client.call_tool("cached", {"key": "k"}))["content"][0]["text"] == "value of k"
            assert server.runs == ["k"]  # type: ignore[attr-defined]  # the second one was a cache hit
            await client.call_tool("plain", {"message": "m"})
            await client.call_tool("general", {"message": "m"})
            await client.list_tools()
            assert [tool for method, tool in seen if method == "tools/call"] == ["cached", "cached", "plain", "general"]
            assert ("tools/list", None) in seen
            # A cache hit does not get past a middleware that refuses.
            refuse["on"] = True
            with pytest.raises(McpError) as refused:
                await client.call_tool("cached", {"key": "k"})
            assert refused.value.code == -32001
            assert server.runs == ["k"]  # type: ignore[attr-defined]

    run(main())


@pytest.mark.parametrize("version", VERSIONS)
def test_what_a_middleware_may_return_or_raise(version: str, caplog: pytest.LogCaptureFixture) -> None:
    server = echo_server()

    @server.middleware
    async def shortcut(call: Call, call_next: CallNext) -> Any:
        match call.tool_name:
            case "as_dict":
                return {"content": [{"type": "text", "text": "a dict"}], "isError": False}
            case "as_text":
                return "a str, shaped as a tool's would be"
            case "tool_error":
                raise ToolError("refused politely")
            case "mcp_error":
                raise McpError(-32042, "Needs something", {"why": "test"})
            case "bug":
                raise KeyError("a bug in a middleware")
        if call.method == "tools/list" and call.params and call.params.get("cursor") == "weird":
            return "not a dict"
        return await call_next(call)

    async def main() -> None:
        async with connect(server, protocol_version=version) as client:
            as_dict = await client.call_tool("as_dict")
            assert as_dict["content"][0]["text"] == "a dict" and as_dict["isError"] is False
            # 2026-07-28: the server adds what the version requires to a middleware's result too.
            assert ("resultType" in as_dict) == (version == "2026-07-28")
            as_text = await client.call_tool("as_text")
            assert as_text["content"] == [{"type": "text", "text": "a str, shaped as a tool's would be"}]
            tool_error = await client.call_tool("tool_error")
            assert tool_error == {**tool_error, "isError": True, "content": [{"type": "text", "text": "refused politely"}]}
            with pytest.raises(McpError) as error:
                await client.call_tool("mcp_error")
            assert (error.value.code, error.value.message, error.value.data) == (-32042, "Needs something", {"why": "test"})
            with pytest.raises(McpError) as bug:
                await client.call_tool("bug")
            assert (bug.value.code, bug.value.message) == (-32603, "Internal error")
            with pytest.raises(McpError) as weird:
                await client.request("tools/list", {"cursor": "weird"})
            assert weird.value.code == -32603

    with caplog.at_level(logging.ERROR, logger="mcp_fast"):
        run(main())
    messages = [record.getMessage() for record in caplog.records]
    assert any("a middleware raised while handling tools/call" in message for message in messages)
    assert any("a middleware returned str for tools/list" in message for message in messages)


def test_a_middleware_sets_the_principal_that_the_handler_sees() -> None:
    server = echo_server()

    @server.middleware
    async def authenticate(call: Call, call_next: CallNext) -> Any:
        token = call.headers.get("authorization", "")
        if token != "Bearer good":
            raise McpError(-32001, "Unauthorized")
        call.principal = Principal("ann", frozenset({"read"}), {"sub": "ann"})
        return await call_next(call)

    async def main() -> None:
        async with connect(server, headers={"Authorization": "Bearer good"}) as client:
            result = await client.call_tool("general", {"message": "hello"})
            assert result["content"][0]["text"] == "hello for ann"
        with pytest.raises(McpError) as refused:
            async with connect(server, headers={"Authorization": "Bearer bad"}):
                pass  # initialize is refused already
        assert refused.value.code == -32001

    run(main())


def test_a_middleware_must_be_an_async_function() -> None:
    server = MCPServer("mw")

    def not_async(call: Call, call_next: CallNext) -> Any:
        return None

    with pytest.raises(TypeError, match="must be an async function"):
        server.add_middleware(not_async)

    class Callable:
        async def __call__(self, call: Call, call_next: CallNext) -> Any:
            return await call_next(call)

    server.add_middleware(Callable())  # an object with an async __call__ is fine
    assert len(server.middleware_stack) == 1


def test_cancellation_reaches_a_handler_behind_the_chain() -> None:
    """notifications/cancelled stops a handler that runs behind a middleware; no answer is sent."""
    server = MCPServer("mw")
    started = asyncio.Event()
    cancelled: list[bool] = []

    @server.middleware
    async def passthrough(call: Call, call_next: CallNext) -> Any:
        return await call_next(call)

    @server.tool()
    async def wait_forever() -> str:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    async def main() -> None:
        async with connect(server) as client:
            call = asyncio.ensure_future(client.call_tool("wait_forever"))
            await started.wait()
            request_id = max(client._waiting)  # the call's id
            await client.notify("notifications/cancelled", {"requestId": request_id})
            await asyncio.sleep(0.05)
            assert cancelled == [True]
            assert not call.done()  # no answer for a cancelled request
            call.cancel()

    run(main())
