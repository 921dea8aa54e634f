"""mcp_fast: a fast, spec-conformant Model Context Protocol server."""

from mcp_fast.call import Principal
from mcp_fast.content import Content, ToolError, ToolResult
from mcp_fast.context import Context
from mcp_fast.protocol.jsonrpc import HttpError, McpError, RpcError
from mcp_fast.server import MCPServer

__all__ = [
    "Content",
    "Context",
    "HttpError",
    "MCPServer",
    "McpError",
    "Principal",
    "RpcError",
    "ToolError",
    "ToolResult",
]
__version__ = "0.1.0"
