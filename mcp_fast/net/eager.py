"""Run a coroutine's first step at once; make a Task only if it really suspends.

Most requests finish without waiting for anything (a ``tools/call`` of an inline
or cached tool), and an asyncio Task costs a few microseconds to create and
schedule: more than parsing the request. So the network adapter steps the
request coroutine itself and hands it to a Task only when it yields a future
(what Python 3.12's eager tasks do, for 3.11 too).

Only our own request pipeline runs this way. User ``async def`` handlers always
get a Task of their own (see ``mcp_fast.server.invoke``), because code such as
``asyncio.timeout`` needs ``asyncio.current_task()`` from its first step.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Coroutine, Generator
from typing import Any

logger = logging.getLogger("mcp_fast.net")


@types.coroutine
def _continue(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Drive the rest of an already-started coroutine from inside a Task.

    Yields what the coroutine yields (the futures it waits on) to the Task, and
    passes results, exceptions and cancellation back in.
    """
    while True:
        try:
            value = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - forwarded into the coroutine, not handled
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(value)
            except StopIteration as stop:
                return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    return await _continue(coro, yielded)


def start_eagerly(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
) -> asyncio.Task[None] | None:
    """Run ``coro`` until it first suspends. Returns None when it already finished,
    else the Task that carries on with it. Exceptions of the first step propagate."""
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return loop.create_task(_finish(coro, yielded))


def request_failed(task: asyncio.Task[None]) -> bool:
    """A finished request Task: did it fail (cancelled, or raised -- logged here)?"""
    if task.cancelled():
        return True
    if task.exception() is not None:
        logger.error("unhandled error while serving a request", exc_info=task.exception())
        return True
    return False
