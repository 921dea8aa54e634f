"""Which requests the result cache answers, under which key, and what it keeps.

The store itself is ``dispatch/cache.py`` (an LRU of encoded results). Cached:
- ``tools/call`` of a tool declared with ``cache_ttl`` (its result depends only on its arguments,
  for that long), ``resources/read`` of a resource declared with ``cache_ttl``;
- the list results (``tools/list`` ...), the same for every caller until the registry changes.
Keys hold the protocol version (results are shaped per version), the method, the target (tool
name or URI), the arguments' canonical JSON and, for a ``private`` result, who asks. Never kept:
errors, ``isError`` results, input-required results, retries of an input-required round.
"""

from __future__ import annotations

from typing import Any

import orjson

from mcp_fast.call import Call
from mcp_fast.dispatch.cache import NO_EXPIRY, CacheSlot, ResultCache, caller_key
from mcp_fast.dispatch.handlers import find_resource
from mcp_fast.dispatch.lists import LIST_KINDS, visibility_key
from mcp_fast.dispatch.params import EMPTY_PARAMS
from mcp_fast.protocol import jsonrpc
from mcp_fast.protocol.jsonrpc import McpError
from mcp_fast.server import MCPServer


class CachePolicy:
    """The result cache's rules for one server; ``methods`` says which requests to ask about."""

    def __init__(self, server: MCPServer, cache: ResultCache) -> None:
        self.server = server
        self.registry = server.registry
        self.cache = cache
        # The methods whose requests may be answered from the cache: other requests pay one
        # set lookup.
        self.methods: frozenset[str] = frozenset()
        self._refresh_methods()
        server.on_list_changed(self._registry_changed)
        server.on_resource_updated(self._resource_updated)
        server.on_invalidate(self._invalidate)

    # -- what the cache answers ---------------------------------------------------------

    def probe(self, call: Call) -> bytes | CacheSlot | None:
        """For a method in ``methods``: the stored result's JSON text (a hit: the pipeline splices it
        after the request's id), where its result is to be kept (a miss), or None when this
        request is not cacheable."""
        policy = call.policy
        params = call.params or EMPTY_PARAMS
        method = call.method
        target = ""
        arguments = b""
        if method == "tools/call":
            name = params.get("name")
            if type(name) is not str:
                return None
            tool = self.registry.tools.get(name)
            if tool is None or tool.cache_ttl is None or "task" in params:
                return None
            try:
                arguments = orjson.dumps(params.get("arguments"), option=orjson.OPT_SORT_KEYS)
            except TypeError:  # beyond 64-bit integers, say: not worth a key
                return None
            target, ttl, scope, tag = name, tool.cache_ttl, tool.cache_scope, "tool:" + name
        elif method == "resources/read":
            uri = params.get("uri")
            if type(uri) is not str:
                return None
            try:
                resource, _ = find_resource(self.registry, uri, policy.resource_not_found)
            except McpError:
                return None  # the general path answers the error
            if resource.cache_ttl is None:
                return None
            target, ttl, scope, tag = uri, resource.cache_ttl, resource.cache_scope, "uri:" + uri
        else:
            cursor = params.get("cursor")
            if cursor is not None and type(cursor) is not str:
                return None
            arguments = b"" if cursor is None else cursor.encode()
            ttl, scope, tag = NO_EXPIRY, "public", "list:" + LIST_KINDS[method]
            if method == "tools/list":
                target = visibility_key(self.registry, call)  # tools with scopes: per scope set
        if not policy.handshake and ("requestState" in params or "inputResponses" in params):
            return None  # retries of an input-required round are never cached (caching.mdx)
        who = ""
        if scope == "private":
            caller = self._caller(call)
            if caller is None:
                return None
            who = caller
        key = (policy.version, method, target, arguments, who)
        value = self.cache.get(key)
        if value is not None:
            return value
        return CacheSlot(key, ttl, tag)

    @staticmethod
    def _caller(call: Call) -> str | None:
        """Who a ``private`` result is kept for: the session, the authorized principal, or the
        credentials sent (a digest); None for an anonymous caller (nothing private is cached)."""
        if call.session is not None:
            return caller_key(call.session.session_id, None)
        if call.principal is not None:
            return "principal " + call.principal.subject
        return caller_key(None, call.headers.raw("authorization"))

    def keep(self, slot: CacheSlot, result: Any) -> bytes | None:
        """Keep a complete, successful result; its JSON text (None: not kept)."""
        if (
            type(result) is not dict
            or result.get("isError") is True
            or result.get("resultType", "complete") != "complete"
        ):
            return None
        try:
            value = jsonrpc.dumps(result)
        except TypeError:
            return None  # the answer path logs it and answers the error
        self.cache.put(slot.key, value, slot.ttl, slot.tag)
        return value

    @staticmethod
    def stored(value: bytes) -> Any:
        """A cached result as an object (for middleware, which may look at it)."""
        return orjson.loads(value)

    # -- keeping it fresh -----------------------------------------------------------------

    def _refresh_methods(self) -> None:
        registry = self.registry
        methods = set(LIST_KINDS)
        if any(tool.cache_ttl is not None for tool in registry.tools.values()):
            methods.add("tools/call")
        resources = (*registry.resources.values(), *registry.templates.values())
        if any(resource.cache_ttl is not None for resource in resources):
            methods.add("resources/read")
        self.methods = frozenset(methods)

    def _registry_changed(self, kind: str) -> None:
        """A tool, resource or prompt came or went: its lists, and what it answered, are stale."""
        self.cache.invalidate("list:" + kind)
        if kind == "tools":
            self.cache.invalidate_prefix("tool:")
        elif kind == "resources":
            self.cache.invalidate_prefix("uri:")
        self._refresh_methods()

    def _resource_updated(self, uri: str) -> None:
        self.cache.invalidate("uri:" + uri)

    def _invalidate(self, tool: str | None, uri: str | None) -> None:
        if tool is None and uri is None:
            self.cache.clear()
        if tool is not None:
            self.cache.invalidate("tool:" + tool)
        if uri is not None:
            self.cache.invalidate("uri:" + uri)
