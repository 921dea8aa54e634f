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


class TwoObservers:
    """The common pair (metrics and the audit log) without a loop on the request path."""

    __slots__ = ("_first", "_second", "needs_begin")

    def __init__(self, first: RequestObserver, second: RequestObserver) -> None:
        self._first = first
        self._second = second
        self.needs_begin = first.needs_begin or second.needs_begin

    def begin(self, call: Call) -> None:
        self._first.begin(call)
        self._second.begin(call)

    def end(self, call: Call, answered: bool) -> None:
        self._first.end(call, answered)
        self._second.end(call, answered)


def combined(observers: Sequence[RequestObserver]) -> RequestObserver | None:
    """None for none, the one itself for one (no loop on the request path), else all of them."""
    if not observers:
        return None
    if len(observers) == 1:
        return observers[0]
    if len(observers) == 2:
        return TwoObservers(*observers)
    return Observers(observers)
