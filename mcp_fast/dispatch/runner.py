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
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from mcp_fast.call import Call
from mcp_fast.registry import SLOW_CALLS, SLOW_WINDOW, TRIAL_CALLS, Placement

logger = logging.getLogger("mcp_fast.server")

_clock = time.perf_counter
# The handlers running in the pool now, by thread: what a shutdown still waits for (a thread
# cannot be stopped, and the process exits only once its handler returns). Set and cleared by
# the thread itself (one dict item each: atomic under the GIL).
_in_pool: dict[int, str] = {}


def running_in_threads() -> list[str]:
    """The names of the handlers running in the thread pool now."""
    return list(_in_pool.values())


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
        if isinstance(task, tuple):
            return task[0]  # finished in its first step (the common case: nothing to wait for)
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
    thread = threading.get_ident()
    _in_pool[thread] = str(getattr(func, "__qualname__", func))
    try:
        started = _clock()
        value = func(**kwargs)
        return value, _clock() - started
    finally:
        del _in_pool[thread]


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


# What ``start_task`` returns for a handler that finished in its first step and whose Task
# nobody else saw: a 1-tuple of its value (an exception of that step is raised by ``start_task``
# itself). A tuple because it is made without a Python call (an object with a constructor cost
# a tenth of the whole first step); a Task is never a tuple.
Finished = tuple[Any]


if sys.version_info >= (3, 12):

    def start_task(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | Finished:
        """A Task for ``coro``, its first step already run (Python 3.12: ``eager_start``)."""
        return asyncio.Task(coro, loop=asyncio.get_running_loop(), name=name, eager_start=True)

else:  # Python 3.11
    from asyncio import tasks as _tasks
    from weakref import getweakrefcount as _weakrefs

    _PyFuture: Any = asyncio.futures._PyFuture  # type: ignore[attr-defined]
    _current_tasks: dict[Any, Any] = _tasks._current_tasks  # type: ignore[attr-defined]
    _FINISHED = "FINISHED"
    _refcount = sys.getrefcount
    # A Task's references in start_task when nobody else holds it: its local, getrefcount's
    # argument (tests/test_handler_placement.py checks it).
    _UNSEEN_REFERENCES = 2
    _get_running_loop = asyncio.get_running_loop
    _copy_context = contextvars.copy_context

    def _restore(loop: asyncio.AbstractEventLoop, outer: Any) -> None:
        """The Task that was current before a first step is again (or none)."""
        if outer is None:
            del _current_tasks[loop]
        else:
            _current_tasks[loop] = outer

    class EagerTask(_tasks._PyTask):  # type: ignore[name-defined,misc]
        """An asyncio Task (the pure-Python implementation) whose first step runs at once
        instead of being scheduled: Python 3.12's ``Task(..., eager_start=True)``, for 3.11.

        The first step is written out in ``start_task`` rather than going through ``__step``:
        most handlers finish in it. Such a Task that nobody else saw (no reference, weak or strong, kept by
        the handler; no callback, no cancellation) is not needed afterwards: it serves the next
        handler's first step instead of being freed (a pure-Python Task costs a few
        microseconds to make and to free: a third of a quick request). To anyone who looks,
        that is a new Task, as a freed object's memory would be reused for one.
        """

        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            # What _PyTask.__init__ (and _PyFuture.__init__) set, less the coroutine, the
            # context and scheduling the first step.
            self._loop = loop
            self._callbacks: list[Any] = []
            self._num_cancels_requested = 0
            self._must_cancel = False
            self._fut_waiter = None
            self._coro: Coroutine[Any, Any, Any] | None = None
            self._context: contextvars.Context | None = None
            # A spare (a PENDING Task that never runs) is freed in silence; one given out is
            # reported, as any Task, if it is destroyed while pending.
            self._log_destroy_pending = False

        def _finished(self, value: Any) -> None:
            """The first step returned and somebody saw this Task (kept it, waits on it or
            cancelled it): it ends as ``__step`` would end it."""
            if self._must_cancel:  # the handler cancelled its own Task
                _PyFuture.cancel(self, msg=self._cancel_message)
            else:
                self._result = value
                self._state = _FINISHED
                self._Future__schedule_callbacks()

        def _unseen(self, references: int) -> bool:
            """Nobody but ``start_task`` holds this Task (``references``: its count there),
            nothing waits on it, nothing cancelled it."""
            return (
                references <= _UNSEEN_REFERENCES
                and not _weakrefs(self)
                and not self._callbacks
                and not self._must_cancel
                and not self._num_cancels_requested
            )

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

    _spare: EagerTask | None = None  # a Task no handler kept, ready for the next one

    def start_task(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | Finished:
        """Run ``coro``'s first step as a Task: ``(value,)`` (``Finished``) when it finished
        then (its exception is raised here) and nobody kept its Task, else the Task.

        One function, not a call into a method of the Task: this runs for every call of an
        ``async def`` handler, and a Python call costs as much as a few of the lines below."""
        global _spare
        loop = _get_running_loop()
        # Taken with no call in between (on 3.11 the GIL changes hands only at calls and jumps
        # back): another thread's event loop never gets the same spare. One of another loop's
        # is dropped.
        task = _spare
        _spare = None
        if task is None or task._loop is not loop:
            task = EagerTask(loop)
        task._name = name
        task._coro = coro
        context = task._context = _copy_context()
        # The step runs with this Task as the current one, as a scheduled step would; a Task
        # that is current already (a handler started from inside another) steps aside.
        outer = _current_tasks.get(loop)
        _current_tasks[loop] = task
        try:
            result = context.run(coro.send, None)
        except StopIteration as stop:
            # The common case, written out (no calls to _restore and _unseen).
            if outer is None:
                del _current_tasks[loop]
            else:
                _current_tasks[loop] = outer
            if (
                _refcount(task) <= _UNSEEN_REFERENCES
                and not task._callbacks
                and not task._must_cancel  # cancel() asked during the step
                and not task._num_cancels_requested
                and not _weakrefs(task)
            ):
                task._coro = task._context = None
                _spare = task
                return (stop.value,)
            task._finished(stop.value)
        except asyncio.CancelledError as exc:
            _restore(loop, outer)
            task._cancelled_exc = exc
            _PyFuture.cancel(task)
        except (KeyboardInterrupt, SystemExit) as exc:
            _restore(loop, outer)
            _PyFuture.set_exception(task, exc)
            raise
        except BaseException as exc:  # the handler's exception
            _restore(loop, outer)
            references = _refcount(task)
            if task._unseen(references):
                # The handler's own exception, raised as a finished Task's result() would.
                # No spare: the exception's traceback holds this frame, and so this Task.
                task._coro = task._context = None
                raise
            _PyFuture.set_exception(task, exc)
        else:
            _restore(loop, outer)
            task._waits_on(result)
        task._log_destroy_pending = True
        if task._state != _FINISHED or task._callbacks:
            _tasks._register_task(task)
        return task
