"""Calling the user's handlers: validate the arguments, run the function as its RunMode says,
shape what it returned into the MCP result.

How handlers run (the event loop must never stall):
- ``async def`` handlers run as their own asyncio Task, so ``asyncio.timeout``, TaskGroups,
  anyio cancel scopes and cancellation work as usual.
- plain ``def`` handlers run in the loop's thread pool by default, so a blocking call cannot
  stall other clients.
- ``inline=True`` runs a plain ``def`` handler directly on the event loop: the fastest path
  (no task, no thread), for handlers that only compute briefly.

Each ``run_*`` returns the result at once when the handler ran on the loop, or a coroutine that
produces it: an inline call costs no coroutine at all.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

import pydantic

from mcp_fast.call import Call
from mcp_fast.content import ToolError
from mcp_fast.context import Context
from mcp_fast.protocol.jsonrpc import INVALID_PARAMS, RESOURCE_NOT_FOUND, McpError
from mcp_fast.protocol.versions import VersionPolicy
from mcp_fast.registry import Prompt, Registry, Resource, RunMode, Tool
from mcp_fast.results import error_result, prompt_result, read_result, tool_result
from mcp_fast.schema import Signature, describe_validation_error

logger = logging.getLogger("mcp_fast.server")


async def invoke(
    func: Callable[..., Any], mode: RunMode, kwargs: dict[str, Any], call: Call | None = None
) -> Any:
    """Run a user handler as its RunMode says and return what it returned.

    What runs it (its Task, or the thread's future) is registered on ``call`` so that a
    cancellation stops the wait at once; a thread cannot be stopped, its result is dropped.
    """
    if mode is RunMode.INLINE:
        return func(**kwargs)
    if call is not None and call.cancelled:
        raise asyncio.CancelledError  # cancelled while a middleware was still busy with it
    loop = asyncio.get_running_loop()
    running: asyncio.Future[Any]
    if mode is RunMode.TASK:
        running = loop.create_task(func(**kwargs))
    else:
        running = loop.run_in_executor(None, functools.partial(func, **kwargs))
    if call is not None:
        call.running = running
    return await running


def call_tool(registry: Registry, name: str, arguments: Any, ctx: Context) -> Any:
    """tools/call by name: the result, or a coroutine producing it; an unknown tool is -32602."""
    tool = registry.tools.get(name)
    if tool is None:
        raise McpError(INVALID_PARAMS, f"Unknown tool: {name}")
    return run_tool(tool, arguments, ctx)


def run_tool(tool: Tool, arguments: Any, ctx: Context) -> Any:
    """tools/call once the tool is known: validate, run, and shape the CallToolResult."""
    try:
        kwargs = validate(tool.signature, arguments or {})
    except pydantic.ValidationError as exc:
        return _invalid_arguments(tool.name, exc, ctx.policy)
    if tool.signature.context_param is not None:
        kwargs[tool.signature.context_param] = ctx
    if tool.mode is not RunMode.INLINE:
        return _run_tool(tool, kwargs, ctx)
    return _call_inline(tool, kwargs, ctx.policy)


def run_plain_tool(tool: Tool, arguments: Any, policy: VersionPolicy) -> dict[str, Any]:
    """A ``plain`` tool (inline, no Context): validate, call, shape -- nothing else is needed.
    ``validate`` and ``_call_inline`` in one frame: most tool calls come this way."""
    validator = tool.signature.validator
    try:
        kwargs = dict(arguments or ()) if validator is None else validator.validate_python(arguments or {})
    except pydantic.ValidationError as exc:
        return _invalid_arguments(tool.name, exc, policy)
    try:
        value = tool.func(**kwargs)
    except Exception as exc:  # noqa: BLE001 - logged with its traceback; the tool's own failure becomes an isError result
        return _tool_failed(tool.name, exc)
    return tool_result(value, tool.output, policy)


async def _run_tool(tool: Tool, kwargs: dict[str, Any], ctx: Context) -> dict[str, Any]:
    try:
        value = await invoke(tool.func, tool.mode, kwargs, ctx.call)
    except Exception as exc:  # noqa: BLE001 - logged with its traceback; as in _call_inline
        return _tool_failed(tool.name, exc)
    return tool_result(value, tool.output, ctx.policy)


def find_resource(
    registry: Registry, uri: str, not_found: int = RESOURCE_NOT_FOUND
) -> tuple[Resource, dict[str, str]]:
    """The resource at ``uri`` (a template's variables filled in), or the not-found error."""
    resource = registry.resources.get(uri)
    if resource is not None:
        return resource, {}
    for template in registry.templates.values():
        assert template.pattern is not None
        match = template.pattern.fullmatch(uri)
        if match is not None:
            return template, match.groupdict()
    raise McpError(not_found, f"Resource not found: {uri}", {"uri": uri})


def read_resource(registry: Registry, uri: str, ctx: Context) -> Any:
    """resources/read: the result, or a coroutine producing it."""
    resource, variables = find_resource(registry, uri, ctx.policy.resource_not_found)
    kwargs = _arguments(resource.signature, variables, ctx, f"Invalid resource URI {uri}")
    if resource.mode is not RunMode.INLINE:
        return _read_resource(uri, resource, kwargs, ctx)
    return read_result(uri, resource, resource.func(**kwargs), ctx.policy)


async def _read_resource(
    uri: str, resource: Resource, kwargs: dict[str, Any], ctx: Context
) -> dict[str, Any]:
    value = await invoke(resource.func, resource.mode, kwargs, ctx.call)
    return read_result(uri, resource, value, ctx.policy)


def get_prompt(registry: Registry, name: str, arguments: Any, ctx: Context) -> Any:
    """prompts/get: the result, or a coroutine producing it."""
    prompt = registry.prompts.get(name)
    if prompt is None:
        raise McpError(INVALID_PARAMS, f"Unknown prompt: {name}")
    kwargs = _arguments(prompt.signature, arguments or {}, ctx, f"Invalid arguments for prompt '{name}'")
    if prompt.mode is not RunMode.INLINE:
        return _get_prompt(prompt, kwargs, ctx)
    return prompt_result(prompt.func(**kwargs), prompt.description)


async def _get_prompt(prompt: Prompt, kwargs: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return prompt_result(await invoke(prompt.func, prompt.mode, kwargs, ctx.call), prompt.description)


def _tool_failed(name: str, exc: Exception) -> dict[str, Any]:
    """A tool raised: ToolError -> its message; McpError -> a JSON-RPC error; else logged."""
    if isinstance(exc, McpError):
        raise exc
    if isinstance(exc, ToolError):
        return error_result(str(exc))
    logger.error("tool %r raised", name, exc_info=exc)
    return error_result(f"Tool '{name}' failed: {exc}")


def _invalid_arguments(name: str, exc: pydantic.ValidationError, policy: VersionPolicy) -> dict[str, Any]:
    """Arguments that fail the schema: an isError result (2025-11-25 on), -32602 before."""
    message = f"Invalid arguments for tool '{name}': {describe_validation_error(exc)}"
    if policy.input_errors_as_tool_errors:
        return error_result(message)
    raise McpError(INVALID_PARAMS, message) from None


def _call_inline(tool: Tool, kwargs: dict[str, Any], policy: VersionPolicy) -> dict[str, Any]:
    """Call an inline tool on the loop and shape its CallToolResult."""
    try:
        value = tool.func(**kwargs)
    except Exception as exc:  # noqa: BLE001 - logged with its traceback; the tool's own failure becomes an isError result
        return _tool_failed(tool.name, exc)
    return tool_result(value, tool.output, policy)


def _arguments(signature: Signature, values: dict[str, Any], ctx: Context, problem: str) -> dict[str, Any]:
    """A resource's or prompt's keyword arguments, the Context among them; values that fail the
    signature are -32602, the message saying ``problem`` and which field."""
    try:
        kwargs = validate(signature, values)
    except pydantic.ValidationError as exc:
        raise McpError(INVALID_PARAMS, f"{problem}: {describe_validation_error(exc)}") from None
    if signature.context_param is not None:
        kwargs[signature.context_param] = ctx
    return kwargs


def validate(signature: Signature, arguments: dict[str, Any]) -> dict[str, Any]:
    """The handler's keyword arguments from the JSON ones (pydantic, strict)."""
    if signature.validator is None:
        return dict(arguments)
    kwargs: dict[str, Any] = signature.validator.validate_python(arguments)
    return kwargs
