"""A user app for tests: its tools change at run time (list_changed notifications)."""

from __future__ import annotations

from mcp_fast import MCPServer

server = MCPServer("dynamic-app", "1.0.0")


@server.tool(inline=True)
def add_tool(name: str) -> str:
    """Register a new tool called ``name``."""

    def extra() -> str:
        return f"I am {name}"

    server.add_tool(extra, name=name, description="A tool added at run time", inline=True)
    return f"added {name}"


@server.tool(inline=True)
def remove_tool(name: str) -> str:
    """Remove the tool called ``name``."""
    server.remove_tool(name)
    return f"removed {name}"
