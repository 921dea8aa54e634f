"""Run a coroutine's first step at once; make a Task only if it really suspends.

Most requests finish without waiting for anything (a ``tools/call`` of an inline
or cached tool), and an asyncio Task costs a few microseconds to create and
schedule: more than parsing the request. So the network adapter steps the
request coroutine itself and hands it to a Task only when it yields a future
(what Python 3.12's eager tasks do, for 3.11 too).

Only our own request pipeline runs this way. User ``async def`` handlers always
get a Task of their own (see ``mcp_fast.dispatch.runner``), because code such as
``asyncio.timeout`` needs ``asyncio.current_task()`` from its first step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Generator
from typing import Any

logger = logging.getLogger("mcp_fast.net")


class _Resumed:
    """The rest of a coroutine whose first step already ran, in the shape a Task drives.

    The Task's first step gets what the coroutine yielded then (the future it waits on); every
    later step, result, exception and cancellation goes straight to the coroutine. One small
    object instead of a wrapper coroutine and a generator: a long GET stream keeps this while
    it is idle.
    """

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def send(self, value: Any) -> Any:
        yielded = self._yielded
        if yielded is not _NOTHING:
            self._yielded = _NOTHING
            return yielded  # the Task's first step: what the coroutine waits on
        return self._coro.send(value)

    def throw(self, *exc: Any) -> Any:
        self._yielded = _NOTHING  # cancelled before its first step: the coroutine takes it
        return self._coro.throw(*exc)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, Any, Any]:
        raise TypeError("driven by its Task only")

    def __repr__(self) -> str:
        return f"<{getattr(self._coro, '__qualname__', 'coroutine')} resumed>"


_NOTHING: Any = object()
Coroutine.register(_Resumed)  # what asyncio.Task checks it was given


def start_eagerly(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
) -> asyncio.Task[None] | None:
    """Run ``coro`` until it first suspends. Returns None when it already finished,
    else the Task that carries on with it. Exceptions of the first step propagate."""
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return loop.create_task(_Resumed(coro, yielded))


def request_failed(task: asyncio.Task[None]) -> bool:
    """A finished request Task: did it fail (cancelled, or raised -- logged here)?"""
    if task.cancelled():
        return True
    if task.exception() is not None:
        logger.error("unhandled error while serving a request", exc_info=task.exception())
        return True
    return False
