"""Calling the user's handlers: validate the arguments, run the function (``runner.py`` says
where), shape what it returned into the MCP result.

Each ``run_*`` returns the result at once when the handler finished without waiting, or a
coroutine that produces it: a quick handler costs no coroutine at all.
"""

from __future__ import annotations

import logging
from types import CoroutineType
from typing import Any

import pydantic

from mcp_fast.call import Call
from mcp_fast.content import ToolError
from mcp_fast.context import Context
from mcp_fast.dispatch.runner import run
from mcp_fast.protocol.jsonrpc import INVALID_PARAMS, RESOURCE_NOT_FOUND, McpError
from mcp_fast.protocol.versions import VersionPolicy
from mcp_fast.registry import Prompt, Registry, Resource, Tool
from mcp_fast.results import error_result, prompt_result, read_result, tool_result
from mcp_fast.schema import Signature, describe_validation_error

logger = logging.getLogger("mcp_fast.server")


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
    return _tool_outcome(tool, kwargs, ctx.call, ctx.policy, ctx.server.registry.offload_after)


def run_plain_tool(tool: Tool, arguments: Any, call: Call, offload_after: float) -> Any:
    """A ``plain`` tool (no Context): validate, run, shape -- nothing else is needed.
    ``validate`` inlined: most tool calls come this way."""
    validator = tool.signature.validator
    try:
        kwargs = dict(arguments or ()) if validator is None else validator.validate_python(arguments or {})
    except pydantic.ValidationError as exc:
        return _invalid_arguments(tool.name, exc, call.policy)
    # _tool_outcome, inlined (one frame less on the way most calls take).
    try:
        value = run(tool.func, tool.placement, kwargs, call, offload_after)
    except Exception as exc:  # noqa: BLE001 - logged with its traceback; the tool's own failure becomes an isError result
        return _tool_failed(tool.name, exc)
    if type(value) is CoroutineType:
        return _finish_tool(tool, value, call.policy)
    return tool_result(value, tool.output, call.policy)


def _tool_outcome(
    tool: Tool, kwargs: dict[str, Any], call: Call, policy: VersionPolicy, offload_after: float
) -> Any:
    try:
        value = run(tool.func, tool.placement, kwargs, call, offload_after)
    except Exception as exc:  # noqa: BLE001 - logged with its traceback; the tool's own failure becomes an isError result
        return _tool_failed(tool.name, exc)
    if type(value) is CoroutineType:
        return _finish_tool(tool, value, policy)
    return tool_result(value, tool.output, policy)


async def _finish_tool(
    tool: Tool, pending: CoroutineType[Any, Any, Any], policy: VersionPolicy
) -> dict[str, Any]:
    try:
        value = await pending
    except Exception as exc:  # noqa: BLE001 - logged with its traceback; as in _tool_outcome
        return _tool_failed(tool.name, exc)
    return tool_result(value, tool.output, policy)


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
    value = run(resource.func, resource.placement, kwargs, ctx.call, registry.offload_after)
    if type(value) is CoroutineType:
        return _finish_read(uri, resource, value, ctx.policy)
    return read_result(uri, resource, value, ctx.policy)


async def _finish_read(
    uri: str, resource: Resource, pending: CoroutineType[Any, Any, Any], policy: VersionPolicy
) -> dict[str, Any]:
    return read_result(uri, resource, await pending, policy)


def get_prompt(registry: Registry, name: str, arguments: Any, ctx: Context) -> Any:
    """prompts/get: the result, or a coroutine producing it."""
    prompt = registry.prompts.get(name)
    if prompt is None:
        raise McpError(INVALID_PARAMS, f"Unknown prompt: {name}")
    kwargs = _arguments(prompt.signature, arguments or {}, ctx, f"Invalid arguments for prompt '{name}'")
    value = run(prompt.func, prompt.placement, kwargs, ctx.call, registry.offload_after)
    if type(value) is CoroutineType:
        return _finish_prompt(prompt, value)
    return prompt_result(value, prompt.description)


async def _finish_prompt(prompt: Prompt, pending: CoroutineType[Any, Any, Any]) -> dict[str, Any]:
    return prompt_result(await pending, prompt.description)


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
