"""The middleware chain: ``async def fn(call, call_next)`` functions around every request.

Built once, when the pipeline is made: each link calls its middleware with the next link, and
the last link is the pipeline's own handling (result cache, handler). A middleware may return
``await call_next(call)``, return its own result, or raise ``McpError``; several run in the order
added, the first added outermost. A server without middleware has no chain at all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mcp_fast.call import Call, CallNext, Middleware
from mcp_fast.content import ToolError
from mcp_fast.protocol.jsonrpc import INTERNAL_ERROR, McpError
from mcp_fast.results import error_result, tool_result

logger = logging.getLogger("mcp_fast.pipeline")


def build_chain(middleware: Sequence[Middleware], last: CallNext) -> CallNext:
    """``middleware[0]`` outermost, ``last`` at the end."""
    step = last
    for function in reversed(middleware):
        step = _link(function, step)
    return step


def _link(function: Middleware, following: CallNext) -> CallNext:
    def step(call: Call) -> Any:
        return function(call, following)

    return step


def settle_result(call: Call, value: Any) -> Any:
    """What went through the chain, as a result object: a dict as it is; for ``tools/call`` a
    middleware may also return what a tool may (a str, content blocks, a ToolResult ...)."""
    if type(value) is dict:
        return value
    if call.method == "tools/call":
        return tool_result(value, None, call.policy)
    logger.error(
        "a middleware returned %s for %s: return a dict (the result object) or raise McpError",
        type(value).__name__,
        call.method,
    )
    raise McpError(INTERNAL_ERROR, "Internal error")


def settle_failure(call: Call, exc: Exception) -> Any:
    """An exception out of the chain: McpError is the answer; a ToolError in a ``tools/call``
    is an ``isError`` result, as a tool's would be; anything else is a bug (logged, -32603)."""
    if isinstance(exc, McpError):
        raise exc
    if isinstance(exc, ToolError) and call.method == "tools/call":
        return error_result(str(exc))
    logger.error("a middleware raised while handling %s", call.method, exc_info=exc)
    raise McpError(INTERNAL_ERROR, "Internal error") from None
