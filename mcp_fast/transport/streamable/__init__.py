"""Streamable HTTP: the MCP endpoint (POST, GET, DELETE) of MCP 2025-03-26 through 2026-07-28."""

from mcp_fast.transport.streamable.endpoint import SESSION_NOT_FOUND, StreamableHTTP, StreamableSettings

__all__ = ["SESSION_NOT_FOUND", "StreamableHTTP", "StreamableSettings"]
