"""The built-in demo app (``python -m mcp_fast`` with no argument): a small server as a person writes it.

A note-taking assistant's tools, a resource template, and a prompt. Try it with the MCP
Inspector, or with the ``curl`` lines of the README's quick start.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from pydantic import BaseModel, Field

from mcp_fast import Context, McpError, MCPServer, ToolError

# resources/read of a URI nobody serves (server/resources, "Error Handling").
RESOURCE_NOT_FOUND = -32002

server = MCPServer(
    "mcp-fast-demo",
    "0.1.0",
    title="mcp_fast demo",
    instructions="A small notes server: echo, arithmetic, word counts and notes you can read back.",
)

NOTES: dict[str, str] = {
    "welcome": "mcp_fast serves MCP over Streamable HTTP, the old HTTP+SSE transport and stdio.",
    "todo": "Write a tool. Run python -m mcp_fast myapp:server. Ship it.",
}


@server.tool(annotations={"readOnlyHint": True})
def echo(message: str) -> str:
    """Echo the message back.

    Args:
        message: the text to send back
    """
    return message


@server.tool(title="Add two integers", annotations={"readOnlyHint": True})
def add(a: int, b: Annotated[int, Field(description="the second addend")]) -> int:
    """Add two integers (the result is structured: {"result": a + b})."""
    return a + b


class WordCount(BaseModel):
    words: int
    characters: int


@server.tool(annotations={"readOnlyHint": True})
def word_count(text: str) -> WordCount:
    """Count the words and characters of a text."""
    return WordCount(words=len(text.split()), characters=len(text))


@server.tool()
async def countdown(ctx: Context, steps: Annotated[int, Field(ge=1, le=50)] = 3) -> str:
    """Count down, reporting progress and a log message at each step."""
    for step in range(steps):
        await ctx.report_progress(step, steps, f"{steps - step} to go")
        await ctx.info(f"step {step + 1} of {steps}")
        await asyncio.sleep(0.1)
    await ctx.report_progress(steps, steps, "done")
    return "liftoff"


@server.tool(annotations={"destructiveHint": False})
def save_note(name: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,40}$")], text: str) -> str:
    """Save a note under a name; read it back as the resource notes://{name}."""
    if not text.strip():
        raise ToolError("a note needs some text")
    NOTES[name] = text
    server.notify_resource_updated(f"notes://{name}")
    return f"saved notes://{name}"


@server.resource("notes://{name}", mime_type="text/plain")
def note(name: str) -> str:
    """A note saved with save_note."""
    text = NOTES.get(name)
    if text is None:
        raise McpError(RESOURCE_NOT_FOUND, f"No note named {name!r}", {"uri": f"notes://{name}"})
    return text


@server.prompt()
def summarize(text: str) -> str:
    """Ask the model for a three-line summary.

    Args:
        text: the text to summarize
    """
    return f"Summarize this in three lines:\n\n{text}"
