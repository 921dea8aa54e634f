"""Reading a request's params: the checks every method shares, with the JSON-RPC error they answer."""

from __future__ import annotations

from typing import Final

from mcp_fast.protocol.jsonrpc import INVALID_PARAMS, JsonObject, McpError

EMPTY_PARAMS: Final[JsonObject] = {}


def require_str(params: JsonObject, key: str) -> str:
    value = params.get(key)
    if type(value) is not str:
        raise McpError(INVALID_PARAMS, f'Invalid params: "{key}" must be a string')
    return value


def optional_object(params: JsonObject, key: str) -> JsonObject | None:
    value = params.get(key)
    if value is not None and type(value) is not dict:
        raise McpError(INVALID_PARAMS, f'Invalid params: "{key}" must be an object')
    return value
