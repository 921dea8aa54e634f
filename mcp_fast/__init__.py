"""mcp_fast: a fast, spec-conformant Model Context Protocol server."""

from mcp_fast.content import Content, ToolError, ToolResult
from mcp_fast.context import Context
from mcp_fast.jsonrpc import RpcError
from mcp_fast.server import MCPServer

__all__ = ["Content", "Context", "MCPServer", "RpcError", "ToolError", "ToolResult"]
__version__ = "0.1.0"
