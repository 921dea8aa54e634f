"""The list methods (tools/list, resources/list, resources/templates/list, prompts/list): the
registry's definitions, shaped per protocol version and paged with opaque cursors.

Spec: server/utilities/pagination (an unknown cursor is -32602).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

from mcp_fast.call import Call
from mcp_fast.protocol.jsonrpc import INVALID_PARAMS, JsonObject, McpError
from mcp_fast.protocol.versions import VersionPolicy
from mcp_fast.registry import Registry

_CURSOR_PREFIX: Final = b"mcp_fast:"
# List methods and the registry kind (list_changed name) each lists.
LIST_KINDS: Final = {
    "tools/list": "tools",
    "resources/list": "resources",
    "resources/templates/list": "resources",
    "prompts/list": "prompts",
}


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(_CURSOR_PREFIX + str(offset).encode()).decode()


def decode_cursor(cursor: object, total: int) -> int:
    """Opaque cursors (server/utilities/pagination): an unknown one is -32602."""
    if cursor is None:
        return 0
    try:
        if type(cursor) is not str:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor.encode())
        if not raw.startswith(_CURSOR_PREFIX):
            raise ValueError
        offset = int(raw[len(_CURSOR_PREFIX) :])
    except (ValueError, binascii.Error):
        raise McpError(INVALID_PARAMS, "Invalid params: unknown pagination cursor") from None
    if not 0 < offset <= total:
        raise McpError(INVALID_PARAMS, "Invalid params: pagination cursor out of range")
    return offset


def page(items: list[Any], key: str, cursor: object, page_size: int) -> JsonObject:
    """One page of ``items`` under ``key``, with ``nextCursor`` when more follow."""
    start = decode_cursor(cursor, len(items))
    end = start + page_size
    result: JsonObject = {key: items[start:end]}
    if end < len(items):
        result["nextCursor"] = encode_cursor(end)
    return result


class Lists:
    """Definitions for the list methods, built once per (kind, version, registry edit)."""

    def __init__(self, registry: Registry, page_size: int) -> None:
        self.registry = registry
        self.page_size = page_size
        self._built: dict[tuple[str, str], tuple[int, list[dict[str, Any]]]] = {}

    def definitions(self, kind: str, policy: VersionPolicy) -> list[dict[str, Any]]:
        registry = self.registry
        key = (kind, policy.version)
        built = self._built.get(key)
        if built is not None and built[0] == registry.version:
            return built[1]
        sources: dict[str, dict[str, Any]] = {
            "tools": registry.tools,
            "resources": registry.resources,
            "resourceTemplates": registry.templates,
            "prompts": registry.prompts,
        }
        definitions = [item.definition(policy) for item in sources[kind].values()]
        self._built[key] = (registry.version, definitions)
        return definitions

    def page(self, kind: str, params: JsonObject, policy: VersionPolicy) -> JsonObject:
        return page(self.definitions(kind, policy), kind, params.get("cursor"), self.page_size)

    def tools_page(self, params: JsonObject, call: Call) -> JsonObject:
        """tools/list shows only the tools the caller may call (a tool's ``scopes``)."""
        definitions = self.definitions("tools", call.policy)
        if any(tool.scopes for tool in self.registry.tools.values()):
            tools = self.registry.tools.values()
            principal, transport = call.principal, call.transport
            definitions = [
                entry
                for entry, tool in zip(definitions, tools, strict=True)
                if tool.allows(principal, transport)
            ]
        return page(definitions, "tools", params.get("cursor"), self.page_size)


def visibility_key(registry: Registry, call: Call) -> str:
    """What decides which tools a caller sees in tools/list: "" when no tool declares scopes
    (everyone sees all), else the caller's scopes that matter (the result cache keys on it)."""
    needed: set[str] = set()
    for tool in registry.tools.values():
        needed |= tool.scopes
    if not needed:
        return ""
    principal = call.principal
    if principal is None:
        return "local" if call.transport in ("stdio", "memory") else "anonymous"
    return "scopes " + " ".join(sorted(principal.scopes & needed))
