"""The MCP method table: one small function per method, looked up by name, per protocol version.

The dispatcher knows nothing of HTTP or of the transports. It takes a ``Call`` and its
``Context`` and returns the method's result, or a coroutine that produces it. A failure is
raised as ``McpError``; an input-required round and ``ctx.detach()`` become results; a bug is
logged and becomes -32603. Encoding, the result cache and middleware are the pipeline's
(``mcp_fast.pipeline``). Method functions take ``(params, ctx)``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from types import CoroutineType
from typing import Any, Final

from mcp_fast.call import Call
from mcp_fast.context import Context
from mcp_fast.dispatch.handlers import find_resource, get_prompt, read_resource, run_plain_tool, run_tool
from mcp_fast.dispatch.lists import Lists
from mcp_fast.dispatch.params import EMPTY_PARAMS, optional_object, require_str
from mcp_fast.dispatch.subscriptions import SUBSCRIPTION_ID_KEY, Listener, SubscriptionHub
from mcp_fast.dispatch.task_methods import TaskMethods, has_tasks_extension, needs_tasks_extension
from mcp_fast.dispatch.tasks import TaskStore
from mcp_fast.protocol.envelope import TASKS_EXTENSION
from mcp_fast.protocol.input_required import (
    INPUT_METHODS,
    DetachRequested,
    InputRequired,
    StateCodec,
    input_required_result,
    open_round,
)
from mcp_fast.protocol.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, JsonObject, McpError
from mcp_fast.protocol.spec import LOG_LEVELS
from mcp_fast.protocol.versions import ADVERTISED_VERSIONS, POLICIES, VersionPolicy, negotiate
from mcp_fast.server import MCPServer

logger = logging.getLogger("mcp_fast.dispatch")

# A method returns its result, or a coroutine when it has to wait.
Method = Callable[[JsonObject, Context], Any]

SERVER_INFO_KEY: Final = "io.modelcontextprotocol/serverInfo"
# Results that carry cache hints from 2026-07-28 (server/utilities/caching).
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


class Dispatcher:
    """Routes the requests of every protocol version to their method."""

    def __init__(
        self, server: MCPServer, *, page_size: int = 100, state_codec: StateCodec | None = None
    ) -> None:
        self.server = server
        self.registry = server.registry
        self.state_codec = state_codec or StateCodec()
        self.lists = Lists(self.registry, page_size)
        self.tasks = TaskStore()
        self.task_methods = TaskMethods(self.registry, self.tasks, page_size)
        self.hub = SubscriptionHub()
        server.on_list_changed(self.hub.list_changed)
        server.on_resource_updated(self.hub.resource_updated)
        self._server_info_2026 = self.server_info(POLICIES["2026-07-28"])
        self._meta_2026 = {SERVER_INFO_KEY: self._server_info_2026}
        tasks = self.task_methods
        methods: dict[str, Method] = {
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
            "tasks/get": tasks.tasks_get,
            "tasks/result": tasks.tasks_result,
            "tasks/list": tasks.tasks_list,
            "tasks/cancel": tasks.tasks_cancel,
            "server/discover": self.server_discover,
            "subscriptions/listen": self.subscriptions_listen,
        }
        if self.registry.completion is not None:
            methods["completion/complete"] = self.completion_complete
        # The method table of each protocol version (2026-07-28 drops ping, initialize, ...).
        extension_methods: dict[str, Method] = {
            "tasks/get": tasks.extension_tasks_get,
            "tasks/update": tasks.tasks_update,
            "tasks/cancel": tasks.extension_tasks_cancel,
        }
        self._tables: dict[str, dict[str, Method]] = {}
        for version, policy in POLICIES.items():
            impls = {**methods, **extension_methods} if policy.tasks_extension else methods
            self._tables[version] = {name: impl for name, impl in impls.items() if name in policy.methods}

    # -- entry points --------------------------------------------------------

    def dispatch(self, call: Call, ctx: Context) -> Any:
        """Run one request: its result, or a coroutine that produces it (raises McpError).

        Method functions return their result directly when they need not wait (lists, ping,
        inline tools), so the common request creates no coroutine.
        """
        method = self._tables[call.policy.version].get(call.method)
        if method is None:
            raise McpError(METHOD_NOT_FOUND, f"Method not found: {call.method}")
        params = call.params or EMPTY_PARAMS
        try:
            if not call.policy.handshake and call.method in INPUT_METHODS:
                ctx.inputs = open_round(call.method, params, self.state_codec)
            result = method(params, ctx)
        except (InputRequired, DetachRequested, Exception) as exc:  # noqa: BLE001 - _failure answers each kind
            return self._failure(call, ctx, exc)
        if type(result) is CoroutineType:
            return self._settle(call, ctx, result)
        return result

    async def _settle(self, call: Call, ctx: Context, pending: CoroutineType[Any, Any, Any]) -> Any:
        try:
            return await pending
        except (InputRequired, DetachRequested, Exception) as exc:  # noqa: BLE001 - as in dispatch
            result = self._failure(call, ctx, exc)
        if type(result) is CoroutineType:  # a task that a fleet must know of first
            return await result
        return result

    def _failure(self, call: Call, ctx: Context, exc: InputRequired | DetachRequested | Exception) -> Any:
        """What a method's exception answers: an input-required result, the CreateTaskResult of
        ``ctx.detach()``, or (raised) the JSON-RPC error; a bug is logged, never shown to the client."""
        if isinstance(exc, McpError):
            raise exc
        if isinstance(exc, InputRequired):
            assert ctx.inputs is not None
            return input_required_result(ctx.inputs, self.state_codec)
        if isinstance(exc, DetachRequested):
            # Start the same call again as a task, with the answers so far.
            params = call.params or EMPTY_PARAMS
            name, arguments = require_str(params, "name"), optional_object(params, "arguments")
            return self.task_methods.start_extension_task(name, arguments, ctx)
        logger.error("internal error in %s", call.method, exc_info=exc)
        raise McpError(INTERNAL_ERROR, "Internal error") from None

    def call_plain(self, call: Call) -> Any:
        """A tools/call of a ``plain`` tool (inline, no Context, no task): its result, without a
        Context at all; None when the request is anything else (the general path takes it,
        errors and all). Most tool calls are plain functions with nothing to ask or report."""
        params = call.params
        if call.method != "tools/call" or params is None:
            return None
        name = params.get("name")
        arguments = params.get("arguments")
        if type(name) is not str or (arguments is not None and type(arguments) is not dict):
            return None
        tool = self.registry.tools.get(name)
        policy = call.policy
        if tool is None or not tool.plain or (policy.tasks and "task" in params):
            return None
        if not policy.handshake and ("requestState" in params or "inputResponses" in params):
            return None  # 2026-07-28: the general path checks what came back from a round
        try:
            return run_plain_tool(tool, arguments, call, self.registry.offload_after)
        except McpError:
            raise
        except Exception as exc:
            logger.error("internal error in %s", call.method, exc_info=exc)
            raise McpError(INTERNAL_ERROR, "Internal error") from None

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
        if meta is None:
            result["_meta"] = self._meta_2026  # shared by every answer: serialized, never changed
            return result
        meta = dict(meta) if type(meta) is dict else {}
        meta[SERVER_INFO_KEY] = self._server_info_2026
        result["_meta"] = meta
        return result

    def handle_notification(self, method: str) -> None:
        """Notifications need no answer; unknown ones are ignored (JSON-RPC 2.0 section 4.1)."""
        if method != "notifications/initialized":
            logger.debug("ignored notification %s", method)

    # -- lifecycle -----------------------------------------------------------

    def capabilities(self, policy: VersionPolicy | None = None) -> JsonObject:
        registry = self.registry
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

    def server_discover(self, params: JsonObject, ctx: Context) -> JsonObject:
        """server/discover (2026-07-28): what initialize used to say, without a session."""
        result: JsonObject = {
            "supportedVersions": list(ADVERTISED_VERSIONS),
            "capabilities": self.capabilities(ctx.policy),
        }
        if self.server.instructions:
            result["instructions"] = self.server.instructions
        return result

    # -- lists ---------------------------------------------------------------

    def tools_list(self, params: JsonObject, ctx: Context) -> JsonObject:
        return self.lists.tools_page(params, ctx.call)

    def resources_list(self, params: JsonObject, ctx: Context) -> JsonObject:
        return self.lists.page("resources", params, ctx.policy)

    def resource_templates_list(self, params: JsonObject, ctx: Context) -> JsonObject:
        return self.lists.page("resourceTemplates", params, ctx.policy)

    def prompts_list(self, params: JsonObject, ctx: Context) -> JsonObject:
        return self.lists.page("prompts", params, ctx.policy)

    async def subscriptions_listen(self, params: JsonObject, ctx: Context) -> JsonObject:
        """Hold the stream open and pass on what the filter asks for, until the client leaves."""
        wanted = params.get("notifications")
        if type(wanted) is not dict:
            raise McpError(INVALID_PARAMS, 'Invalid params: "notifications" must be an object')
        registry = self.registry
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

    # -- calls ---------------------------------------------------------------

    def tools_call(self, params: JsonObject, ctx: Context) -> Any:
        name = require_str(params, "name")
        arguments = optional_object(params, "arguments")
        tool = self.registry.tools.get(name)
        policy = ctx.policy
        if tool is not None and tool.task_support is None and (not policy.tasks or "task" not in params):
            return run_tool(tool, arguments, ctx)  # the common case: a plain call
        support = tool.task_support if tool is not None else None
        if policy.tasks_extension:
            if support in ("optional", "required"):
                if has_tasks_extension(ctx):
                    assert tool is not None
                    if tool.task_start == "detach":
                        ctx.detachable = True  # runs here until ctx.detach(), then as a task
                        return run_tool(tool, arguments, ctx)
                    return self.task_methods.start_extension_task(name, arguments, ctx)
                if support == "required":
                    raise needs_tasks_extension(f"Tool '{name}' runs only as a task")
        elif policy.tasks:
            task = optional_object(params, "task")
            if task is not None and tool is not None:
                # tasks.mdx "Tool-Level Negotiation": no support -> -32601.
                if support not in ("optional", "required"):
                    raise McpError(METHOD_NOT_FOUND, f"Tool '{name}' cannot be called as a task")
                return self.task_methods.start_task(name, arguments, task, ctx)
            if support == "required":
                raise McpError(METHOD_NOT_FOUND, f"Tool '{name}' must be called as a task")
        if tool is None:
            raise McpError(INVALID_PARAMS, f"Unknown tool: {name}")
        return run_tool(tool, arguments, ctx)

    def resources_read(self, params: JsonObject, ctx: Context) -> Any:
        return read_resource(self.registry, require_str(params, "uri"), ctx)

    def resources_subscribe(self, params: JsonObject, ctx: Context) -> JsonObject:
        """Updates go to the session's GET stream (notifications/resources/updated)."""
        uri = require_str(params, "uri")
        find_resource(self.registry, uri)
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
        return get_prompt(self.registry, name, arguments, ctx)

    def _check_completion_ref(self, ref: JsonObject) -> None:
        """The referenced prompt or resource must exist (server/utilities/completion, errors)."""
        registry = self.registry
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
        handler = self.registry.completion
        assert handler is not None
        value: Any = handler(ref, argument, optional_object(params, "context"))
        if inspect.isawaitable(value):
            value = await value
        if isinstance(value, dict):
            return {"completion": value}
        values = [str(item) for item in value or ()]
        # server/utilities/completion: at most 100 values per response.
        return {"completion": {"values": values[:100], "total": len(values), "hasMore": len(values) > 100}}
