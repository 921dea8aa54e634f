"""The conformance fixtures: an "everything"-style server for the official MCP conformance suite.

    python -m mcp_fast examples.conformance:server        # from the repository root

Its tools, resources and prompts carry the names, texts and shapes the suite's scenarios expect
(``npx @modelcontextprotocol/conformance list --server``), plus a few typed tools the project's own
tests use (``echo``, ``add``, tasks, input-required rounds). It is a test fixture, not an example
of how to write a server: for that see ``mcp_fast/demo.py`` and the README.
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import wave
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from mcp_fast import content
from mcp_fast.content import Content, ToolError
from mcp_fast.context import Context, Question
from mcp_fast.protocol.jsonrpc import McpError
from mcp_fast.server import MCPServer

server = MCPServer(
    "mcp-fast-conformance",
    "0.1.0",
    title="mcp_fast conformance fixtures",
    instructions="The MCP conformance fixtures, plus echo and arithmetic.",
)

# A 1x1 red PNG.
RED_PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def _tiny_wav() -> bytes:
    """0.01 s of silence, 8 kHz mono 16-bit."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(struct.pack("<80h", *([0] * 80)))
    return buffer.getvalue()


SILENT_WAV = _tiny_wav()


# -- showcase tools ---------------------------------------------------------------


@server.tool(annotations={"readOnlyHint": True, "idempotentHint": True}, inline=True)
def echo(message: str) -> str:
    """Echo the message back.

    Args:
        message: the text to send back
    """
    return message


@server.tool(annotations={"readOnlyHint": True}, cache_ttl=60, cache_scope="public")
async def slow_square(n: int) -> int:
    """Square a number, slowly (0.2 s) the first time: the result cache answers repeats for 60 s.

    Args:
        n: the number to square
    """
    await asyncio.sleep(0.2)
    return n * n


@server.tool(
    input_schema={
        "type": "object",
        "properties": {
            "region": {
                "type": "string",
                "description": "Region, mirrored into the Mcp-Param-Region header",
                "x-mcp-header": "Region",
            }
        },
        "required": ["region"],
    },
    inline=True,
)
def test_x_mcp_header(region: str) -> str:
    """Echo a region that 2026 clients also send as the Mcp-Param-Region header."""
    return f"region={region}"


class Sum(BaseModel):
    a: int
    b: int
    sum: int


@server.tool(title="Add two integers", annotations={"readOnlyHint": True}, inline=True)
def add(a: int, b: Annotated[int, Field(description="the second addend")]) -> Sum:
    """Add two integers and return a structured result.

    Args:
        a: the first addend
    """
    return Sum(a=a, b=b, sum=a + b)


@server.tool(inline=True)
def convert_temperature(
    value: Annotated[float, Field(ge=-1e6, le=1e6)], unit: Literal["celsius", "fahrenheit"] = "celsius"
) -> float:
    """Convert a temperature to the other unit."""
    return value * 9 / 5 + 32 if unit == "celsius" else (value - 32) * 5 / 9


@server.tool()
async def countdown(ctx: Context, steps: Annotated[int, Field(ge=1, le=50)] = 3) -> str:
    """Count down with a progress notification and a log message per step."""
    for step in range(steps):
        await ctx.report_progress(step, steps, f"step {step + 1} of {steps}")
        await ctx.info(f"step {step + 1}")
        await asyncio.sleep(0.01)
    await ctx.report_progress(steps, steps)
    return "liftoff"


@server.tool()
async def emit_notifications(
    ctx: Context,
    count: Annotated[int, Field(ge=0, le=1_000_000)] = 10,
    size: Annotated[int, Field(ge=0, le=65536)] = 100,
) -> str:
    """Send ``count`` log notifications of ``size`` characters as fast as the client reads them."""
    payload = "x" * size
    for index in range(count):
        await ctx.log("info", {"index": index, "payload": payload})
    return f"sent {count} notifications"


@server.tool(task_support="optional")
async def slow_report(ctx: Context, seconds: Annotated[float, Field(ge=0, le=60)] = 0.2) -> str:
    """Work for a while, with progress; clients of 2025-11-25 may run it as a task and poll."""
    steps = 4
    for step in range(steps):
        await ctx.report_progress(step, steps)
        await asyncio.sleep(seconds / steps)
    return f"report ready after {seconds:g} s"


@server.tool(task_support="required")
async def batch_job(items: Annotated[int, Field(ge=1, le=1000)] = 3) -> dict[str, int]:
    """A job that must run as a task (tasks/get to poll, tasks/result to collect)."""
    await asyncio.sleep(0.05)
    return {"processed": items}


# -- conformance fixtures (tools) -------------------------------------------------


@server.tool(inline=True)
def test_simple_text() -> str:
    """Returns a simple text response."""
    return "This is a simple text response for testing."


@server.tool(inline=True)
def test_image_content() -> list[Content]:
    """Returns a 1x1 red PNG image."""
    return [content.image(RED_PIXEL_PNG, "image/png")]


@server.tool(inline=True)
def test_audio_content() -> list[Content]:
    """Returns a short WAV audio clip."""
    return [content.audio(SILENT_WAV, "audio/wav")]


@server.tool(inline=True)
def test_embedded_resource() -> list[Content]:
    """Returns an embedded text resource."""
    return [
        content.embedded_text_resource(
            "test://embedded-resource", "This is an embedded resource content.", "text/plain"
        )
    ]


@server.tool(inline=True)
def test_multiple_content_types() -> list[Content]:
    """Returns text, an image and an embedded resource."""
    return [
        content.text("Multiple content types test:"),
        content.image(RED_PIXEL_PNG, "image/png"),
        content.embedded_text_resource(
            "test://mixed-content-resource", '{"test":"data","value":123}', "application/json"
        ),
    ]


@server.tool()
async def test_tool_with_logging(ctx: Context) -> str:
    """Sends three log messages while it runs."""
    await ctx.info("Tool execution started")
    await asyncio.sleep(0.05)
    await ctx.info("Tool processing data")
    await asyncio.sleep(0.05)
    await ctx.info("Tool execution completed")
    return "Logging test completed"


@server.tool()
async def test_tool_with_progress(ctx: Context) -> str:
    """Reports progress 0, 50 and 100 of 100."""
    for progress in (0, 50, 100):
        await ctx.report_progress(progress, 100, f"{progress}% done")
        if progress < 100:
            await asyncio.sleep(0.05)
    return "Progress test completed"


@server.tool(inline=True)
def test_error_handling() -> str:
    """Always fails, to show how a tool reports an error."""
    raise ToolError("This tool intentionally returns an error for testing")


@server.tool()
async def test_sampling(prompt: str, ctx: Context) -> str:
    """Asks the client's LLM (sampling/createMessage) and returns its answer."""
    result = await ctx.sample(prompt, max_tokens=100)
    answer = result.get("content", {})
    text = answer.get("text", "") if isinstance(answer, dict) else ""
    return f"LLM response: {text}"


@server.tool()
async def test_elicitation(message: str, ctx: Context) -> str:
    """Asks the user for a username and an email (elicitation/create)."""
    schema = {
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"},
        },
        "required": ["username", "email"],
    }
    result = await ctx.elicit(message, schema)
    return f"User response: action={result.get('action')}, content={result.get('content')}"


@server.tool()
async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    """Elicitation whose fields carry default values (SEP-1034)."""
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "User name", "default": "John Doe"},
            "age": {"type": "integer", "description": "User age", "default": 30},
            "score": {"type": "number", "description": "User score", "default": 95.5},
            "status": {
                "type": "string",
                "description": "User status",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": {"type": "boolean", "description": "Verification status", "default": True},
        },
        "required": [],
    }
    result = await ctx.elicit("Please review and update the form fields with defaults", schema)
    return f"Elicitation completed: action={result.get('action')}, content={result.get('content')}"


@server.tool()
async def test_elicitation_sep1330_enums(ctx: Context) -> str:
    """Elicitation with every enum form of SEP-1330 (titled/untitled, single/multi, legacy)."""
    schema = {
        "type": "object",
        "properties": {
            "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
            "titledSingle": {
                "type": "string",
                "oneOf": [
                    {"const": "value1", "title": "First Option"},
                    {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"},
                ],
            },
            "legacyEnum": {
                "type": "string",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {
                "type": "array",
                "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
            },
            "titledMulti": {
                "type": "array",
                "items": {
                    "anyOf": [
                        {"const": "value1", "title": "First Choice"},
                        {"const": "value2", "title": "Second Choice"},
                        {"const": "value3", "title": "Third Choice"},
                    ]
                },
            },
        },
        "required": [],
    }
    result = await ctx.elicit("Please select options from the enum fields", schema)
    return f"Elicitation completed: action={result.get('action')}, content={result.get('content')}"


@server.tool()
async def test_reconnection(ctx: Context) -> str:
    """A tool that triggers SSE stream closure to test client reconnection behavior."""
    await ctx.close_sse_stream()
    await asyncio.sleep(0.1)
    return "Reconnection test completed successfully"


# -- 2026-07-28 fixtures: one handler serves both eras (a 2025 client gets server-to-client
# requests, a 2026 client an input-required result and a retry) ----------------------------

NAME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
}
CONFIRM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
}


def _content(answer: dict[str, Any]) -> dict[str, Any]:
    content = answer.get("content") if answer.get("action") == "accept" else None
    return content if isinstance(content, dict) else {}


def _sampled_text(result: dict[str, Any]) -> str:
    content = result.get("content")
    if isinstance(content, list):
        content = content[0] if content else {}
    return str(content.get("text", "")) if isinstance(content, dict) else ""


@server.tool()
async def test_logging_tool(ctx: Context) -> str:
    """Sends three info log messages (a 2026 client gets them only when it asks with logLevel)."""
    for step in (1, 2, 3):
        await ctx.info(f"Logging test {step}/3")
    return "Logging test completed"


@server.tool()
async def test_streaming_elicitation(ctx: Context) -> str:
    """Progress, then a question: never a request on the response stream in 2026-07-28."""
    await ctx.report_progress(0, 1)
    schema = {"type": "object", "properties": {"confirm": {"type": "boolean"}}, "required": ["confirm"]}
    answer = await ctx.elicit("Please confirm streaming elicitation", schema, key="confirm")
    return f"Confirmed: {_content(answer).get('confirm')}"


@server.tool()
async def test_missing_capability(ctx: Context) -> str:
    """Needs sampling: a client that did not declare it gets -32021 (2026) / -32600 (2025)."""
    result = await ctx.sample("Say hello", max_tokens=10)
    return f"LLM says: {_sampled_text(result)}"


@server.tool(inline=True)
def test_trigger_tool_change() -> str:
    """Announce that the tool list changed."""
    server.notify_list_changed("tools")
    return "tools/list_changed sent"


@server.tool(inline=True)
def test_trigger_prompt_change() -> str:
    """Announce that the prompt list changed."""
    server.notify_list_changed("prompts")
    return "prompts/list_changed sent"


@server.tool()
async def test_input_required_result_elicitation(ctx: Context) -> str:
    """Asks for the user's name."""
    answer = await ctx.elicit("What is your name?", NAME_SCHEMA, key="user_name")
    name = _content(answer).get("name")
    return f"Hello, {name}!" if name else "No name given"


@server.tool()
async def test_input_required_result_sampling(ctx: Context) -> str:
    """Asks the client's model a question."""
    question = [{"role": "user", "content": {"type": "text", "text": "What is the capital of France?"}}]
    result = await ctx.sample(question, max_tokens=100, key="capital_question")
    return f"LLM says: {_sampled_text(result)}"


@server.tool()
async def test_input_required_result_list_roots(ctx: Context) -> str:
    """Asks for the client's roots."""
    roots = await ctx.list_roots(key="client_roots")
    return "Roots: " + ", ".join(str(root.get("uri")) for root in roots if isinstance(root, dict))


@server.tool()
async def test_input_required_result_request_state(ctx: Context) -> str:
    """A confirmation carried across rounds by requestState."""
    answer = await ctx.elicit("Please confirm", CONFIRM_SCHEMA, key="confirm")
    return f"state-ok: confirmed={_content(answer).get('ok')}"


@server.tool()
async def test_input_required_result_multiple_inputs(ctx: Context) -> str:
    """Asks for a name, a greeting and the roots in one round."""
    greeting = [{"role": "user", "content": {"type": "text", "text": "Generate a greeting"}}]
    name, sampled, roots = await ctx.ask(
        Question(
            "elicitation/create",
            {"mode": "form", "message": "What is your name?", "requestedSchema": NAME_SCHEMA},
            "user_name",
        ),
        Question("sampling/createMessage", {"messages": greeting, "maxTokens": 50}, "greeting"),
        Question("roots/list", {}, "client_roots"),
    )
    count = len(roots.get("roots", [])) if isinstance(roots.get("roots"), list) else 0
    return f"{_sampled_text(sampled)}, {_content(name).get('name')}! Roots: {count}"


@server.tool()
async def test_input_required_result_multi_round(ctx: Context) -> str:
    """Two questions, one after the other (two rounds)."""
    first = await ctx.elicit("Step 1: What is your name?", NAME_SCHEMA, key="step1")
    color_schema = {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}
    second = await ctx.elicit("Step 2: What is your favorite color?", color_schema, key="step2")
    return f"{_content(first).get('name')} likes {_content(second).get('color')}"


@server.tool()
async def test_input_required_result_tampered_state(ctx: Context) -> str:
    """A confirmation whose requestState the client must return untouched."""
    await ctx.elicit("Please confirm", CONFIRM_SCHEMA, key="confirm")
    return "confirmed"


@server.tool()
async def test_input_required_result_capabilities(ctx: Context) -> str:
    """Asks only what the client declared it can answer."""
    questions = []
    if ctx.client_supports("sampling"):
        say = [{"role": "user", "content": {"type": "text", "text": "Say something"}}]
        questions.append(
            Question("sampling/createMessage", {"messages": say, "maxTokens": 10}, "sampling_probe")
        )
    if ctx.client_supports("elicitation"):
        params = {"mode": "form", "message": "Anything to add?", "requestedSchema": NAME_SCHEMA}
        questions.append(Question("elicitation/create", params, "elicitation_probe"))
    if ctx.client_supports("roots"):
        questions.append(Question("roots/list", {}, "roots_probe"))
    if not questions:
        return "nothing to ask"
    answers = await ctx.ask(*questions)
    return f"got {len(answers)} answers"


# -- the tasks extension (2026-07-28): the server decides to run these as tasks -----------------


@server.tool(inline=True)
def greet(name: str) -> str:
    """Greet someone (never a task)."""
    return f"Hello, {name}!"


@server.tool(task_support="optional")
async def slow_compute(seconds: Annotated[float, Field(ge=0, le=120)] = 0, label: str = "") -> str:
    """Compute for a while; a client with the tasks extension gets a task to poll."""
    await asyncio.sleep(seconds)
    return f"computed {label} in {seconds:g} s"


@server.tool(task_support="required")
async def failing_job() -> str:
    """A job that runs only as a task and ends in a tool error."""
    await asyncio.sleep(1)
    raise ToolError("failing_job failed")


@server.tool(task_support="optional")
async def protocol_error_job() -> str:
    """A job that fails with a protocol error (the task ends failed, with the error)."""
    raise McpError(-32603, "protocol_error_job failed")


@server.tool(task_support="optional")
async def confirm_delete(filename: str, ctx: Context) -> str:
    """Ask before deleting (inside a task the question waits for tasks/update)."""
    schema = {"type": "object", "properties": {"confirm": {"type": "boolean"}}, "required": ["confirm"]}
    answer = await ctx.elicit(f"Delete {filename}?", schema, key="confirm")
    return f"deleted {filename}" if _content(answer).get("confirm") else f"kept {filename}"


@server.tool(task_support="optional")
async def multi_input(ctx: Context) -> str:
    """Two questions at once."""
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "confirm": {"type": "boolean"}},
        "required": ["name"],
    }
    first, second = await ctx.ask(
        Question(
            "elicitation/create",
            {"mode": "form", "message": "First input", "requestedSchema": schema},
            "first",
        ),
        Question(
            "elicitation/create",
            {"mode": "form", "message": "Second input", "requestedSchema": schema},
            "second",
        ),
    )
    return f"first={_content(first).get('name')}, second={_content(second).get('name')}"


@server.tool(task_support="required", task_start="detach")
async def test_tool_with_task(ctx: Context) -> str:
    """Asks for a name first (input-required), then goes on as a task."""
    answer = await ctx.elicit("What is your name?", NAME_SCHEMA, key="user_name")
    await ctx.detach()
    await asyncio.sleep(0.2)
    return f"Hello, {_content(answer).get('name')}!"


JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


@server.tool(input_schema=JSON_SCHEMA_2020_12, inline=True)
def json_schema_2020_12_tool(**arguments: Any) -> str:
    """A tool whose input schema uses JSON Schema 2020-12 keywords ($defs, $ref, allOf, if/then/else)."""
    return f"Received: {sorted(arguments)}"


# -- conformance fixtures (resources) ---------------------------------------------


@server.resource("test://static-text", mime_type="text/plain", inline=True)
def static_text() -> str:
    """A static text resource."""
    return "This is the content of the static text resource."


@server.resource("test://static-binary", mime_type="image/png", inline=True)
def static_binary() -> bytes:
    """A static binary resource (a PNG image)."""
    return RED_PIXEL_PNG


@server.resource("test://template/{id}/data", mime_type="application/json", inline=True)
def template_data(id: str) -> dict[str, Any]:
    """Data for an id, from a resource template."""
    return {"id": id, "templateTest": True, "data": f"Data for ID: {id}"}


_watched = {"version": 0}


@server.resource("test://watched-resource", mime_type="text/plain", inline=True)
def watched_resource() -> str:
    """A resource clients may subscribe to."""
    return f"Watched resource content (version {_watched['version']})"


@server.tool(inline=True)
def update_watched_resource() -> str:
    """Change test://watched-resource; subscribers get notifications/resources/updated."""
    _watched["version"] += 1
    server.notify_resource_updated("test://watched-resource")
    return f"test://watched-resource is now at version {_watched['version']}"


# -- conformance fixtures (prompts) -----------------------------------------------


@server.prompt(inline=True)
def test_simple_prompt() -> str:
    """A simple prompt without arguments."""
    return "This is a simple prompt for testing."


@server.prompt(inline=True)
def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
    """A prompt with two required arguments.

    Args:
        arg1: First test argument
        arg2: Second test argument
    """
    return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"


@server.prompt(inline=True)
def test_prompt_with_embedded_resource(resourceUri: str) -> list[dict[str, Any]]:
    """A prompt that embeds a resource.

    Args:
        resourceUri: URI of the resource to embed
    """
    return [
        {
            "role": "user",
            "content": content.embedded_text_resource(
                resourceUri, "Embedded resource content for testing.", "text/plain"
            ),
        },
        {"role": "user", "content": content.text("Please process the embedded resource above.")},
    ]


@server.prompt()
async def test_input_required_result_prompt(ctx: Context) -> str:
    """A prompt that first asks the user for context."""
    schema = {"type": "object", "properties": {"context": {"type": "string"}}, "required": ["context"]}
    answer = await ctx.elicit("What context should the prompt use?", schema, key="user_context")
    return f"Context: {_content(answer).get('context')}"


@server.prompt(inline=True)
def test_prompt_with_image() -> list[dict[str, Any]]:
    """A prompt with an image."""
    return [
        {"role": "user", "content": content.image(RED_PIXEL_PNG, "image/png")},
        {"role": "user", "content": content.text("Please analyze the image above.")},
    ]


_COMPLETIONS = {"arg1": ["test", "testing", "tested", "value1"], "arg2": ["value2", "world"]}


@server.completion()
def complete(ref: dict[str, Any], argument: dict[str, Any], context: dict[str, Any] | None) -> list[str]:
    """Prefix completion for the demo prompt's arguments."""
    candidates = _COMPLETIONS.get(str(argument.get("name")), [])
    prefix = str(argument.get("value", ""))
    return [value for value in candidates if value.startswith(prefix)]
