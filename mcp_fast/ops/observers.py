"""Several ``RequestObserver``s as one (metrics, audit log, tracing): the pipeline calls one."""

from __future__ import annotations

from collections.abc import Sequence

from mcp_fast.call import Call, RequestObserver


class Observers:
    __slots__ = ("_observers", "needs_begin")

    def __init__(self, observers: Sequence[RequestObserver]) -> None:
        self._observers = tuple(observers)
        self.needs_begin = any(observer.needs_begin for observer in observers)

    def begin(self, call: Call) -> None:
        for observer in self._observers:
            observer.begin(call)

    def end(self, call: Call, answered: bool) -> None:
        for observer in self._observers:
            observer.end(call, answered)


def combined(observers: Sequence[RequestObserver]) -> RequestObserver | None:
    """None for none, the one itself for one (no loop on the request path), else all of them."""
    if not observers:
        return None
    if len(observers) == 1:
        return observers[0]
    return Observers(observers)
