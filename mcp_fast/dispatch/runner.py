"""How a handler runs: the event loop never stalls, and a quick handler costs next to nothing.

- ``async def``: its own asyncio Task, whose first step runs at once, in the caller's frame (as
  Python 3.12's eager tasks do; on 3.11 by the small ``EagerTask`` below). A handler that
  finishes without waiting needs no scheduling and no second Task; one that waits goes on as
  the Task it already is, so ``asyncio.current_task()``, ``asyncio.timeout``, TaskGroups and
  anyio see a real Task from the handler's first line.
- plain ``def`` (ADAPTIVE, the default): the thread pool for its first calls, each timed; once
  ``TRIAL_CALLS`` of them took less than the limit (``--offload-after``), the event loop.
  ``SLOW_CALLS`` calls on the loop that take longer than the limit, within ``SLOW_WINDOW`` calls,
  move the handler back to the pool for good (the log says so). A handler that blocks from its
  first call never runs on the loop.
- ``inline=True``: always on the loop; ``offload=True``: always in the pool.

What runs a handler (its Task, or the thread's future) is put on the ``Call`` so that a
cancellation stops the wait at once; a thread cannot be stopped, its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from mcp_fast.call import Call
from mcp_fast.registry import SLOW_CALLS, SLOW_WINDOW, TRIAL_CALLS, Placement

logger = logging.getLogger("mcp_fast.server")

_clock = time.perf_counter


def run(
    func: Callable[..., Any], placement: Placement, kwargs: dict[str, Any], call: Call | None, limit: float
) -> Any:
    """Run a handler: what it returned, at once when it finished without waiting, else a
    coroutine that produces it. Its own exceptions propagate (at once, or from the coroutine)."""
    if placement.on_loop:
        if not placement.adaptive:
            return func(**kwargs)
        started = _clock()
        value = func(**kwargs)
        elapsed = _clock() - started
        if elapsed > limit:
            _slow_on_loop(func, placement, elapsed, limit)
        elif placement.slow_calls:
            _quick_after_slow(placement)
        return value
    if call is not None and call.cancelled:
        raise asyncio.CancelledError  # cancelled while a middleware was still busy with it
    if placement.is_async:
        task = start_task(func(**kwargs), placement.name)
        if call is not None:
            call.running = task
        if task.done():
            return task.result()  # the handler's value, or its exception raised here
        return _wait(task)
    return _in_thread(func, placement, kwargs, call, limit)


async def _wait(task: asyncio.Future[Any]) -> Any:
    return await task


async def _in_thread(
    func: Callable[..., Any], placement: Placement, kwargs: dict[str, Any], call: Call | None, limit: float
) -> Any:
    future = asyncio.get_running_loop().run_in_executor(None, functools.partial(_timed, func, kwargs))
    if call is not None:
        call.running = future
    value, elapsed = await future
    if placement.adaptive and not placement.on_loop:
        _learn(func, placement, elapsed, limit)
    return value


def _timed(func: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[Any, float]:
    """In a worker thread: the handler's value, and how long it took."""
    started = _clock()
    value = func(**kwargs)
    return value, _clock() - started


def _learn(func: Callable[..., Any], placement: Placement, elapsed: float, limit: float) -> None:
    """A call in the pool finished: quick ones earn the handler its place on the loop."""
    if elapsed > limit:
        placement.trials_left = TRIAL_CALLS  # slow: it stays in the pool, and starts its trial over
        return
    placement.trials_left -= 1
    if placement.trials_left <= 0:
        placement.on_loop = True
        logger.debug(
            "%s is quick (%.3f ms): it runs on the event loop from now on", _name(func), elapsed * 1e3
        )


def _slow_on_loop(func: Callable[..., Any], placement: Placement, elapsed: float, limit: float) -> None:
    """A call on the loop took too long: after ``SLOW_CALLS`` of them within ``SLOW_WINDOW``
    calls, the handler runs in the thread pool from now on."""
    placement.slow_calls += 1
    placement.quick_since_slow = 0
    if placement.slow_calls < SLOW_CALLS:
        return
    placement.on_loop = False
    placement.adaptive = False
    logger.info(
        "%s took %.1f ms on the event loop (more than --offload-after %.1f ms): it runs in the thread "
        "pool from now on (declare it inline=True or offload=True to decide yourself)",
        _name(func),
        elapsed * 1e3,
        limit * 1e3,
    )


def _quick_after_slow(placement: Placement) -> None:
    """A quick call on the loop after a slow one: a slow call that long ago is forgotten."""
    placement.quick_since_slow += 1
    if placement.quick_since_slow >= SLOW_WINDOW:
        placement.slow_calls = 0


def _name(func: Callable[..., Any]) -> str:
    return f"the handler {getattr(func, '__qualname__', func)!r}"


# -- Tasks whose first step runs at once ----------------------------------------------------------

if sys.version_info >= (3, 12):

    def start_task(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A Task for ``coro``, its first step already run (Python 3.12: ``eager_start``)."""
        return asyncio.Task(coro, loop=asyncio.get_running_loop(), name=name, eager_start=True)

else:  # Python 3.11
    from asyncio import tasks as _tasks

    _PyFuture: Any = asyncio.futures._PyFuture  # type: ignore[attr-defined]
    _FINISHED = "FINISHED"

    class EagerTask(_tasks._PyTask):  # type: ignore[name-defined,misc]
        """An asyncio Task (the pure-Python implementation) whose first step runs in ``__init__``
        instead of being scheduled: Python 3.12's ``Task(..., eager_start=True)``, for 3.11.

        The first step is written out here rather than going through ``__step``: most handlers
        finish in it, and then the Task is a finished future and nothing else.
        """

        def __init__(
            self, coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop, name: str
        ) -> None:
            # What _PyTask.__init__ (and _PyFuture.__init__) set, less scheduling the first step.
            self._loop = loop
            self._callbacks: list[Any] = []
            self._name = name
            self._num_cancels_requested = 0
            self._must_cancel = False
            self._fut_waiter = None
            self._coro = coro
            context = self._context = contextvars.copy_context()
            # The step runs with this Task as the current one, as a scheduled step would; a Task
            # that is current already (a handler started from inside another) steps aside.
            outer = _tasks.current_task(loop)
            if outer is not None:
                _tasks._leave_task(loop, outer)
            _tasks._enter_task(loop, self)
            try:
                result = context.run(coro.send, None)
            except StopIteration as stop:
                self._result = stop.value  # finished: no callbacks can be waiting yet
                self._state = _FINISHED
            except asyncio.CancelledError as exc:
                self._cancelled_exc = exc
                _PyFuture.cancel(self)
            except (KeyboardInterrupt, SystemExit) as exc:
                _PyFuture.set_exception(self, exc)
                raise
            except BaseException as exc:  # noqa: BLE001 - the handler's exception, kept in the Task
                _PyFuture.set_exception(self, exc)
            else:
                self._waits_on(result)
            finally:
                _tasks._leave_task(loop, self)
                if outer is not None:
                    _tasks._enter_task(loop, outer)
            if self._state != _FINISHED or self._callbacks:
                _tasks._register_task(self)

        def _waits_on(self, result: Any) -> None:
            """The first step yielded: what __step does with a yielded value (waiting on a future;
            a bare yield goes on at the next loop iteration; anything else is the Task's error)."""
            if getattr(result, "_asyncio_future_blocking", None) and result is not self:
                result._asyncio_future_blocking = False
                result.add_done_callback(self._Task__wakeup, context=self._context)
                self._fut_waiter = result
            elif result is None:
                self._loop.call_soon(self._Task__step, context=self._context)
            else:
                error = RuntimeError(f"Task {self!r} got bad yield: {result!r}")
                self._loop.call_soon(self._Task__step, error, context=self._context)

    def start_task(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A Task for ``coro``, its first step already run."""
        task: asyncio.Task[Any] = EagerTask(coro, asyncio.get_running_loop(), name)
        return task
