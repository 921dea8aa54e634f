"""What handlers return, shaped into MCP results (CallToolResult, ReadResourceResult, GetPromptResult)."""

from __future__ import annotations

import base64
import math
from typing import Any

import orjson
import pydantic

from mcp_fast.content import Content, ToolResult, is_content_block
from mcp_fast.protocol.jsonrpc import dumps as jsonrpc_dumps
from mcp_fast.protocol.versions import VersionPolicy
from mcp_fast.registry import Resource
from mcp_fast.schema import OutputSpec


def error_result(message: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": message}], "isError": True}


def tool_result(value: Any, output: OutputSpec | None, policy: VersionPolicy) -> dict[str, Any]:
    """Turn what a tool returned into a CallToolResult (server/tools, "Tool Result")."""
    if type(value) is str and output is None:
        return {"content": [{"type": "text", "text": value}], "isError": False}  # the common case
    if isinstance(value, ToolResult):
        result = value.to_json()
    elif output is not None:
        structured = output.serializer(value)
        if output.wrap:
            structured = {"result": structured}
        if _has_non_finite(structured):
            # JSON has no NaN or infinity: the result could not match its outputSchema.
            return error_result("The tool produced a number JSON cannot represent (NaN or infinity)")
        # Backwards compatibility (2025-06-18 "Structured Content"): the same data as text.
        text = jsonrpc_dumps(structured).decode()
        result = {"content": [{"type": "text", "text": text}], "isError": False}
        if policy.structured_output:
            result["structuredContent"] = structured
        return result
    else:
        result = {"content": _content_blocks(value), "isError": False}
    if not policy.structured_output:
        result.pop("structuredContent", None)
    return result


def _has_non_finite(value: Any, depth: int = 0) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if depth > 64:
        return False
    if isinstance(value, dict):
        return any(_has_non_finite(item, depth + 1) for item in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(item, depth + 1) for item in value)
    return False


def _content_blocks(value: Any) -> list[Content] | list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    if is_content_block(value):
        return [value]
    if isinstance(value, (list, tuple)) and all(is_content_block(item) for item in value):
        return list(value)
    if isinstance(value, pydantic.BaseModel):
        value = value.model_dump(mode="json", by_alias=True)
    return [{"type": "text", "text": orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()}]


def read_result(uri: str, resource: Resource, value: Any, policy: VersionPolicy) -> dict[str, Any]:
    """A ReadResourceResult; from 2026-07-28 with the resource's declared cache hints."""
    result: dict[str, Any] = {"contents": resource_contents(uri, resource.mime_type, value)}
    if policy.cache_hints and resource.cache_ttl is not None:
        result["ttlMs"] = int(resource.cache_ttl * 1000)
        result["cacheScope"] = resource.cache_scope
    return result


def resource_contents(uri: str, mime_type: str | None, value: Any) -> list[dict[str, Any]]:
    """Turn what a resource handler returned into ResourceContents entries."""
    if isinstance(value, list):
        return value
    entry: dict[str, Any] = {"uri": uri}
    if mime_type is not None:
        entry["mimeType"] = mime_type
    if isinstance(value, (bytes, bytearray, memoryview)):
        entry["blob"] = base64.b64encode(value).decode("ascii")
    elif isinstance(value, str):
        entry["text"] = value
    elif isinstance(value, dict) and ("text" in value or "blob" in value):
        return [{**entry, **value}]
    else:
        entry["text"] = orjson.dumps(value).decode()
        entry.setdefault("mimeType", "application/json")
    return [entry]


def prompt_result(value: Any, description: str | None) -> dict[str, Any]:
    """Turn what a prompt handler returned into a GetPromptResult."""
    if isinstance(value, dict) and "messages" in value:
        return value
    if isinstance(value, str):
        messages: list[Any] = [{"role": "user", "content": {"type": "text", "text": value}}]
    elif isinstance(value, dict):
        messages = [value]
    else:
        messages = [
            {"role": "user", "content": {"type": "text", "text": item}} if isinstance(item, str) else item
            for item in value
        ]
    result: dict[str, Any] = {"messages": messages}
    if description:
        result["description"] = description
    return result
