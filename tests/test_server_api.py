"""The server API in-process: schemas, validation, result shaping, how handlers run, config."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson
import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from mcp_fast import Context, MCPServer, RpcError, ToolError, ToolResult, content
from mcp_fast.app import AppLoadError, load_app
from mcp_fast.config import load_config
from mcp_fast.net.eager import start_eagerly
from mcp_fast.pipeline import Pipeline, PipelineSettings
from mcp_fast.transport.streamable import StreamableHTTP
from mcp_fast.wire.events import Request


@dataclass
class Recorder:
    """A Responder that records what the transport answered."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    chunks: list[bytes] = field(default_factory=list)
    ended: bool = False
    disconnected: bool = False

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status, self.headers, self.body, self.ended = status, headers, body, True

    def start_stream(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.headers = status, headers

    def send_stream(self, data: bytes) -> None:
        self.chunks.append(data)

    async def drain(self) -> None:
        return None

    def end_stream(self) -> None:
        self.ended = True

    def messages(self) -> list[Any]:
        if self.body and dict(self.headers).get(b"content-type") != b"text/event-stream":
            return [orjson.loads(self.body)]
        # SSE: streamed in chunks, or (an answer known at once) one body with a length.
        events = b"".join([self.body, *self.chunks]).split(b"\n\n")
        lines = [line for event in events for line in event.split(b"\n")]
        return [orjson.loads(line[len(b"data: ") :]) for line in lines if line.startswith(b"data: {")]


def serve(transport: StreamableHTTP, request: Request) -> Recorder:
    """One request through the transport, its coroutine (if any) run to the end."""
    recorder = Recorder()

    async def run() -> None:
        pending = transport(request, recorder)
        if pending is not None:
            task = start_eagerly(asyncio.get_running_loop(), pending)
            if task is not None:
                await task

    asyncio.run(run())
    assert recorder.ended
    return recorder


def mcp_request(message: dict[str, Any], headers: dict[bytes, bytes]) -> Request:
    """A POST /mcp of ``message`` with the usual MCP headers, ``headers`` added or replacing."""
    all_headers = {
        b"host": b"127.0.0.1",
        b"content-type": b"application/json",
        b"accept": b"application/json, text/event-stream",
        **headers,
    }
    return Request(b"POST", b"/mcp", b"/mcp", all_headers, orjson.dumps(message), True)


def post(
    server: MCPServer, method: str, params: dict[str, Any] | None = None, version: str = "2025-11-25"
) -> Recorder:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        message["params"] = params
    request = mcp_request(message, {b"mcp-protocol-version": version.encode()})
    return serve(StreamableHTTP(Pipeline(server, PipelineSettings(page_size=100))), request)


def result_of(server: MCPServer, method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
    answer = post(server, method, params, **kw).messages()[-1]
    assert "result" in answer, answer
    return answer["result"]


def tool_definition(server: MCPServer, name: str, version: str = "2025-11-25") -> dict[str, Any]:
    tools = result_of(server, "tools/list", version=version)["tools"]
    return next(tool for tool in tools if tool["name"] == name)


# -- schemas -----------------------------------------------------------------------------------


class Address(BaseModel):
    street: str
    city: str


def test_input_schema_from_hints_and_docstring() -> None:
    server = MCPServer("t")

    @server.tool()
    def book(
        name: str,
        guests: Annotated[int, Field(ge=1, description="how many people")],
        address: Address,
        kind: Literal["table", "room"] = "table",
        note: str | None = None,
    ) -> str:
        """Book something.

        More text that is not the summary.

        Args:
            name: who books
            kind: what to book,
                continued on a second line
        """
        return name

    definition = tool_definition(server, "book")
    schema = definition["inputSchema"]
    assert definition["description"] == "Book something."
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["required"] == ["name", "guests", "address"]
    assert schema["properties"]["name"]["description"] == "who books"
    assert schema["properties"]["guests"]["description"] == "how many people"
    assert schema["properties"]["guests"]["minimum"] == 1
    assert schema["properties"]["kind"]["enum"] == ["table", "room"]
    assert schema["properties"]["kind"]["description"] == "what to book, continued on a second line"
    assert schema["properties"]["address"] == {"$ref": "#/$defs/Address"}
    assert set(schema["$defs"]["Address"]["properties"]) == {"street", "city"}


def test_context_parameter_is_not_in_the_schema() -> None:
    server = MCPServer("t")

    @server.tool()
    async def with_ctx(ctx: Context, x: int) -> int:
        """Uses the context."""
        return x

    schema = tool_definition(server, "with_ctx")["inputSchema"]
    assert list(schema["properties"]) == ["x"]


class Weather(TypedDict):
    city: str
    celsius: float


def test_output_schemas_follow_the_return_type() -> None:
    server = MCPServer("t")

    @server.tool(inline=True)
    def model() -> Address:
        """m"""
        return Address(street="s", city="c")

    @server.tool(inline=True)
    def typed_dict() -> Weather:
        """t"""
        return {"city": "c", "celsius": 1.5}

    @server.tool(inline=True)
    def number() -> int:
        """n"""
        return 7

    @server.tool(inline=True)
    def text() -> str:
        """s"""
        return "x"

    @server.tool(inline=True)
    def blocks() -> list[content.Content]:
        """b"""
        return [content.text("x")]

    @server.tool(inline=True, structured_output=False)
    def unstructured() -> Address:
        """u"""
        return Address(street="s", city="c")

    assert tool_definition(server, "model")["outputSchema"]["properties"]["city"]["type"] == "string"
    assert tool_definition(server, "typed_dict")["outputSchema"]["required"] == ["city", "celsius"]
    assert tool_definition(server, "number")["outputSchema"] == {
        "type": "object",
        "properties": {"result": {"type": "integer"}},
        "required": ["result"],
    }
    for name in ("text", "blocks", "unstructured"):
        assert "outputSchema" not in tool_definition(server, name)
    assert "outputSchema" not in tool_definition(server, "model", version="2025-03-26")

    result = result_of(server, "tools/call", {"name": "number"})
    assert result["structuredContent"] == {"result": 7}
    assert orjson.loads(result["content"][0]["text"]) == {"result": 7}
    result = result_of(server, "tools/call", {"name": "typed_dict"})
    assert result["structuredContent"] == {"city": "c", "celsius": 1.5}
    result = result_of(server, "tools/call", {"name": "unstructured"})
    assert "structuredContent" not in result
    assert orjson.loads(result["content"][0]["text"]) == {"street": "s", "city": "c"}


def test_titles_and_icons_depend_on_the_version() -> None:
    server = MCPServer("t")
    icons = [{"src": "https://example.com/i.png", "mimeType": "image/png"}]

    @server.tool(title="Pretty", icons=icons, inline=True)
    def plain() -> str:
        """p"""
        return "p"

    new = tool_definition(server, "plain", "2025-11-25")
    assert new["title"] == "Pretty" and new["icons"] == icons
    middle = tool_definition(server, "plain", "2025-06-18")
    assert middle["title"] == "Pretty" and "icons" not in middle
    old = tool_definition(server, "plain", "2025-03-26")
    assert "title" not in old and "icons" not in old


# -- validation and errors ---------------------------------------------------------------------


def test_strict_validation_of_arguments() -> None:
    server = MCPServer("t")

    @server.tool(inline=True)
    def count(n: int, flag: bool = False) -> int:
        """c"""
        return n

    ok = result_of(server, "tools/call", {"name": "count", "arguments": {"n": 3}})
    assert ok["structuredContent"] == {"result": 3}
    for bad in ({"n": "3"}, {"n": 1.5}, {"n": True}, {}, {"n": 1, "flag": "yes"}):
        result = result_of(server, "tools/call", {"name": "count", "arguments": bad})
        assert result["isError"] is True
        text = result["content"][0]["text"]
        assert text.startswith("Invalid arguments for tool 'count'")
        assert "pydantic" not in text and "https://" not in text


def test_tool_failures_become_is_error_results(caplog: pytest.LogCaptureFixture) -> None:
    server = MCPServer("t")

    @server.tool(inline=True)
    def crash() -> str:
        """c"""
        raise ValueError("disk on fire")

    @server.tool()
    async def refuse() -> str:
        """r"""
        raise ToolError("not allowed")

    @server.tool(inline=True)
    def protocol() -> str:
        """p"""
        raise RpcError(-32602, "custom protocol error")

    result = result_of(server, "tools/call", {"name": "crash"})
    assert result == {"content": [{"type": "text", "text": "Tool 'crash' failed: disk on fire"}], "isError": True}
    assert "Traceback" in caplog.text or any(record.exc_info for record in caplog.records)
    result = result_of(server, "tools/call", {"name": "refuse"})
    assert result == {"content": [{"type": "text", "text": "not allowed"}], "isError": True}
    answer = post(server, "tools/call", {"name": "protocol"}).messages()[-1]
    assert answer["error"] == {"code": -32602, "message": "custom protocol error"}


def _sessionless_post(server: MCPServer, name: str, arguments: dict[str, Any]) -> Recorder:
    """A 2026-07-28 tools/call through the transport (envelope in _meta, routing headers)."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    message = {
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": name, "arguments": arguments, "_meta": meta},
    }  # fmt: skip
    request = mcp_request(
        message,
        {
            b"mcp-protocol-version": b"2026-07-28",
            b"mcp-method": b"tools/call",
            b"mcp-name": name.encode(),
        },
    )
    recorder = Recorder()
    assert StreamableHTTP(Pipeline(server))(request, recorder) is None  # a plain tool answers at once
    return recorder


def test_plain_tools_answer_like_the_general_path_in_every_era() -> None:
    """An inline tool without Context takes the no-Context path; its answers must be the ones
    a Context-taking twin gets, in every version: results, invalid arguments (-32602 before
    2025-11-25, isError from it on), the tool's own RpcError (2026: its HTTP status)."""
    server = MCPServer("t")

    @server.tool(inline=True)
    def plain(n: int) -> str:
        """p"""
        if n < 0:
            raise RpcError(-32602, "n must not be negative")
        return str(n)

    @server.tool(inline=True)
    def general(n: int, ctx: Context) -> str:
        """g"""
        if n < 0:
            raise RpcError(-32602, "n must not be negative")
        return str(n)

    assert server.registry.tools["plain"].plain and not server.registry.tools["general"].plain
    for version in ("2025-03-26", "2025-06-18", "2025-11-25"):
        for arguments in ({"n": 3}, {"n": "3"}, {"n": -1}, {}):
            answers = [
                post(server, "tools/call", {"name": name, "arguments": arguments}, version).body
                for name in ("plain", "general")
            ]
            assert answers[0] == answers[1].replace(b"'general'", b"'plain'"), (version, arguments)
    assert "error" in post(server, "tools/call", {"name": "plain", "arguments": {"n": "3"}}, "2025-06-18").messages()[-1]
    for arguments in ({"n": 3}, {"n": "3"}, {"n": -1}):
        plain_answer, general_answer = (_sessionless_post(server, name, arguments) for name in ("plain", "general"))
        assert plain_answer.status == general_answer.status, arguments
        assert plain_answer.body == general_answer.body.replace(b"'general'", b"'plain'"), arguments
    refused = _sessionless_post(server, "plain", {"n": -1})
    assert refused.status == 400 and orjson.loads(refused.body)["error"]["code"] == -32602
    ok = orjson.loads(_sessionless_post(server, "plain", {"n": 5}).body)["result"]
    assert ok["resultType"] == "complete" and ok["content"] == [{"type": "text", "text": "5"}]
    assert "io.modelcontextprotocol/serverInfo" in ok["_meta"]


def test_tool_result_and_content_passthrough() -> None:
    server = MCPServer("t")

    @server.tool(inline=True)
    def full() -> ToolResult:
        """f"""
        return ToolResult([content.text("a")], structured={"k": 1}, meta={"m": True})

    @server.tool(inline=True)
    def nothing() -> None:
        """n"""

    result = result_of(server, "tools/call", {"name": "full"})
    assert result == {"content": [{"type": "text", "text": "a"}], "isError": False, "structuredContent": {"k": 1}, "_meta": {"m": True}}
    assert result_of(server, "tools/call", {"name": "nothing"}) == {"content": [], "isError": False}


# -- how handlers run --------------------------------------------------------------------------


def test_plain_def_runs_in_a_thread_async_in_a_task_inline_on_the_loop() -> None:
    server = MCPServer("t")
    seen: dict[str, Any] = {}

    @server.tool()
    def blocking() -> str:
        """b"""
        seen["blocking"] = threading.current_thread() is threading.main_thread()
        return "b"

    @server.tool(inline=True)
    def fast() -> str:
        """f"""
        seen["fast"] = threading.current_thread() is threading.main_thread()
        return "f"

    @server.tool()
    async def timed() -> str:
        """t"""
        seen["task"] = asyncio.current_task() is not None
        async with asyncio.timeout(5):  # needs a current task from the first step
            await asyncio.sleep(0)
        return "t"

    for name in ("blocking", "fast", "timed"):
        assert result_of(server, "tools/call", {"name": name})["isError"] is False
    assert seen == {"blocking": False, "fast": True, "task": True}


def test_progress_without_token_is_silent_and_logs_stream() -> None:
    server = MCPServer("t")

    @server.tool()
    async def work(ctx: Context) -> str:
        """w"""
        await ctx.report_progress(1, 2)  # no progress token: nothing sent
        await ctx.warning({"detail": 1}, logger="worker")
        return "done"

    recorder = post(server, "tools/call", {"name": "work"})
    messages = recorder.messages()
    assert recorder.headers[0] == (b"content-type", b"text/event-stream")
    assert messages[0] == {
        "jsonrpc": "2.0",
        "method": "notifications/message",
        "params": {"level": "warning", "data": {"detail": 1}, "logger": "worker"},
    }
    assert messages[-1]["result"]["content"][0]["text"] == "done"
    assert len(messages) == 2


# -- resources, prompts, registry --------------------------------------------------------------


def test_resources_and_templates() -> None:
    server = MCPServer("t")

    @server.resource("data://items/{item_id}/raw", mime_type="application/octet-stream")
    def raw(item_id: int) -> bytes:
        return bytes([item_id])

    @server.resource("data://config", inline=True)
    def config() -> dict[str, int]:
        """The config."""
        return {"a": 1}

    read = result_of(server, "resources/read", {"uri": "data://items/7/raw"})
    assert read["contents"] == [{"uri": "data://items/7/raw", "mimeType": "application/octet-stream", "blob": "Bw=="}]
    read = result_of(server, "resources/read", {"uri": "data://config"})
    assert read["contents"] == [{"uri": "data://config", "mimeType": "application/json", "text": '{"a":1}'}]
    answer = post(server, "resources/read", {"uri": "data://items/x/raw"}).messages()[-1]
    assert answer["error"]["code"] == -32602
    answer = post(server, "resources/read", {"uri": "data://nothing"}).messages()[-1]
    assert answer["error"] == {"code": -32002, "message": "Resource not found: data://nothing", "data": {"uri": "data://nothing"}}
    listed = result_of(server, "resources/list")["resources"]
    assert listed == [{"uri": "data://config", "name": "config", "description": "The config."}]
    templates = result_of(server, "resources/templates/list")["resourceTemplates"]
    assert templates == [{"uriTemplate": "data://items/{item_id}/raw", "name": "raw", "mimeType": "application/octet-stream"}]


def test_prompts() -> None:
    server = MCPServer("t")

    @server.prompt(title="Greeting")
    def greet(name: str, times: int = 1) -> str:
        """Greets.

        Args:
            name: whom to greet
        """
        return "hi " * times + name

    listed = result_of(server, "prompts/list")["prompts"]
    assert listed == [
        {
            "name": "greet",
            "title": "Greeting",
            "description": "Greets.",
            "arguments": [
                {"name": "name", "description": "whom to greet", "required": True},
                {"name": "times", "required": False},
            ],
        }
    ]
    result = result_of(server, "prompts/get", {"name": "greet", "arguments": {"name": "Ann", "times": "2"}})
    assert result["messages"] == [{"role": "user", "content": {"type": "text", "text": "hi hi Ann"}}]
    answer = post(server, "prompts/get", {"name": "greet", "arguments": {}}).messages()[-1]
    assert answer["error"]["code"] == -32602 and "name" in answer["error"]["message"]
    answer = post(server, "prompts/get", {"name": "nope"}).messages()[-1]
    assert answer["error"]["code"] == -32602


def test_registry_changes_refresh_lists_and_notify_listeners() -> None:
    server = MCPServer("t")
    changes: list[str] = []
    server.on_list_changed(changes.append)

    @server.tool(inline=True)
    def one() -> str:
        """1"""
        return "1"

    transport = StreamableHTTP(Pipeline(server))
    assert [t["name"] for t in result_of(server, "tools/list")["tools"]] == ["one"]
    server.remove_tool("one")
    assert result_of(server, "tools/list")["tools"] == []
    assert changes == ["tools", "tools"]
    assert transport.pipeline.dispatcher.capabilities() == {"logging": {}}


def test_ping_and_set_level_return_empty_objects() -> None:
    server = MCPServer("t")
    assert result_of(server, "ping") == {}
    assert result_of(server, "logging/setLevel", {"level": "error"}) == {}


# -- app loading and configuration ---------------------------------------------------------------


def test_load_app() -> None:
    assert load_app(None).name == "mcp-fast-demo"
    assert load_app("mcp_fast.demo:server").name == "mcp-fast-demo"
    assert load_app("examples.conformance:server").name == "mcp-fast-conformance"
    with pytest.raises(AppLoadError):
        load_app("no_such_module_xyz:server")
    with pytest.raises(AppLoadError):
        load_app("examples.conformance:RED_PIXEL_PNG")


def test_config_from_flags_and_environment() -> None:
    env = {"MCP_FAST_PORT": "9001", "MCP_FAST_MAX_BODY_SIZE": "1M", "MCP_FAST_ALLOWED_ORIGINS": "a.com, b.com"}
    config = load_config([], env)
    assert (config.port, config.max_body_size, config.allowed_origins) == (9001, 1 << 20, ["a.com", "b.com"])
    config = load_config(["--port", "9002", "--max-body-size", "512K"], env)
    assert (config.port, config.max_body_size) == (9002, 512 << 10)
    assert load_config([], {}).host == "127.0.0.1"
    with pytest.raises(SystemExit):
        load_config([], {"MCP_FAST_PORT": "not-a-number"})
