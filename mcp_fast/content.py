"""Content blocks and typed results a handler may return (MCP schema: ContentBlock).

Blocks are plain dicts shaped as the spec's JSON, so they go to orjson as they
are; these helpers only build them and spell the field names right.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, NewType, Union, get_args, get_origin

# A distinct name so that `-> list[Content]` means content blocks while `-> dict`
# means structured output.
Content = NewType("Content", dict[str, Any])

CONTENT_TYPES = frozenset({"text", "image", "audio", "resource", "resource_link"})


def _b64(data: bytes | str) -> str:
    return data if isinstance(data, str) else base64.b64encode(data).decode("ascii")


def text(value: str, *, annotations: dict[str, Any] | None = None) -> Content:
    block = Content({"type": "text", "text": value})
    if annotations:
        block["annotations"] = annotations
    return block


def image(data: bytes | str, mime_type: str) -> Content:
    """An image; ``data`` is raw bytes or already base64-encoded text."""
    return Content({"type": "image", "data": _b64(data), "mimeType": mime_type})


def audio(data: bytes | str, mime_type: str) -> Content:
    return Content({"type": "audio", "data": _b64(data), "mimeType": mime_type})


def embedded_text_resource(uri: str, value: str, mime_type: str = "text/plain") -> Content:
    return Content({"type": "resource", "resource": {"uri": uri, "mimeType": mime_type, "text": value}})


def embedded_blob_resource(uri: str, data: bytes | str, mime_type: str) -> Content:
    return Content({"type": "resource", "resource": {"uri": uri, "mimeType": mime_type, "blob": _b64(data)}})


def resource_link(uri: str, name: str, **extra: Any) -> Content:
    return Content({"type": "resource_link", "uri": uri, "name": name, **extra})


@dataclass(slots=True)
class ToolResult:
    """Full control over a tools/call result (CallToolResult)."""

    content: list[Content] = field(default_factory=list)
    structured: dict[str, Any] | None = None
    is_error: bool = False
    meta: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"content": self.content, "isError": self.is_error}
        if self.structured is not None:
            result["structuredContent"] = self.structured
        if self.meta is not None:
            result["_meta"] = self.meta
        return result


class ToolError(Exception):
    """Raise inside a tool to answer ``isError: true`` with this message (no traceback)."""


def is_content_block(value: object) -> bool:
    return type(value) is dict and value.get("type") in CONTENT_TYPES


def is_content_annotation(annotation: Any) -> bool:
    """True for return annotations that mean "content blocks": ToolResult, Content, list[Content]."""
    if annotation is ToolResult or annotation is Content:
        return True
    origin = get_origin(annotation)
    if origin is list:
        args = get_args(annotation)
        return bool(args) and is_content_annotation(args[0])
    if origin is Union:
        return all(is_content_annotation(arg) for arg in get_args(annotation))
    return False
