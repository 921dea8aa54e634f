"""The official `mcp` client in its 2026-07-28 (sessionless) mode against a real server:
one handler serves both eras — the same tools answer a 2025 client with server-to-client
requests and a 2026 client with input-required results that the client retries."""

from __future__ import annotations

from typing import Any

from conftest import RunningServer
from mcp import Client, types
from mcp.client.context import ClientRequestContext
from test_interop_mcp_client import only_text, run_client


def test_elicitation_round_trip_in_both_eras(shared_demo_server: RunningServer) -> None:
    seen: list[str] = []

    async def elicitation(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        seen.append(params.message)
        return types.ElicitResult(action="accept", content={"name": "Alice"})

    async def body(client: Client) -> tuple[str, str]:
        result = await client.call_tool("test_input_required_result_elicitation", {})
        return client.protocol_version, only_text(result)

    for mode in ("auto", "legacy"):
        seen.clear()
        version, text = run_client(shared_demo_server, body, mode=mode, elicitation_callback=elicitation)
        assert text == "Hello, Alice!", (mode, text)
        assert seen == ["What is your name?"]
        assert version == ("2026-07-28" if mode == "auto" else "2025-11-25")


def test_sampling_and_roots_in_one_round(shared_demo_server: RunningServer) -> None:
    async def sampling(
        context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="Hi there"),
            model="m",
            stop_reason="endTurn",
        )

    async def elicitation(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"name": "Bob"})

    async def roots(context: ClientRequestContext) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///work", name="work")])

    async def body(client: Client) -> str:
        return only_text(await client.call_tool("test_input_required_result_multiple_inputs", {}))

    kwargs: dict[str, Any] = {
        "sampling_callback": sampling,
        "elicitation_callback": elicitation,
        "list_roots_callback": roots,
    }
    assert run_client(shared_demo_server, body, mode="auto", **kwargs) == "Hi there, Bob! Roots: 1"
