"""Interop: the official MCP Python SDK client (PyPI `mcp` 2.x) against a real `python -m mcp_fast`.

Every test drives `mcp.Client` over Streamable HTTP to the demo app (`mcp_fast/demo.py`) served by a
real process (`shared_demo_server` in conftest.py), so what is checked is what an SDK user sees:
the SDK's own pydantic validation of every result, its JSON-RPC correlation, its SSE parsing of
progress/log notifications, and its mapping of JSON-RPC errors to `MCPError`.

SDK 2.x notes (read from its source, `mcp/client/client.py` and `mcp/client/session.py`):
- `Client(url)` defaults to `mode="auto"` (probe `server/discover`, fall back to `initialize`);
  `mode="legacy"` is the plain `initialize` handshake, which is what these tests use by default.
- `Client` keeps a response cache for the 2026-07-28 cache hints; `cache=None` turns it off so every
  call reaches the wire.
- Tests are plain sync functions that call `anyio.run(...)`: no pytest asyncio plugin is needed.

Spec references: modelcontextprotocol/modelcontextprotocol `docs/specification/2025-11-25/`
(server/tools, server/resources, server/prompts, server/utilities/{completion,logging},
basic/utilities/progress).
"""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import mcp.client.session as sdk_session
import pytest
from conftest import RunningServer
from mcp import Client, types
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

# Versions mcp_fast claims to serve over Streamable HTTP (mcp_fast/versions.py); the SDK proposes the
# newest one it knows, and a server that supports the requested version MUST answer with it.
SERVER_VERSIONS = ("2025-03-26", "2025-06-18", "2025-11-25")
LATEST = "2025-11-25"
TIMEOUT_S = 30.0

INVALID_PARAMS = -32602
RESOURCE_NOT_FOUND = -32002

# The demo's 1x1 red PNG, spelled out here so the test does not trust the server's own constant.
RED_PIXEL_PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

T = TypeVar("T")


def run_client(
    server: RunningServer,
    body: Callable[[Client], Awaitable[T]],
    *,
    mode: str = "legacy",
    **client_kwargs: Any,
) -> T:
    """Open an SDK `Client` on the server, run `body(client)`, close it; bounded by TIMEOUT_S."""

    async def main() -> T:
        with anyio.fail_after(TIMEOUT_S):
            async with Client(server.url, mode=mode, cache=None, **client_kwargs) as client:
                return await body(client)

    return anyio.run(main)


def only_text(result: types.CallToolResult) -> str:
    assert len(result.content) == 1, result
    block = result.content[0]
    assert isinstance(block, types.TextContent), result
    return block.text


def tools_by_name(result: types.ListToolsResult) -> dict[str, types.Tool]:
    return {tool.name: tool for tool in result.tools}


# -- lifecycle ------------------------------------------------------------------------------------


def test_initialize_handshake(shared_demo_server: RunningServer) -> None:
    async def body(client: Client) -> None:
        assert client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
        assert client.protocol_version in SERVER_VERSIONS
        # The SDK proposes its latest handshake version, which the server supports: echoed back.
        assert client.protocol_version == LATEST
        init = client.session.initialize_result
        assert init is not None
        assert client.session.discover_result is None
        assert init.server_info.name == "mcp-fast-conformance"
        assert init.server_info.version == "0.1.0"
        assert init.server_info.title == "mcp_fast conformance fixtures"
        caps = client.server_capabilities
        assert caps.tools is not None
        assert caps.resources is not None
        assert caps.prompts is not None
        assert caps.logging is not None
        assert caps.completions is not None
        assert client.instructions is not None
        assert "conformance fixtures" in client.instructions

    run_client(shared_demo_server, body)


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18"])
def test_initialize_older_version_is_echoed_and_policy_applies(
    shared_demo_server: RunningServer, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    """The SDK proposes `LATEST_HANDSHAKE_VERSION`; patch it to make it propose an older version.

    Lifecycle, "Version Negotiation": a server that supports the requested version MUST respond
    with it. Then the per-version rules: structured tool output (outputSchema/structuredContent)
    exists from 2025-06-18 on; before 2025-11-25 invalid tool arguments are a JSON-RPC -32602 error
    (2025-11-25 made them an isError tool result, SEP-1303).
    """
    monkeypatch.setattr(sdk_session, "LATEST_HANDSHAKE_VERSION", version)

    async def body(client: Client) -> None:
        assert client.protocol_version == version
        tools = tools_by_name(await client.list_tools())
        added = await client.call_tool("add", {"a": 2, "b": 3})
        assert added.is_error is False
        assert json.loads(only_text(added)) == {"a": 2, "b": 3, "sum": 5}
        if version == "2025-03-26":
            # outputSchema, structuredContent and `title` all arrived in 2025-06-18.
            assert tools["add"].output_schema is None
            assert tools["add"].title is None
            assert added.structured_content is None
        else:
            assert tools["add"].title == "Add two integers"
            assert tools["add"].output_schema is not None
            assert added.structured_content == {"a": 2, "b": 3, "sum": 5}
        with pytest.raises(MCPError) as caught:
            await client.call_tool("echo", {"message": 5})
        assert caught.value.code == INVALID_PARAMS
        assert "message" in caught.value.message

    run_client(shared_demo_server, body)


def test_auto_mode_adopts_the_sessionless_protocol(shared_demo_server: RunningServer) -> None:
    """SDK default `mode="auto"` probes `server/discover` (2026-07-28) first; the server answers
    it, so the client speaks 2026-07-28 (no initialize, no session) and everything works."""

    async def body(client: Client) -> tuple[str, int, str]:
        assert client.session.discover_result is not None
        assert client.session.initialize_result is None
        assert client.protocol_version == "2026-07-28"
        assert client.server_info is not None
        assert client.server_info.name == "mcp-fast-conformance"
        tools = await client.list_tools()
        added = await client.call_tool("add", {"a": 2, "b": 40})
        text = only_text(await client.call_tool("echo", {"message": "sessionless"}))
        resource = await client.read_resource("test://static-text")
        return text, added.structured_content["sum"] if added.structured_content else -1, str(
            resource.contents[0].text if hasattr(resource.contents[0], "text") else ""
        ) + f"|{len(tools.tools)}"

    text, total, rest = run_client(shared_demo_server, body, mode="auto")
    assert text == "sessionless"
    assert total == 42
    content, count = rest.split("|")
    assert content == "This is the content of the static text resource." and int(count) > 10


def test_ping(shared_demo_server: RunningServer) -> None:
    async def body(client: Client) -> types.EmptyResult:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the SDK marks ping deprecated as of 2026-07-28
            return await client.send_ping()

    assert isinstance(run_client(shared_demo_server, body), types.EmptyResult)


# -- tools ----------------------------------------------------------------------------------------


def test_list_tools(shared_demo_server: RunningServer) -> None:
    result = run_client(shared_demo_server, lambda client: client.list_tools())
    tools = tools_by_name(result)
    expected = {
        "echo",
        "add",
        "convert_temperature",
        "countdown",
        "test_simple_text",
        "test_image_content",
        "test_audio_content",
        "test_embedded_resource",
        "test_multiple_content_types",
        "test_tool_with_logging",
        "test_tool_with_progress",
        "test_error_handling",
        "json_schema_2020_12_tool",
    }
    assert expected <= set(tools), sorted(tools)
    assert result.next_cursor is None
    for tool in tools.values():
        assert tool.description, tool.name
        assert tool.input_schema.get("type") == "object", tool.name

    echo = tools["echo"]
    assert echo.description is not None
    assert echo.description.startswith("Echo the message back")
    assert echo.input_schema["required"] == ["message"]
    assert echo.input_schema["properties"]["message"]["type"] == "string"
    assert echo.input_schema["properties"]["message"]["description"] == "the text to send back"
    assert echo.annotations is not None
    assert echo.annotations.read_only_hint is True
    assert echo.output_schema is None

    add = tools["add"]
    assert add.title == "Add two integers"
    assert sorted(add.input_schema["required"]) == ["a", "b"]
    assert add.input_schema["properties"]["a"]["type"] == "integer"
    assert add.input_schema["properties"]["b"]["description"] == "the second addend"
    assert add.output_schema is not None
    assert add.output_schema["type"] == "object"
    assert set(add.output_schema["properties"]) == {"a", "b", "sum"}

    # JSON Schema 2020-12 keywords survive the round trip untouched.
    schema = tools["json_schema_2020_12_tool"].input_schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$defs"]["address"]["$anchor"] == "addressDef"
    assert schema["properties"]["address"] == {"$ref": "#/$defs/address"}
    assert {"allOf", "if", "then", "else"} <= set(schema)
    assert schema["additionalProperties"] is False


def test_call_echo(shared_demo_server: RunningServer) -> None:
    message = 'héllo, wörld ✓ "quoted" \n newline'
    result = run_client(shared_demo_server, lambda client: client.call_tool("echo", {"message": message}))
    assert result.is_error is False
    assert only_text(result) == message


def test_call_simple_text(shared_demo_server: RunningServer) -> None:
    result = run_client(shared_demo_server, lambda client: client.call_tool("test_simple_text", {}))
    assert result.is_error is False
    assert only_text(result) == "This is a simple text response for testing."


def test_call_add_structured_content(shared_demo_server: RunningServer) -> None:
    # The SDK itself validates structuredContent against the listed outputSchema (it raises if not).
    result = run_client(shared_demo_server, lambda client: client.call_tool("add", {"a": 40, "b": -2}))
    assert result.is_error is False
    assert result.structured_content == {"a": 40, "b": -2, "sum": 38}
    # server/tools "Structured Content": SHOULD also return the serialized JSON in a TextContent block.
    assert json.loads(only_text(result)) == {"a": 40, "b": -2, "sum": 38}


def test_call_convert_temperature_wraps_scalar_output(shared_demo_server: RunningServer) -> None:
    async def body(client: Client) -> tuple[types.CallToolResult, types.CallToolResult]:
        boiling = await client.call_tool("convert_temperature", {"value": 100})
        freezing = await client.call_tool("convert_temperature", {"value": 32, "unit": "fahrenheit"})
        return boiling, freezing

    boiling, freezing = run_client(shared_demo_server, body)
    assert boiling.structured_content == {"result": 212.0}
    assert freezing.structured_content == {"result": 0.0}


def test_call_error_handling_is_tool_error(shared_demo_server: RunningServer) -> None:
    result = run_client(shared_demo_server, lambda client: client.call_tool("test_error_handling", {}))
    assert result.is_error is True
    assert only_text(result) == "This tool intentionally returns an error for testing"


def test_call_with_invalid_arguments_is_tool_error(shared_demo_server: RunningServer) -> None:
    """2025-11-25 server/tools "Error Handling": input validation errors are tool execution errors
    (isError: true) with a message the model can act on."""

    async def body(client: Client) -> tuple[types.CallToolResult, types.CallToolResult]:
        wrong_type = await client.call_tool("echo", {"message": 5})
        missing = await client.call_tool("echo", {})
        return wrong_type, missing

    wrong_type, missing = run_client(shared_demo_server, body)
    for result in (wrong_type, missing):
        assert result.is_error is True
        text = only_text(result)
        assert "message" in text
        assert "echo" in text
        # No raw validator dump (pydantic's help URL, Python reprs) reaches the client.
        assert "errors.pydantic.dev" not in text
        assert "Traceback" not in text


def test_call_unknown_tool_is_invalid_params(shared_demo_server: RunningServer) -> None:
    async def body(client: Client) -> None:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("no_such_tool", {})
        assert caught.value.code == INVALID_PARAMS
        assert "no_such_tool" in caught.value.message
        # The connection survives the error.
        assert only_text(await client.call_tool("echo", {"message": "still here"})) == "still here"

    run_client(shared_demo_server, body)


def test_call_content_types(shared_demo_server: RunningServer) -> None:
    async def body(client: Client) -> dict[str, types.CallToolResult]:
        names = [
            "test_image_content",
            "test_audio_content",
            "test_embedded_resource",
            "test_multiple_content_types",
        ]
        return {name: await client.call_tool(name, {}) for name in names}

    results = run_client(shared_demo_server, body)
    for name, result in results.items():
        assert result.is_error is False, name

    [image] = results["test_image_content"].content
    assert isinstance(image, types.ImageContent)
    assert image.mime_type == "image/png"
    assert image.data == RED_PIXEL_PNG_B64

    [audio] = results["test_audio_content"].content
    assert isinstance(audio, types.AudioContent)
    assert audio.mime_type == "audio/wav"
    wav = base64.b64decode(audio.data)
    assert wav[:4] == b"RIFF"
    assert wav[8:12] == b"WAVE"

    [embedded] = results["test_embedded_resource"].content
    assert isinstance(embedded, types.EmbeddedResource)
    assert isinstance(embedded.resource, types.TextResourceContents)
    assert embedded.resource.uri == "test://embedded-resource"
    assert embedded.resource.text == "This is an embedded resource content."
    assert embedded.resource.mime_type == "text/plain"

    text, image2, resource = results["test_multiple_content_types"].content
    assert isinstance(text, types.TextContent)
    assert text.text == "Multiple content types test:"
    assert isinstance(image2, types.ImageContent)
    assert image2.data == RED_PIXEL_PNG_B64
    assert isinstance(resource, types.EmbeddedResource)
    assert isinstance(resource.resource, types.TextResourceContents)
    assert resource.resource.uri == "test://mixed-content-resource"
    assert json.loads(resource.resource.text) == {"test": "data", "value": 123}


def test_json_schema_2020_12_tool_call(shared_demo_server: RunningServer) -> None:
    arguments = {"name": "Ada", "contactMethod": "email", "email": "ada@example.com"}
    result = run_client(
        shared_demo_server, lambda client: client.call_tool("json_schema_2020_12_tool", arguments)
    )
    assert result.is_error is False
    assert only_text(result) == f"Received: {sorted(arguments)}"


# -- notifications during a call (progress, logging) ----------------------------------------------


def test_call_with_progress_callback(shared_demo_server: RunningServer) -> None:
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    async def body(client: Client) -> types.CallToolResult:
        return await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)

    result = run_client(shared_demo_server, body)
    assert only_text(result) == "Progress test completed"
    assert len(updates) >= 3, updates
    assert [progress for progress, _, _ in updates] == [0, 50, 100]
    assert all(total == 100 for _, total, _ in updates), updates
    assert [message for _, _, message in updates] == ["0% done", "50% done", "100% done"]


def test_call_with_logging_callback(shared_demo_server: RunningServer) -> None:
    messages: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        messages.append(params)

    async def body(client: Client) -> types.CallToolResult:
        return await client.call_tool("test_tool_with_logging", {})

    result = run_client(shared_demo_server, body, logging_callback=on_log)
    assert only_text(result) == "Logging test completed"
    assert [m.data for m in messages] == [
        "Tool execution started",
        "Tool processing data",
        "Tool execution completed",
    ]
    assert all(m.level == "info" for m in messages), messages


def test_countdown_progress_and_logs_interleave(shared_demo_server: RunningServer) -> None:
    """One call that sends both kinds of notification; each reaches the right SDK callback."""
    updates: list[tuple[float, float | None]] = []
    logs: list[Any] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total))

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async def body(client: Client) -> types.CallToolResult:
        return await client.call_tool("countdown", {"steps": 4}, progress_callback=on_progress)

    result = run_client(shared_demo_server, body, logging_callback=on_log)
    assert only_text(result) == "liftoff"
    assert updates == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert logs == ["step 1", "step 2", "step 3", "step 4"]


def test_set_logging_level_filters_lower_levels(shared_demo_server: RunningServer) -> None:
    """server/utilities/logging "Message Flow": after `logging/setLevel (error)` the server
    "only sends error level and above"; schema.ts SetLevelRequest: the server should send all logs
    at this level and higher. The three messages of test_tool_with_logging are `info`."""
    messages: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        messages.append(params)

    async def body(client: Client) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the SDK marks logging deprecated as of 2026-07-28
            await client.set_logging_level("error")
        await client.call_tool("test_tool_with_logging", {})

    run_client(shared_demo_server, body, logging_callback=on_log)
    assert [m.data for m in messages] == []


# -- resources ------------------------------------------------------------------------------------


def test_list_resources(shared_demo_server: RunningServer) -> None:
    result = run_client(shared_demo_server, lambda client: client.list_resources())
    resources = {str(resource.uri): resource for resource in result.resources}
    assert {"test://static-text", "test://static-binary", "test://watched-resource"} <= set(resources)
    assert resources["test://static-text"].mime_type == "text/plain"
    assert resources["test://static-binary"].mime_type == "image/png"
    assert resources["test://static-text"].description == "A static text resource."
    assert all(resource.name for resource in resources.values())
    # Templates are listed separately, never as concrete resources.
    assert not any("{" in uri for uri in resources)


def test_list_resource_templates(shared_demo_server: RunningServer) -> None:
    result = run_client(shared_demo_server, lambda client: client.list_resource_templates())
    templates = {template.uri_template: template for template in result.resource_templates}
    assert "test://template/{id}/data" in templates
    template = templates["test://template/{id}/data"]
    assert template.mime_type == "application/json"
    assert template.name
    assert template.description == "Data for an id, from a resource template."


def test_read_static_text_resource(shared_demo_server: RunningServer) -> None:
    result = run_client(shared_demo_server, lambda client: client.read_resource("test://static-text"))
    [contents] = result.contents
    assert isinstance(contents, types.TextResourceContents)
    assert str(contents.uri) == "test://static-text"
    assert contents.mime_type == "text/plain"
    assert contents.text == "This is the content of the static text resource."


def test_read_static_binary_resource(shared_demo_server: RunningServer) -> None:
    result = run_client(shared_demo_server, lambda client: client.read_resource("test://static-binary"))
    [contents] = result.contents
    assert isinstance(contents, types.BlobResourceContents)
    assert str(contents.uri) == "test://static-binary"
    assert contents.mime_type == "image/png"
    assert contents.blob == RED_PIXEL_PNG_B64
    assert base64.b64decode(contents.blob).startswith(PNG_SIGNATURE)


def test_read_templated_resource(shared_demo_server: RunningServer) -> None:
    async def body(client: Client) -> list[types.ReadResourceResult]:
        return [await client.read_resource(f"test://template/{id_}/data") for id_ in ("42", "abc")]

    for id_, result in zip(("42", "abc"), run_client(shared_demo_server, body), strict=True):
        [contents] = result.contents
        assert isinstance(contents, types.TextResourceContents)
        assert str(contents.uri) == f"test://template/{id_}/data"
        assert contents.mime_type == "application/json"
        assert id_ in contents.text
        assert json.loads(contents.text) == {"id": id_, "templateTest": True, "data": f"Data for ID: {id_}"}


def test_read_unknown_resource_is_resource_not_found(shared_demo_server: RunningServer) -> None:
    """server/resources "Error Handling": resource not found → -32002."""

    async def body(client: Client) -> None:
        for uri in ("test://does-not-exist", "test://template/42/other"):
            with pytest.raises(MCPError) as caught:
                await client.read_resource(uri)
            assert caught.value.code == RESOURCE_NOT_FOUND, uri
            assert uri in caught.value.message

    run_client(shared_demo_server, body)


# -- prompts --------------------------------------------------------------------------------------


def test_list_prompts(shared_demo_server: RunningServer) -> None:
    result = run_client(shared_demo_server, lambda client: client.list_prompts())
    prompts = {prompt.name: prompt for prompt in result.prompts}
    expected = {
        "test_simple_prompt",
        "test_prompt_with_arguments",
        "test_prompt_with_embedded_resource",
        "test_prompt_with_image",
    }
    assert expected <= set(prompts), sorted(prompts)
    with_args = prompts["test_prompt_with_arguments"]
    assert with_args.description == "A prompt with two required arguments."
    arguments = {argument.name: argument for argument in with_args.arguments or []}
    assert set(arguments) == {"arg1", "arg2"}
    assert arguments["arg1"].required is True
    assert arguments["arg1"].description == "First test argument"
    assert arguments["arg2"].required is True
    assert not prompts["test_simple_prompt"].arguments


def test_get_simple_prompt(shared_demo_server: RunningServer) -> None:
    result = run_client(shared_demo_server, lambda client: client.get_prompt("test_simple_prompt"))
    [message] = result.messages
    assert message.role == "user"
    assert isinstance(message.content, types.TextContent)
    assert message.content.text == "This is a simple prompt for testing."


def test_get_prompt_with_arguments(shared_demo_server: RunningServer) -> None:
    arguments = {"arg1": "hello", "arg2": "world"}
    result = run_client(
        shared_demo_server, lambda client: client.get_prompt("test_prompt_with_arguments", arguments)
    )
    [message] = result.messages
    assert message.role == "user"
    assert isinstance(message.content, types.TextContent)
    assert "hello" in message.content.text
    assert "world" in message.content.text
    assert message.content.text == "Prompt with arguments: arg1='hello', arg2='world'"


def test_get_prompt_with_image(shared_demo_server: RunningServer) -> None:
    result = run_client(shared_demo_server, lambda client: client.get_prompt("test_prompt_with_image"))
    image, text = result.messages
    assert image.role == "user"
    assert isinstance(image.content, types.ImageContent)
    assert image.content.mime_type == "image/png"
    assert base64.b64decode(image.content.data).startswith(PNG_SIGNATURE)
    assert isinstance(text.content, types.TextContent)
    assert text.content.text == "Please analyze the image above."


def test_get_prompt_with_embedded_resource(shared_demo_server: RunningServer) -> None:
    uri = "test://example-resource"
    result = run_client(
        shared_demo_server,
        lambda client: client.get_prompt("test_prompt_with_embedded_resource", {"resourceUri": uri}),
    )
    embedded, text = result.messages
    assert isinstance(embedded.content, types.EmbeddedResource)
    assert isinstance(embedded.content.resource, types.TextResourceContents)
    assert str(embedded.content.resource.uri) == uri
    assert embedded.content.resource.text == "Embedded resource content for testing."
    assert isinstance(text.content, types.TextContent)


def test_get_prompt_errors_are_invalid_params(shared_demo_server: RunningServer) -> None:
    """server/prompts "Error Handling": invalid prompt name and missing required arguments → -32602."""

    async def body(client: Client) -> None:
        with pytest.raises(MCPError) as unknown:
            await client.get_prompt("no_such_prompt")
        assert unknown.value.code == INVALID_PARAMS
        assert "no_such_prompt" in unknown.value.message
        with pytest.raises(MCPError) as missing:
            await client.get_prompt("test_prompt_with_arguments", {"arg1": "only one"})
        assert missing.value.code == INVALID_PARAMS
        assert "arg2" in missing.value.message

    run_client(shared_demo_server, body)


# -- completion -----------------------------------------------------------------------------------


def test_complete_prompt_argument(shared_demo_server: RunningServer) -> None:
    ref = types.PromptReference(type="ref/prompt", name="test_prompt_with_arguments")

    async def body(client: Client) -> tuple[types.CompleteResult, types.CompleteResult]:
        arg1 = await client.complete(ref, {"name": "arg1", "value": "tes"})
        arg2 = await client.complete(ref, {"name": "arg2", "value": "w"}, context_arguments={"arg1": "test"})
        return arg1, arg2

    arg1, arg2 = run_client(shared_demo_server, body)
    assert "test" in arg1.completion.values
    assert all(value.startswith("tes") for value in arg1.completion.values), arg1
    assert "value1" not in arg1.completion.values
    assert arg1.completion.total == len(arg1.completion.values)
    assert arg1.completion.has_more is False
    assert arg2.completion.values == ["world"]


def test_complete_resource_template_argument(shared_demo_server: RunningServer) -> None:
    ref = types.ResourceTemplateReference(type="ref/resource", uri="test://template/{id}/data")
    result = run_client(shared_demo_server, lambda client: client.complete(ref, {"name": "id", "value": ""}))
    # The demo offers no candidates for `id`; the result must still be a well-formed completion.
    assert result.completion.values == []
    assert not result.completion.has_more


def test_complete_unknown_reference_is_invalid_params(shared_demo_server: RunningServer) -> None:
    """server/utilities/completion "Error Handling": invalid prompt name → -32602 (Invalid params);
    the same for a resource template the server does not have."""
    refs: list[types.PromptReference | types.ResourceTemplateReference] = [
        types.PromptReference(type="ref/prompt", name="no_such_prompt"),
        types.ResourceTemplateReference(type="ref/resource", uri="test://no-such-template/{id}"),
    ]

    async def body(client: Client) -> list[MCPError | types.CompleteResult]:
        outcomes: list[MCPError | types.CompleteResult] = []
        for ref in refs:
            try:
                outcomes.append(await client.complete(ref, {"name": "arg1", "value": ""}))
            except MCPError as error:
                outcomes.append(error)
        return outcomes

    prompt_outcome, template_outcome = run_client(shared_demo_server, body)
    assert isinstance(prompt_outcome, MCPError), f"expected -32602, got a result: {prompt_outcome!r}"
    assert prompt_outcome.code == INVALID_PARAMS
    assert "no_such_prompt" in prompt_outcome.message
    assert isinstance(template_outcome, MCPError), f"expected -32602, got a result: {template_outcome!r}"
    assert template_outcome.code == INVALID_PARAMS
    assert "no-such-template" in template_outcome.message


# -- concurrency ----------------------------------------------------------------------------------


def test_concurrent_calls_on_one_client_are_correlated(shared_demo_server: RunningServer) -> None:
    """Many in-flight requests on one SDK session: every response reaches its own caller."""
    count = 40

    async def body(client: Client) -> dict[int, str]:
        answers: dict[int, str] = {}

        async def one(index: int) -> None:
            tool = "echo" if index % 2 else "add"
            if tool == "echo":
                answers[index] = only_text(await client.call_tool("echo", {"message": f"msg-{index}"}))
            else:
                result = await client.call_tool("add", {"a": index, "b": 1000})
                assert result.structured_content is not None
                answers[index] = str(result.structured_content["sum"])

        async with anyio.create_task_group() as group:
            for index in range(count):
                group.start_soon(one, index)
        return answers

    answers = run_client(shared_demo_server, body)
    assert answers == {i: (f"msg-{i}" if i % 2 else str(i + 1000)) for i in range(count)}


def test_concurrent_clients(shared_demo_server: RunningServer) -> None:
    """Several independent SDK clients (each its own handshake) at once, with streamed progress."""
    clients = 6

    async def main() -> dict[int, tuple[str, int]]:
        outcome: dict[int, tuple[str, int]] = {}

        async def one(index: int) -> None:
            updates: list[float] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                updates.append(progress)

            async with Client(shared_demo_server.url, mode="legacy", cache=None) as client:
                assert client.protocol_version == LATEST
                echoed = only_text(await client.call_tool("echo", {"message": f"client-{index}"}))
                await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
                outcome[index] = (echoed, len(updates))

        with anyio.fail_after(TIMEOUT_S):
            async with anyio.create_task_group() as group:
                for index in range(clients):
                    group.start_soon(one, index)
        return outcome

    outcome = anyio.run(main)
    assert outcome == {i: (f"client-{i}", 3) for i in range(clients)}


# -- server health --------------------------------------------------------------------------------


def test_server_log_has_no_traceback(shared_demo_server: RunningServer) -> None:
    """Runs last in this module (file order): nothing above made the server raise."""
    # A final round trip first, so the log covers a live server that is still answering.
    assert (
        run_client(shared_demo_server, lambda client: client.call_tool("echo", {"message": "bye"})).is_error
        is False
    )
    assert shared_demo_server.process.poll() is None
    log = shared_demo_server.log()
    assert "Traceback" not in log, log
