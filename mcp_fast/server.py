"""The server API: ``MCPServer`` and its ``@tool``, ``@resource``, ``@prompt`` decorators.

How handlers run (the event loop must never stall):
- ``async def`` handlers run as their own asyncio Task, so ``asyncio.timeout``,
  TaskGroups, anyio cancel scopes and cancellation work as usual.
- plain ``def`` handlers run in the loop's thread pool by default, so a blocking
  call cannot stall other clients.
- ``inline=True`` runs a plain ``def`` handler directly on the event loop: the
  fastest path (no task, no thread), for handlers that only compute briefly.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, TypeVar, Unpack

import orjson
import pydantic

from mcp_fast.content import Content, ToolError, ToolResult, is_content_block
from mcp_fast.context import Context
from mcp_fast.protocol.envelope import header_params
from mcp_fast.protocol.jsonrpc import INVALID_PARAMS, RESOURCE_NOT_FOUND, McpError
from mcp_fast.protocol.jsonrpc import dumps as jsonrpc_dumps
from mcp_fast.protocol.versions import VersionPolicy
from mcp_fast.schema import (
    OutputSpec,
    Signature,
    describe_validation_error,
    explicit_signature,
    inspect_signature,
    output_spec,
    parse_docstring,
)

logger = logging.getLogger("mcp_fast.server")

F = TypeVar("F", bound=Callable[..., Any])
# Tasks (2025-11-25): may a client call the tool as a task, or must it?
TaskSupport = Literal["forbidden", "optional", "required"]
# Who may share a cached result: every caller, or only the one who asked (server/utilities/caching).
CacheScope = Literal["public", "private"]


class ToolOptions(TypedDict, total=False):
    """What ``@server.tool(...)`` and ``server.add_tool(func, ...)`` take besides the function.

    ``annotations`` take the spec's names (readOnlyHint, destructiveHint, idempotentHint,
    openWorldHint, title). ``structured_output=False`` turns off outputSchema/structuredContent
    for a typed return value. ``input_schema`` replaces the schema derived from type hints:
    arguments are then passed as keyword arguments without validation. ``inline=True`` runs a
    plain ``def`` on the event loop. ``task_support`` ("optional" or "required") lets clients
    call the tool as a task (2025-11-25, and the 2026 tasks extension); ``task_start="detach"``
    answers input-required rounds first and becomes a task at ``ctx.detach()``.
    ``cache_ttl`` (seconds) declares that the result depends only on the arguments for that
    long: the in-process result cache answers repeated calls (``--cache-size``);
    ``cache_scope="public"`` shares a result between callers, the default ``"private"`` keeps
    one per session or Authorization header (and caches nothing for anonymous callers).
    """

    title: str | None
    description: str | None
    annotations: Mapping[str, Any] | None
    icons: list[dict[str, Any]] | None
    structured_output: bool | None
    input_schema: dict[str, Any] | None
    inline: bool
    meta: dict[str, Any] | None
    task_support: TaskSupport | None
    task_start: Literal["call", "detach"]
    cache_ttl: float | None
    cache_scope: CacheScope


class RunMode(enum.Enum):
    TASK = "task"  # async def: its own Task
    THREAD = "thread"  # def: the loop's default executor
    INLINE = "inline"  # def with inline=True: called on the loop


def _run_mode(func: Callable[..., Any], inline: bool) -> RunMode:
    if inspect.iscoroutinefunction(func):
        return RunMode.TASK
    return RunMode.INLINE if inline else RunMode.THREAD


async def invoke(
    func: Callable[..., Any], mode: RunMode, kwargs: dict[str, Any], ctx: Context | None = None
) -> Any:
    """Run a user handler as its RunMode says and return what it returned.

    A Task handler is registered on its Context so notifications/cancelled can
    cancel it; a thread cannot be stopped, its result is dropped instead.
    """
    if mode is RunMode.INLINE:
        return func(**kwargs)
    loop = asyncio.get_running_loop()
    if mode is RunMode.TASK:
        task = loop.create_task(func(**kwargs))
        if ctx is not None:
            ctx.task = task
        return await task
    return await loop.run_in_executor(None, functools.partial(func, **kwargs))


def _drop_none(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value is not None}


@dataclass(slots=True)
class Tool:
    name: str
    title: str | None
    description: str
    func: Callable[..., Any]
    mode: RunMode
    signature: Signature
    output: OutputSpec | None
    annotations: dict[str, Any] | None
    icons: list[dict[str, Any]] | None
    meta: dict[str, Any] | None
    task_support: TaskSupport | None = None
    # "call": a task from the start; "detach": answer questions first, then ctx.detach().
    task_start: Literal["call", "detach"] = "call"
    # Arguments mirrored into Mcp-Param-* headers (2026-07-28 x-mcp-header).
    header_params: tuple[tuple[str, bytes, str], ...] = ()
    # The result depends only on the arguments for this many seconds: the result cache keeps it.
    cache_ttl: float | None = None
    cache_scope: CacheScope = "private"  # "public": the same for every caller
    # Called on the loop, takes no Context, never a task: such a call needs no Context at all.
    plain: bool = field(init=False)

    def __post_init__(self) -> None:
        self.plain = (
            self.mode is RunMode.INLINE and self.signature.context_param is None and self.task_support is None
        )

    def definition(self, policy: VersionPolicy) -> dict[str, Any]:
        """The tools/list entry, shaped for the version in force."""
        entry: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.signature.input_schema,
        }
        if policy.titles and self.title:
            entry["title"] = self.title
        if policy.structured_output and self.output is not None:
            entry["outputSchema"] = self.output.schema
        if self.annotations:
            entry["annotations"] = self.annotations
        if policy.icons and self.icons:
            entry["icons"] = self.icons
        if policy.tasks and self.task_support is not None:
            entry["execution"] = {"taskSupport": self.task_support}
        if self.meta:
            entry["_meta"] = self.meta
        return entry


@dataclass(slots=True)
class Resource:
    uri: str  # a URI, or an RFC 6570 level-1 template such as test://template/{id}/data
    name: str
    title: str | None
    description: str | None
    mime_type: str | None
    func: Callable[..., Any]
    mode: RunMode
    signature: Signature
    pattern: re.Pattern[str] | None  # set for templates
    annotations: dict[str, Any] | None
    icons: list[dict[str, Any]] | None
    size: int | None
    cache_ttl: float | None = None  # seconds a read stays valid: result cache and 2026 ttlMs
    cache_scope: CacheScope = "private"

    def definition(self, policy: VersionPolicy) -> dict[str, Any]:
        key = "uriTemplate" if self.pattern is not None else "uri"
        entry: dict[str, Any] = {key: self.uri, "name": self.name}
        if policy.titles and self.title:
            entry["title"] = self.title
        entry.update(
            _drop_none(
                {
                    "description": self.description,
                    "mimeType": self.mime_type,
                    "annotations": self.annotations,
                    "size": self.size,
                }
            )
        )
        if policy.icons and self.icons:
            entry["icons"] = self.icons
        return entry


@dataclass(slots=True)
class Prompt:
    name: str
    title: str | None
    description: str | None
    func: Callable[..., Any]
    mode: RunMode
    signature: Signature
    icons: list[dict[str, Any]] | None

    def definition(self, policy: VersionPolicy) -> dict[str, Any]:
        arguments = [
            _drop_none(
                {
                    "name": name,
                    "description": self.signature.descriptions.get(name),
                    "required": name in self.signature.required,
                }
            )
            for name in self.signature.argument_names
        ]
        entry: dict[str, Any] = {"name": self.name, "arguments": arguments}
        if policy.titles and self.title:
            entry["title"] = self.title
        if self.description:
            entry["description"] = self.description
        if policy.icons and self.icons:
            entry["icons"] = self.icons
        return entry


CompletionHandler = Callable[..., Awaitable[Any] | Any]

_TEMPLATE_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def compile_template(template: str) -> re.Pattern[str] | None:
    """RFC 6570 level-1 ``{var}`` expressions to a regex; None when ``template`` is a plain URI."""
    if "{" not in template:
        return None
    parts: list[str] = []
    position = 0
    for match in _TEMPLATE_VAR.finditer(template):
        parts.append(re.escape(template[position : match.start()]))
        parts.append(f"(?P<{match.group(1)}>[^/?#]+)")
        position = match.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts))


@dataclass
class Registry:
    """Everything the server offers. ``version`` changes on every edit so cached lists refresh."""

    tools: dict[str, Tool] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    templates: dict[str, Resource] = field(default_factory=dict)
    prompts: dict[str, Prompt] = field(default_factory=dict)
    completion: CompletionHandler | None = None
    version: int = 0


class MCPServer:
    """An MCP server: register handlers with the decorators, serve with ``mcp_fast.serve``."""

    def __init__(
        self,
        name: str,
        version: str = "0.1.0",
        *,
        title: str | None = None,
        instructions: str | None = None,
        icons: list[dict[str, Any]] | None = None,
        website_url: str | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.title = title
        self.instructions = instructions
        self.icons = icons
        self.website_url = website_url
        self.registry = Registry()
        self._changed_listeners: list[Callable[[str], None]] = []
        self._resource_listeners: list[Callable[[str], None]] = []
        self._invalidation_listeners: list[Callable[[str | None, str | None], None]] = []

    # -- registration ------------------------------------------------------

    def tool(self, name: str | None = None, **options: Unpack[ToolOptions]) -> Callable[[F], F]:
        """Register a tool. Its input schema comes from the type hints, its description from
        the docstring (``Args:`` lines describe parameters); the options are ``ToolOptions``."""

        def register(func: F) -> F:
            self.add_tool(func, name=name, **options)
            return func

        return register

    def add_tool(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        annotations: Mapping[str, Any] | None = None,
        icons: list[dict[str, Any]] | None = None,
        structured_output: bool | None = None,
        input_schema: dict[str, Any] | None = None,
        inline: bool = False,
        meta: dict[str, Any] | None = None,
        task_support: TaskSupport | None = None,
        task_start: Literal["call", "detach"] = "call",
        cache_ttl: float | None = None,
        cache_scope: CacheScope = "private",
    ) -> Tool:
        """Register ``func`` as a tool (``ToolOptions`` says what each option does)."""
        if cache_ttl is not None and not cache_ttl > 0:
            raise ValueError("cache_ttl must be a positive number of seconds")
        if cache_ttl is not None and task_support is not None:
            raise ValueError("cache_ttl with task_support: a tool that runs as a task has no result to cache")
        tool_name = name or func.__name__
        if input_schema is not None:
            signature = explicit_signature(func, Context, input_schema)
        else:
            signature = inspect_signature(func, Context, f"{tool_name}Arguments", strict=True)
        output = None if structured_output is False else output_spec(func)
        tool = Tool(
            name=tool_name,
            title=title,
            description=description or parse_docstring(func).summary,
            func=func,
            mode=_run_mode(func, inline),
            signature=signature,
            output=output,
            annotations=dict(annotations) if annotations else None,
            icons=icons,
            meta=meta,
            task_support=task_support,
            task_start=task_start,
            header_params=header_params(signature.input_schema),
            cache_ttl=cache_ttl,
            cache_scope=cache_scope,
        )
        self.registry.tools[tool_name] = tool
        self._changed("tools")
        return tool

    def remove_tool(self, name: str) -> None:
        if self.registry.tools.pop(name, None) is not None:
            self._changed("tools")

    def resource(
        self,
        uri: str,
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        mime_type: str | None = None,
        annotations: Mapping[str, Any] | None = None,
        icons: list[dict[str, Any]] | None = None,
        size: int | None = None,
        inline: bool = False,
        cache_ttl: float | None = None,
        cache_scope: CacheScope = "private",
    ) -> Callable[[F], F]:
        """Register a resource at ``uri``, or a resource template when ``uri``
        holds ``{var}`` expressions (their values are passed as arguments).

        The handler returns str (text), bytes (blob), or a list of contents dicts.
        ``cache_ttl`` (seconds): how long a read stays valid -- the result cache keeps it
        and 2026-07-28 clients get it as ``ttlMs`` with ``cacheScope`` (``cache_scope``:
        "public" for content that is the same for every caller, default "private").
        ``notify_resource_updated(uri)`` drops the cached read at once.
        """
        if cache_ttl is not None and not cache_ttl > 0:
            raise ValueError("cache_ttl must be a positive number of seconds")

        def register(func: F) -> F:
            pattern = compile_template(uri)
            resource = Resource(
                uri=uri,
                name=name or func.__name__,
                title=title,
                description=description or parse_docstring(func).summary or None,
                mime_type=mime_type,
                func=func,
                mode=_run_mode(func, inline),
                signature=inspect_signature(func, Context, f"{func.__name__}Arguments", strict=False),
                pattern=pattern,
                annotations=dict(annotations) if annotations else None,
                icons=icons,
                size=size,
                cache_ttl=cache_ttl,
                cache_scope=cache_scope,
            )
            if pattern is None:
                self.registry.resources[uri] = resource
            else:
                self.registry.templates[uri] = resource
            self._changed("resources")
            return func

        return register

    def prompt(
        self,
        name: str | None = None,
        *,
        title: str | None = None,
        description: str | None = None,
        icons: list[dict[str, Any]] | None = None,
        inline: bool = False,
    ) -> Callable[[F], F]:
        """Register a prompt; its arguments are the handler's parameters (strings on the wire).

        The handler returns a str (one user message), a list of messages
        (``{"role": ..., "content": {...}}``), or a full GetPromptResult dict.
        """

        def register(func: F) -> F:
            prompt_name = name or func.__name__
            self.registry.prompts[prompt_name] = Prompt(
                name=prompt_name,
                title=title,
                description=description or parse_docstring(func).summary or None,
                func=func,
                mode=_run_mode(func, inline),
                signature=inspect_signature(func, Context, f"{prompt_name}Arguments", strict=False),
                icons=icons,
            )
            self._changed("prompts")
            return func

        return register

    def completion(self) -> Callable[[F], F]:
        """Register the completion/complete handler: ``(ref, argument, context) -> list[str] | dict``."""

        def register(func: F) -> F:
            self.registry.completion = func
            return func

        return register

    def notify_list_changed(self, kind: str) -> None:
        """Announce that the "tools", "resources" or "prompts" list changed (list_changed)."""
        self._changed(kind)

    def notify_resource_updated(self, uri: str) -> None:
        """Tell subscribed clients that ``uri`` changed (notifications/resources/updated
        on the GET stream of every session that subscribed to it in this process)."""
        for listener in self._resource_listeners:
            listener(uri)

    def invalidate_cache(self, *, tool: str | None = None, uri: str | None = None) -> None:
        """Drop cached results: of ``tool``, of the resource at ``uri``, or (neither) all.

        For data that changed before its ``cache_ttl`` ran out. Per process, as the cache is.
        """
        for listener in self._invalidation_listeners:
            listener(tool, uri)

    def on_invalidate(self, listener: Callable[[str | None, str | None], None]) -> None:
        self._invalidation_listeners.append(listener)

    def on_resource_updated(self, listener: Callable[[str], None]) -> None:
        self._resource_listeners.append(listener)

    def on_list_changed(self, listener: Callable[[str], None]) -> None:
        """Called with "tools", "resources" or "prompts" whenever the registry changes."""
        self._changed_listeners.append(listener)

    def _changed(self, kind: str) -> None:
        self.registry.version += 1
        for listener in self._changed_listeners:
            listener(kind)

    # -- invocation --------------------------------------------------------

    def call_tool(self, name: str, arguments: Any, ctx: Context) -> Any:
        """tools/call: validate, run, and shape the CallToolResult.

        Returns the result, or a coroutine producing it when the tool runs as a
        Task or in a thread; an inline tool costs no coroutine at all.
        """
        tool = self.registry.tools.get(name)
        if tool is None:
            raise McpError(INVALID_PARAMS, f"Unknown tool: {name}")
        return self.run_tool(tool, arguments, ctx)

    def run_tool(self, tool: Tool, arguments: Any, ctx: Context) -> Any:
        """call_tool once the tool is known (the dispatcher looked it up already)."""
        try:
            kwargs = _validate(tool.signature, arguments or {})
        except pydantic.ValidationError as exc:
            return _invalid_arguments(tool.name, exc, ctx.policy)
        if tool.signature.context_param is not None:
            kwargs[tool.signature.context_param] = ctx
        if tool.mode is not RunMode.INLINE:
            return self._run_tool(tool, kwargs, ctx)
        return _call_inline(tool, kwargs, ctx.policy)

    def run_plain_tool(self, tool: Tool, arguments: Any, policy: VersionPolicy) -> dict[str, Any]:
        """A ``plain`` tool (inline, no Context): validate, call, shape -- nothing else is needed."""
        try:
            kwargs = _validate(tool.signature, arguments or {})
        except pydantic.ValidationError as exc:
            return _invalid_arguments(tool.name, exc, policy)
        return _call_inline(tool, kwargs, policy)

    async def _run_tool(self, tool: Tool, kwargs: dict[str, Any], ctx: Context) -> dict[str, Any]:
        try:
            value = await invoke(tool.func, tool.mode, kwargs, ctx)
        except Exception as exc:  # noqa: BLE001 - logged with its traceback; as in call_tool
            return _tool_failed(tool.name, exc)
        return tool_result(value, tool.output, ctx.policy)

    def find_resource(self, uri: str, not_found: int = RESOURCE_NOT_FOUND) -> tuple[Resource, dict[str, str]]:
        resource = self.registry.resources.get(uri)
        if resource is not None:
            return resource, {}
        for template in self.registry.templates.values():
            assert template.pattern is not None
            match = template.pattern.fullmatch(uri)
            if match is not None:
                return template, match.groupdict()
        raise McpError(not_found, f"Resource not found: {uri}", {"uri": uri})

    def read_resource(self, uri: str, ctx: Context) -> Any:
        """resources/read: the result, or a coroutine producing it."""
        resource, variables = self.find_resource(uri, ctx.policy.resource_not_found)
        try:
            kwargs = _validate(resource.signature, variables)
        except pydantic.ValidationError as exc:
            message = f"Invalid resource URI {uri}: {describe_validation_error(exc)}"
            raise McpError(INVALID_PARAMS, message) from None
        if resource.signature.context_param is not None:
            kwargs[resource.signature.context_param] = ctx
        if resource.mode is not RunMode.INLINE:
            return self._read_resource(uri, resource, kwargs, ctx.policy)
        return _read_result(uri, resource, resource.func(**kwargs), ctx.policy)

    async def _read_resource(
        self, uri: str, resource: Resource, kwargs: dict[str, Any], policy: VersionPolicy
    ) -> dict[str, Any]:
        value = await invoke(resource.func, resource.mode, kwargs)
        return _read_result(uri, resource, value, policy)

    def get_prompt(self, name: str, arguments: Any, ctx: Context) -> Any:
        """prompts/get: the result, or a coroutine producing it."""
        prompt = self.registry.prompts.get(name)
        if prompt is None:
            raise McpError(INVALID_PARAMS, f"Unknown prompt: {name}")
        try:
            kwargs = _validate(prompt.signature, arguments or {})
        except pydantic.ValidationError as exc:
            message = f"Invalid arguments for prompt '{name}': {describe_validation_error(exc)}"
            raise McpError(INVALID_PARAMS, message) from None
        if prompt.signature.context_param is not None:
            kwargs[prompt.signature.context_param] = ctx
        if prompt.mode is not RunMode.INLINE:
            return self._get_prompt(prompt, kwargs)
        return prompt_result(prompt.func(**kwargs), prompt.description)

    async def _get_prompt(self, prompt: Prompt, kwargs: dict[str, Any]) -> dict[str, Any]:
        return prompt_result(await invoke(prompt.func, prompt.mode, kwargs), prompt.description)


def _read_result(uri: str, resource: Resource, value: Any, policy: VersionPolicy) -> dict[str, Any]:
    """A ReadResourceResult; from 2026-07-28 with the resource's declared cache hints."""
    result: dict[str, Any] = {"contents": resource_contents(uri, resource.mime_type, value)}
    if policy.cache_hints and resource.cache_ttl is not None:
        result["ttlMs"] = int(resource.cache_ttl * 1000)
        result["cacheScope"] = resource.cache_scope
    return result


def _tool_failed(name: str, exc: Exception) -> dict[str, Any]:
    """A tool raised: ToolError -> its message; McpError -> a JSON-RPC error; else logged."""
    if isinstance(exc, McpError):
        raise exc
    if isinstance(exc, ToolError):
        return _error_result(str(exc))
    logger.error("tool %r raised", name, exc_info=exc)
    return _error_result(f"Tool '{name}' failed: {exc}")


def _invalid_arguments(name: str, exc: pydantic.ValidationError, policy: VersionPolicy) -> dict[str, Any]:
    """Arguments that fail the schema: an isError result (2025-11-25 on), -32602 before."""
    message = f"Invalid arguments for tool '{name}': {describe_validation_error(exc)}"
    if policy.input_errors_as_tool_errors:
        return _error_result(message)
    raise McpError(INVALID_PARAMS, message) from None


def _call_inline(tool: Tool, kwargs: dict[str, Any], policy: VersionPolicy) -> dict[str, Any]:
    """Call an inline tool on the loop and shape its CallToolResult."""
    try:
        value = tool.func(**kwargs)
    except Exception as exc:  # noqa: BLE001 - logged with its traceback; the tool's own failure becomes an isError result
        return _tool_failed(tool.name, exc)
    return tool_result(value, tool.output, policy)


def _validate(signature: Signature, arguments: dict[str, Any]) -> dict[str, Any]:
    if signature.validator is None:
        return dict(arguments)
    kwargs: dict[str, Any] = signature.validator.validate_python(arguments)
    return kwargs


def _error_result(message: str) -> dict[str, Any]:
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
            return _error_result("The tool produced a number JSON cannot represent (NaN or infinity)")
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


def resource_contents(uri: str, mime_type: str | None, value: Any) -> list[dict[str, Any]]:
    """Turn what a resource handler returned into ResourceContents entries."""
    import base64

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
