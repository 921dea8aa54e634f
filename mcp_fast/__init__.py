"""mcp_fast: a fast, spec-conformant Model Context Protocol server."""

from mcp_fast.content import Content, ToolError, ToolResult
from mcp_fast.context import Context
from mcp_fast.protocol.jsonrpc import McpError, RpcError
from mcp_fast.server import MCPServer

__all__ = ["Content", "Context", "MCPServer", "McpError", "RpcError", "ToolError", "ToolResult"]
__version__ = "0.1.0"
