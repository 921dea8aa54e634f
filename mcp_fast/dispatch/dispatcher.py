"""The MCP method table: one small function per method, looked up by name.

The dispatcher knows nothing of HTTP. It takes a validated ``Message`` and a
``Context`` and returns the encoded JSON-RPC response. Method functions take
``(params, ctx)`` and return the result object, or raise ``McpError``.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import logging
from collections.abc import Callable, Coroutine
from types import CoroutineType
from typing import Any, Final

import orjson

from mcp_fast.context import Context
from mcp_fast.dispatch.cache import NO_EXPIRY, CacheSlot, ResultCache, caller_key
from mcp_fast.dispatch.subscriptions import SUBSCRIPTION_ID_KEY, Listener, SubscriptionHub
from mcp_fast.dispatch.tasks import Task, TaskStore
from mcp_fast.protocol import jsonrpc
from mcp_fast.protocol.envelope import TASKS_EXTENSION
from mcp_fast.protocol.input_required import (
    INPUT_METHODS,
    DetachRequested,
    InputRequired,
    StateCodec,
    input_required_result,
    open_round,
)
from mcp_fast.protocol.jsonrpc import INVALID_PARAMS, METHOD_NOT_FOUND, JsonObject, McpError, Message
from mcp_fast.protocol.spec import LOG_LEVELS
from mcp_fast.protocol.versions import ADVERTISED_VERSIONS, POLICIES, VersionPolicy, negotiate
from mcp_fast.server import MCPServer

logger = logging.getLogger("mcp_fast.dispatch")

# A method returns its result, or a coroutine when it has to wait.
Method = Callable[[JsonObject, Context], Any]

EMPTY_PARAMS: Final[JsonObject] = {}
SERVER_INFO_KEY: Final = "io.modelcontextprotocol/serverInfo"
CACHEABLE_METHODS: Final = frozenset(
    {
        "server/discover",
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
        "resources/read",
    }
)
_CURSOR_PREFIX: Final = b"mcp_fast:"
# List methods and the registry kind (list_changed name) each lists.
LIST_KINDS: Final = {
    "tools/list": "tools",
    "resources/list": "resources",
    "resources/templates/list": "resources",
    "prompts/list": "prompts",
}


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


def _has_tasks_extension(ctx: Context) -> bool:
    extensions = (ctx.client_capabilities or {}).get("extensions")
    return isinstance(extensions, dict) and TASKS_EXTENSION in extensions


def _needs_tasks_extension(message: str) -> McpError:
    data: JsonObject = {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}
    return McpError(-32021, f"{message}: declare the {TASKS_EXTENSION} extension", data)


def _error(message: Message, ctx: Context, error: McpError) -> bytes:
    """The encoded error; its code stays on the Context (2026-07-28 maps it to an HTTP status)."""
    ctx.error_code = error.code
    return jsonrpc.encode_error(message.id, error)


def _encode(message: Message, result: Any) -> bytes:
    try:
        return jsonrpc.encode_result(message.id, result)
    except TypeError:
        logger.exception("result of %s is not JSON serializable", message.method)
        error = McpError(jsonrpc.INTERNAL_ERROR, "Internal error: the result could not be encoded")
        return jsonrpc.encode_error(message.id, error)


class Dispatcher:
    """Routes requests and notifications of every 2025-era version to their method."""

    def __init__(
        self,
        server: MCPServer,
        *,
        page_size: int = 100,
        state_codec: StateCodec | None = None,
        cache: ResultCache | None = None,
    ) -> None:
        self.server = server
        self.cache = cache
        # The methods whose requests may be answered from the cache (from_cache); empty
        # without a cache, so other requests pay one set lookup.
        self.cached_methods: frozenset[str] = frozenset()
        self._refresh_cached_methods()
        server.on_list_changed(self._registry_changed)
        server.on_resource_updated(self._resource_updated)
        server.on_invalidate(self._invalidate)
        self.page_size = page_size
        self.state_codec = state_codec or StateCodec()
        self._list_cache: dict[tuple[str, str], tuple[int, list[dict[str, Any]]]] = {}
        self.methods: dict[str, Method] = {
            "initialize": self.initialize,
            "ping": self.ping,
            "tools/list": self.tools_list,
            "tools/call": self.tools_call,
            "resources/list": self.resources_list,
            "resources/templates/list": self.resource_templates_list,
            "resources/read": self.resources_read,
            "resources/subscribe": self.resources_subscribe,
            "resources/unsubscribe": self.resources_unsubscribe,
            "prompts/list": self.prompts_list,
            "prompts/get": self.prompts_get,
            "logging/setLevel": self.logging_set_level,
            "tasks/get": self.tasks_get,
            "tasks/result": self.tasks_result,
            "tasks/list": self.tasks_list,
            "tasks/cancel": self.tasks_cancel,
            "server/discover": self.server_discover,
            "subscriptions/listen": self.subscriptions_listen,
        }
        self.hub = SubscriptionHub()
        server.on_list_changed(self.hub.list_changed)
        server.on_resource_updated(self.hub.resource_updated)
        self.tasks = TaskStore()
        self._server_info_2026 = self.server_info(POLICIES["2026-07-28"])
        if server.registry.completion is not None:
            self.methods["completion/complete"] = self.completion_complete
        # The method table of each protocol version (2026-07-28 drops ping, initialize, ...).
        extension_methods: dict[str, Method] = {
            "tasks/get": self.extension_tasks_get,
            "tasks/update": self.tasks_update,
            "tasks/cancel": self.extension_tasks_cancel,
        }
        self._tables: dict[str, dict[str, Method]] = {}
        for version, policy in POLICIES.items():
            impls = {**self.methods, **extension_methods} if policy.tasks_extension else self.methods
            self._tables[version] = {name: impl for name, impl in impls.items() if name in policy.methods}

    # -- the result cache ----------------------------------------------------

    def _refresh_cached_methods(self) -> None:
        if self.cache is None:
            return
        registry = self.server.registry
        methods = set(LIST_KINDS)
        if any(tool.cache_ttl is not None for tool in registry.tools.values()):
            methods.add("tools/call")
        resources = (*registry.resources.values(), *registry.templates.values())
        if any(resource.cache_ttl is not None for resource in resources):
            methods.add("resources/read")
        self.cached_methods = frozenset(methods)

    def _registry_changed(self, kind: str) -> None:
        """A tool, resource or prompt came or went: its lists, and what it answered, are stale."""
        if self.cache is not None:
            self.cache.invalidate("list:" + kind)
            if kind == "tools":
                self.cache.invalidate_prefix("tool:")
            elif kind == "resources":
                self.cache.invalidate_prefix("uri:")
        self._refresh_cached_methods()

    def _resource_updated(self, uri: str) -> None:
        if self.cache is not None:
            self.cache.invalidate("uri:" + uri)

    def _invalidate(self, tool: str | None, uri: str | None) -> None:
        if self.cache is None:
            return
        if tool is None and uri is None:
            self.cache.clear()
        if tool is not None:
            self.cache.invalidate("tool:" + tool)
        if uri is not None:
            self.cache.invalidate("uri:" + uri)

    def from_cache(
        self, message: Message, policy: VersionPolicy, session_id: str | None, credentials: bytes | None
    ) -> bytes | CacheSlot | None:
        """For a method in ``cached_methods``: the response from the cache (a hit), where its
        result is to be kept (a miss), or None when this request is not cacheable.

        ``session_id`` and ``credentials`` (an Authorization header) name the caller of a
        ``private`` result; with neither, nothing private is cached.
        """
        params = message.params or EMPTY_PARAMS
        method = message.method
        target = ""
        arguments = b""
        if method == "tools/call":
            name = params.get("name")
            if type(name) is not str:
                return None
            tool = self.server.registry.tools.get(name)
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
                resource, _ = self.server.find_resource(uri, policy.resource_not_found)
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
        if not policy.handshake and ("requestState" in params or "inputResponses" in params):
            return None  # retries of an input-required round are never cached (caching.mdx)
        who = ""
        if scope == "private":
            caller = caller_key(session_id, credentials)
            if caller is None:
                return None
            who = caller
        key = (policy.version, method, target, arguments, who)
        assert self.cache is not None
        value = self.cache.get(key)
        if value is not None:
            return jsonrpc.encode_result(message.id, orjson.Fragment(value))
        return CacheSlot(key, ttl, tag)

    def _encode_kept(self, message: Message, result: Any, slot: CacheSlot) -> bytes:
        """Encode a result; a complete, successful one of a cacheable request is kept too."""
        if (
            type(result) is not dict
            or result.get("isError") is True
            or result.get("resultType", "complete") != "complete"
        ):
            return _encode(message, result)
        try:
            value = jsonrpc.dumps(result)
        except TypeError:
            return _encode(message, result)  # which logs it and answers the error
        assert self.cache is not None
        self.cache.put(slot.key, value, slot.ttl, slot.tag)
        return jsonrpc.encode_result(message.id, orjson.Fragment(value))

    # -- entry points --------------------------------------------------------

    def dispatch(self, message: Message, ctx: Context) -> bytes | Coroutine[Any, Any, bytes]:
        """Run one request: its encoded response, or a coroutine that produces it.

        Method functions return their result directly when they need not wait
        (lists, ping, inline tools), so the common request creates no coroutine.
        """
        method = self._tables[ctx.policy.version].get(message.method)
        if method is None:
            return _error(message, ctx, McpError(METHOD_NOT_FOUND, f"Method not found: {message.method}"))
        params = message.params or EMPTY_PARAMS
        try:
            if not ctx.policy.handshake and message.method in INPUT_METHODS:
                ctx.inputs = open_round(message.method, params, self.state_codec)
            result = method(params, ctx)
        except (InputRequired, DetachRequested, Exception) as exc:  # noqa: BLE001 - _failure answers each kind
            failure = self._failure(message, ctx, exc)
            if type(failure) is bytes:
                return failure
            result = failure
        if type(result) is CoroutineType:
            return self._complete(message, result, ctx)
        return self._answer(message, result, ctx)

    def _answer(self, message: Message, result: Any, ctx: Context) -> bytes:
        """A method's result, shaped for the version and encoded (and kept, when cacheable)."""
        if ctx.policy.result_type:
            result = self.finalize(message.method, result)
        if ctx.cache_slot is None:
            return _encode(message, result)
        return self._encode_kept(message, result, ctx.cache_slot)

    def _failure(
        self, message: Message, ctx: Context, exc: InputRequired | DetachRequested | Exception
    ) -> bytes | JsonObject:
        """What a method's exception answers: an error response, an input-required result, or
        (``ctx.detach()``) the CreateTaskResult to send instead of the result."""
        if isinstance(exc, McpError):
            return _error(message, ctx, exc)
        if isinstance(exc, InputRequired):
            return self._input_required(message, ctx)
        if isinstance(exc, DetachRequested):
            return self._detached(message, ctx)
        # A bug: logged with its traceback, never shown to the client as text.
        logger.error("internal error in %s", message.method, exc_info=exc)
        return _error(message, ctx, McpError(jsonrpc.INTERNAL_ERROR, "Internal error"))

    def plain_call(
        self, message: Message, policy: VersionPolicy, slot: CacheSlot | None = None
    ) -> tuple[bytes, int | None] | None:
        """A tools/call of a ``plain`` tool answered without a Context: the encoded response and
        its error code (None for a result); None when the request is anything else (the general
        path takes it, errors and all).

        Most tool calls are plain functions with nothing to ask or report: for them a
        Context would be built only to be thrown away.
        """
        params = message.params
        if message.method != "tools/call" or params is None:
            return None
        name = params.get("name")
        arguments = params.get("arguments")
        if type(name) is not str or (arguments is not None and type(arguments) is not dict):
            return None
        tool = self.server.registry.tools.get(name)
        if tool is None or not tool.plain or (policy.tasks and "task" in params):
            return None
        if not policy.handshake and ("requestState" in params or "inputResponses" in params):
            return None  # 2026-07-28: the general path checks what came back from a round
        try:
            result: Any = self.server.run_plain_tool(tool, arguments, policy)
        except McpError as exc:
            return jsonrpc.encode_error(message.id, exc), exc.code
        except Exception:  # logged with its traceback; boundary, as in dispatch
            logger.exception("internal error in %s", message.method)
            error = McpError(jsonrpc.INTERNAL_ERROR, "Internal error")
            return jsonrpc.encode_error(message.id, error), error.code
        if policy.result_type:
            result = self.finalize(message.method, result)
        if slot is None:
            return _encode(message, result), None
        return self._encode_kept(message, result, slot), None

    async def _complete(self, message: Message, pending: Coroutine[Any, Any, Any], ctx: Context) -> bytes:
        try:
            result = await pending
        except (InputRequired, DetachRequested, Exception) as exc:  # noqa: BLE001 - as in dispatch
            failure = self._failure(message, ctx, exc)
            if type(failure) is bytes:
                return failure
            result = failure
        return self._answer(message, result, ctx)

    def _detached(self, message: Message, ctx: Context) -> JsonObject:
        """ctx.detach(): start the same call again as a task, with the answers so far."""
        params = message.params or EMPTY_PARAMS
        return self._start_extension_task(
            require_str(params, "name"), optional_object(params, "arguments"), ctx
        )

    def _input_required(self, message: Message, ctx: Context) -> bytes:
        """The handler needs answers: the questions and the state to come back with."""
        assert ctx.inputs is not None
        result = input_required_result(ctx.inputs, self.state_codec)
        return _encode(message, self.finalize(message.method, result))

    def finalize(self, method: str, result: Any) -> Any:
        """2026-07-28 result fields: resultType, cache hints, _meta serverInfo.

        A copy: list results are shared by every request, user results are theirs.
        """
        if type(result) is not dict:
            return result
        result = dict(result)
        result.setdefault("resultType", "complete")
        if method in CACHEABLE_METHODS and result["resultType"] == "complete":
            # server/utilities/caching: ttlMs 0 = "may be stale at once"; the lists are the
            # same for every caller, so public; what a resource holds may not be.
            result.setdefault("ttlMs", 0)
            result.setdefault("cacheScope", "private" if method == "resources/read" else "public")
        meta = result.get("_meta")
        meta = dict(meta) if type(meta) is dict else {}
        meta[SERVER_INFO_KEY] = self._server_info_2026
        result["_meta"] = meta
        return result

    async def subscriptions_listen(self, params: JsonObject, ctx: Context) -> JsonObject:
        """Hold the stream open and pass on what the filter asks for, until the client leaves."""
        wanted = params.get("notifications")
        if type(wanted) is not dict:
            raise McpError(INVALID_PARAMS, 'Invalid params: "notifications" must be an object')
        registry = self.server.registry
        offered = {
            "toolsListChanged": bool(registry.tools),
            "promptsListChanged": bool(registry.prompts),
            "resourcesListChanged": bool(registry.resources or registry.templates),
        }
        honoured: JsonObject = {key: True for key, ok in offered.items() if ok and wanted.get(key) is True}
        uris = wanted.get("resourceSubscriptions")
        if uris is not None:
            if not (isinstance(uris, list) and all(isinstance(uri, str) for uri in uris)):
                raise McpError(
                    INVALID_PARAMS, 'Invalid params: "resourceSubscriptions" must be a list of URIs'
                )
            if registry.resources or registry.templates:
                honoured["resourceSubscriptions"] = uris
        listener = Listener(
            ctx.request_id, honoured, ctx.notify_nowait, frozenset(honoured.get("resourceSubscriptions", ()))
        )
        # The acknowledgment comes first: nothing of this subscription before it.
        listener.deliver("notifications/subscriptions/acknowledged", {"notifications": honoured})
        self.hub.add(listener)
        try:
            await ctx.wait_closed()
        finally:
            self.hub.remove(listener)
        return {"_meta": {SUBSCRIPTION_ID_KEY: ctx.request_id}}

    def server_discover(self, params: JsonObject, ctx: Context) -> JsonObject:
        """server/discover (2026-07-28): what initialize used to say, without a session."""
        result: JsonObject = {
            "supportedVersions": list(ADVERTISED_VERSIONS),
            "capabilities": self.capabilities(ctx.policy),
        }
        if self.server.instructions:
            result["instructions"] = self.server.instructions
        return result

    def handle_notification(self, message: Message) -> None:
        """Notifications need no answer; unknown ones are ignored (JSON-RPC 2.0 section 4.1)."""
        if message.method == "notifications/cancelled" or message.method == "notifications/initialized":
            return  # cancellation of in-flight requests is tracked with sessions
        logger.debug("ignored notification %s", message.method)

    # -- lifecycle -----------------------------------------------------------

    def capabilities(self, policy: VersionPolicy | None = None) -> JsonObject:
        registry = self.server.registry
        capabilities: JsonObject = {"logging": {}}
        if (policy is None or policy.tasks) and any(
            tool.task_support in ("optional", "required") for tool in registry.tools.values()
        ):
            capabilities["tasks"] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
        if (policy is not None and policy.tasks_extension) and any(
            tool.task_support in ("optional", "required") for tool in registry.tools.values()
        ):
            capabilities["extensions"] = {TASKS_EXTENSION: {}}
        if registry.tools:
            capabilities["tools"] = {"listChanged": True}
        if registry.resources or registry.templates:
            capabilities["resources"] = {"subscribe": True, "listChanged": True}
        if registry.prompts:
            capabilities["prompts"] = {"listChanged": True}
        if registry.completion is not None:
            capabilities["completions"] = {}
        return capabilities

    def server_info(self, policy: VersionPolicy) -> JsonObject:
        server = self.server
        info: JsonObject = {"name": server.name, "version": server.version}
        if policy.titles and server.title:
            info["title"] = server.title
        if policy.icons:
            if server.icons:
                info["icons"] = server.icons
            if server.website_url:
                info["websiteUrl"] = server.website_url
        return info

    def initialize(self, params: JsonObject, ctx: Context) -> JsonObject:
        version = negotiate(params.get("protocolVersion"))
        result: JsonObject = {
            "protocolVersion": version,
            "capabilities": self.capabilities(POLICIES[version]),
            "serverInfo": self.server_info(POLICIES[version]),
        }
        if self.server.instructions:
            result["instructions"] = self.server.instructions
        return result

    def ping(self, params: JsonObject, ctx: Context) -> JsonObject:
        return {}

    def logging_set_level(self, params: JsonObject, ctx: Context) -> JsonObject:
        level = require_str(params, "level")
        rank = LOG_LEVELS.get(level)
        if rank is None:
            raise McpError(INVALID_PARAMS, f"Invalid params: unknown log level {level!r}")
        if ctx.session is not None:
            ctx.session.log_level = rank
        return {}

    # -- lists ---------------------------------------------------------------

    def _definitions(self, kind: str, policy: VersionPolicy) -> list[dict[str, Any]]:
        """Definitions for a list method, built once per (kind, version, registry edit)."""
        registry = self.server.registry
        key = (kind, policy.version)
        cached = self._list_cache.get(key)
        if cached is not None and cached[0] == registry.version:
            return cached[1]
        sources: dict[str, dict[str, Any]] = {
            "tools": registry.tools,
            "resources": registry.resources,
            "resourceTemplates": registry.templates,
            "prompts": registry.prompts,
        }
        definitions = [item.definition(policy) for item in sources[kind].values()]
        self._list_cache[key] = (registry.version, definitions)
        return definitions

    def _page(self, kind: str, params: JsonObject, policy: VersionPolicy) -> JsonObject:
        definitions = self._definitions(kind, policy)
        start = decode_cursor(params.get("cursor"), len(definitions))
        end = start + self.page_size
        result: JsonObject = {kind: definitions[start:end]}
        if end < len(definitions):
            result["nextCursor"] = encode_cursor(end)
        return result

    def tools_list(self, params: JsonObject, ctx: Context) -> JsonObject:
        return self._page("tools", params, ctx.policy)

    def resources_list(self, params: JsonObject, ctx: Context) -> JsonObject:
        return self._page("resources", params, ctx.policy)

    def resource_templates_list(self, params: JsonObject, ctx: Context) -> JsonObject:
        return self._page("resourceTemplates", params, ctx.policy)

    def prompts_list(self, params: JsonObject, ctx: Context) -> JsonObject:
        return self._page("prompts", params, ctx.policy)

    # -- calls ---------------------------------------------------------------

    def tools_call(self, params: JsonObject, ctx: Context) -> Any:
        name = require_str(params, "name")
        arguments = optional_object(params, "arguments")
        tool = self.server.registry.tools.get(name)
        if tool is not None and tool.task_support is None and (not ctx.policy.tasks or "task" not in params):
            return self.server.run_tool(tool, arguments, ctx)  # the common case: a plain call
        if ctx.policy.tasks_extension:
            tool = self.server.registry.tools.get(name)
            support = tool.task_support if tool is not None else None
            if support in ("optional", "required"):
                if _has_tasks_extension(ctx):
                    assert tool is not None
                    if tool.task_start == "detach":
                        ctx.detachable = True  # runs here until ctx.detach(), then as a task
                        return self.server.call_tool(name, arguments, ctx)
                    return self._start_extension_task(name, arguments, ctx)
                if support == "required":
                    raise _needs_tasks_extension(f"Tool '{name}' runs only as a task")
            return self.server.call_tool(name, arguments, ctx)
        if ctx.policy.tasks:
            task = optional_object(params, "task")
            tool = self.server.registry.tools.get(name)
            support = tool.task_support if tool is not None else None
            if task is not None and tool is not None:
                # tasks.mdx "Tool-Level Negotiation": no support -> -32601.
                if support not in ("optional", "required"):
                    raise McpError(METHOD_NOT_FOUND, f"Tool '{name}' cannot be called as a task")
                return self._start_task(name, arguments, task, ctx)
            if support == "required":
                raise McpError(METHOD_NOT_FOUND, f"Tool '{name}' must be called as a task")
        return self.server.call_tool(name, arguments, ctx)

    async def _tool_work(self, name: str, arguments: JsonObject | None, ctx: Context) -> dict[str, Any]:
        """A tools/call as a task's work: call_tool answers at once or with a coroutine."""
        outcome = self.server.call_tool(name, arguments, ctx)
        result: dict[str, Any] = await outcome if isinstance(outcome, Coroutine) else outcome
        return result

    def _start_task(
        self, name: str, arguments: JsonObject | None, task: JsonObject, ctx: Context
    ) -> JsonObject:
        """Answer at once with a CreateTaskResult; the tool runs on with a detached Context."""
        detached = ctx.detached_copy()

        created = self.tasks.start(ctx.owner, task.get("ttl"), self._tool_work(name, arguments, detached))
        return {"task": created.to_json()}

    def _start_extension_task(self, name: str, arguments: JsonObject | None, ctx: Context) -> JsonObject:
        """The server decides to run the call as a task: answer a CreateTaskResult at once."""
        detached = ctx.detached_copy()
        detached.inputs = ctx.inputs  # answers given before detaching stay answered
        store = self.tasks
        holder: list[Task] = []

        async def ask(questions: dict[str, dict[str, Any]]) -> dict[str, Any]:
            return await store.ask(holder[0], questions)

        detached.asker = ask

        task = store.start("", None, self._tool_work(name, arguments, detached), tool_errors_fail=False)
        holder.append(task)
        return {"resultType": "task", **task.to_extension_json()}

    def _extension_task(self, params: JsonObject, ctx: Context) -> Task:
        if not _has_tasks_extension(ctx):
            raise _needs_tasks_extension("tasks/* needs the tasks extension")
        return self.tasks.get("", params.get("taskId"))

    def extension_tasks_get(self, params: JsonObject, ctx: Context) -> JsonObject:
        return self._extension_task(params, ctx).extension_details_json()

    def tasks_update(self, params: JsonObject, ctx: Context) -> JsonObject:
        task = self._extension_task(params, ctx)
        responses = params.get("inputResponses")
        if not isinstance(responses, dict):
            raise McpError(INVALID_PARAMS, 'Invalid params: "inputResponses" must be an object')
        self.tasks.update(task, responses)
        return {}

    def extension_tasks_cancel(self, params: JsonObject, ctx: Context) -> JsonObject:
        self.tasks.cancel_quietly(self._extension_task(params, ctx))
        return {}

    def tasks_get(self, params: JsonObject, ctx: Context) -> JsonObject:
        return self.tasks.get(ctx.owner, params.get("taskId")).to_json()

    async def tasks_result(self, params: JsonObject, ctx: Context) -> JsonObject:
        return await self.tasks.outcome(ctx.owner, params.get("taskId"))

    def tasks_list(self, params: JsonObject, ctx: Context) -> JsonObject:
        tasks = [task.to_json() for task in self.tasks.list(ctx.owner)]
        start = decode_cursor(params.get("cursor"), len(tasks))
        end = start + self.page_size
        result: JsonObject = {"tasks": tasks[start:end]}
        if end < len(tasks):
            result["nextCursor"] = encode_cursor(end)
        return result

    def tasks_cancel(self, params: JsonObject, ctx: Context) -> JsonObject:
        return self.tasks.cancel(ctx.owner, params.get("taskId")).to_json()

    def resources_read(self, params: JsonObject, ctx: Context) -> Any:
        return self.server.read_resource(require_str(params, "uri"), ctx)

    def resources_subscribe(self, params: JsonObject, ctx: Context) -> JsonObject:
        """Updates go to the session's GET stream (notifications/resources/updated)."""
        uri = require_str(params, "uri")
        self.server.find_resource(uri)
        if ctx.session is not None:
            ctx.session.subscriptions.add(uri)
        return {}

    def resources_unsubscribe(self, params: JsonObject, ctx: Context) -> JsonObject:
        uri = require_str(params, "uri")
        if ctx.session is not None:
            ctx.session.subscriptions.discard(uri)
        return {}

    def prompts_get(self, params: JsonObject, ctx: Context) -> Any:
        name = require_str(params, "name")
        arguments = optional_object(params, "arguments")
        return self.server.get_prompt(name, arguments, ctx)

    def _check_completion_ref(self, ref: JsonObject) -> None:
        """The referenced prompt or resource must exist (server/utilities/completion, errors)."""
        registry = self.server.registry
        kind = ref.get("type")
        if kind == "ref/prompt":
            name = ref.get("name")
            if not isinstance(name, str) or name not in registry.prompts:
                raise McpError(INVALID_PARAMS, f"Invalid params: unknown prompt {ref.get('name')!r}")
        elif kind == "ref/resource":
            uri = ref.get("uri")
            if not isinstance(uri, str) or (uri not in registry.templates and uri not in registry.resources):
                raise McpError(INVALID_PARAMS, f"Invalid params: unknown resource {uri!r}")
        else:
            raise McpError(INVALID_PARAMS, 'Invalid params: "ref.type" must be ref/prompt or ref/resource')

    async def completion_complete(self, params: JsonObject, ctx: Context) -> JsonObject:
        ref = optional_object(params, "ref")
        argument = optional_object(params, "argument")
        if ref is None or argument is None:
            raise McpError(INVALID_PARAMS, 'Invalid params: "ref" and "argument" are required')
        self._check_completion_ref(ref)
        handler = self.server.registry.completion
        assert handler is not None
        value: Any = handler(ref, argument, optional_object(params, "context"))
        if inspect.isawaitable(value):
            value = await value
        if isinstance(value, dict):
            return {"completion": value}
        values = [str(item) for item in value or ()]
        # server/utilities/completion: at most 100 values per response.
        return {"completion": {"values": values[:100], "total": len(values), "hasMore": len(values) > 100}}
