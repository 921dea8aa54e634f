"""subscriptions/listen (MCP 2026-07-28): notifications not tied to a request.

A listen request's SSE response is the notification stream; its first event
acknowledges the filter the server honours, and every event carries the listen
request's id as ``_meta.io.modelcontextprotocol/subscriptionId``. The hub is
per process: a fleet needs a shared bus behind the same two calls (planned).
Spec: docs/specification/2026-07-28/basic/patterns/subscriptions.mdx.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

SUBSCRIPTION_ID_KEY: Final = "io.modelcontextprotocol/subscriptionId"
LIST_FILTERS: Final = {
    "tools": "toolsListChanged",
    "prompts": "promptsListChanged",
    "resources": "resourcesListChanged",
}


@dataclass(eq=False)
class Listener:
    subscription_id: Any
    filters: dict[str, Any]  # the honoured subset of the request's "notifications"
    send: Callable[[str, dict[str, Any]], None]
    uris: frozenset[str] = field(default_factory=frozenset)

    def deliver(self, method: str, params: dict[str, Any]) -> None:
        self.send(method, {**params, "_meta": {SUBSCRIPTION_ID_KEY: self.subscription_id}})


class SubscriptionHub:
    def __init__(self) -> None:
        self._listeners: set[Listener] = set()

    def add(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def remove(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def list_changed(self, kind: str) -> None:
        key = LIST_FILTERS.get(kind)
        for listener in list(self._listeners):
            if key is not None and listener.filters.get(key):
                listener.deliver(f"notifications/{kind}/list_changed", {})

    def resource_updated(self, uri: str) -> None:
        for listener in list(self._listeners):
            if uri in listener.uris:
                listener.deliver("notifications/resources/updated", {"uri": uri})

    def __len__(self) -> int:
        return len(self._listeners)
