"""JSON-RPC 2.0 batches (section 6), which only 2025-03-26 allows: the rules both transports share.

Which batches are refused as a whole, and what each item of an accepted one is, live here. How
the requests of a batch run (one after another on a POST, concurrently on a channel) and how
the array of answers goes out is each transport's own business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

from mcp_fast.protocol import jsonrpc
from mcp_fast.protocol.jsonrpc import INVALID_REQUEST, Kind, McpError, Message
from mcp_fast.protocol.versions import VersionPolicy

# 2025-03-26 basic/lifecycle.mdx: "The initialization request MUST NOT be part of a JSON-RPC batch".
_INITIALIZE_IN_BATCH: Final = McpError(
    INVALID_REQUEST, "Invalid request: initialize must not be part of a batch"
)


def refusal(policy: VersionPolicy | None, items: list[Any]) -> McpError | None:
    """Why a batch is refused as a whole (``policy`` None: no version negotiated yet), or None."""
    if policy is None or not policy.batches:
        version = policy.version if policy is not None else "(none negotiated yet)"
        return McpError(
            INVALID_REQUEST, f"Invalid request: batches are not supported in protocol version {version}"
        )
    if not items:
        return McpError(INVALID_REQUEST, "Invalid request: empty batch")
    return None


def requests(
    items: list[Any],
    on_notification: Callable[[Message], None],
    on_response: Callable[[Message], None],
) -> Iterator[Message | bytes]:
    """Each item that needs an answer, in order: a request to run, or the encoded error answer
    of an item that cannot be one. Notifications and responses get no answer: they are handed
    to their callback as the iteration reaches them, so a batch's ``notifications/cancelled``
    still comes after the request it cancels."""
    for item in items:
        try:
            message = jsonrpc.parse_message(item)
        except jsonrpc.InvalidMessage as exc:
            yield jsonrpc.encode_error(exc.request_id, exc)
            continue
        if message.kind is Kind.REQUEST:
            if message.method == "initialize":
                yield jsonrpc.encode_error(message.id, _INITIALIZE_IN_BATCH)
            else:
                yield message
        elif message.kind is Kind.NOTIFICATION:
            on_notification(message)
        else:
            on_response(message)
