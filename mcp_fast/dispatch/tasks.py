"""Tasks (MCP 2025-11-25, experimental): task-augmented ``tools/call`` with polling.

Spec: docs/specification/2025-11-25/basic/utilities/tasks.mdx. A ``tools/call``
whose params carry ``task`` answers at once with a CreateTaskResult; the tool
runs in the background; the client polls ``tasks/get`` and fetches the outcome
with ``tasks/result`` (which waits for a terminal status). A task runs in the
process that created it, bounded in number and by its ttl, and belongs to the
session (or, in stateless mode, to nobody in particular) that created it.

In a fleet that shares tasks (``--redis``), every status change also writes the
task's record to the fleet and tells the other instances (``TASK_STATUS``), so
any instance answers tasks/get, tasks/list and tasks/result for it; tasks/cancel
and tasks/update on another instance go to the one that runs it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from mcp_fast.bounded import BoundedMap
from mcp_fast.fleet.base import TASK_CANCEL, TASK_STATUS, TASK_UPDATE, Fleet, FleetUnavailable
from mcp_fast.protocol.jsonrpc import INVALID_PARAMS, McpError

logger = logging.getLogger("mcp_fast.dispatch")

WORKING: Final = "working"
INPUT_REQUIRED: Final = "input_required"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
TERMINAL: Final = frozenset({COMPLETED, FAILED, CANCELLED})
RELATED_TASK: Final = "io.modelcontextprotocol/related-task"

DEFAULT_TTL_MS: Final = 3_600_000
MAX_TTL_MS: Final = 24 * 3_600_000
POLL_INTERVAL_MS: Final = 1000
# A tasks/result waiting for a task of another instance looks at its record again this often
# even when no status message came (one may be lost while Redis reconnects).
_REMOTE_RECHECK_S: Final = 30.0


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Task:
    task_id: str
    owner: str  # session id, or "" without sessions
    ttl_ms: int
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    status: str = WORKING
    status_message: str | None = None
    result: dict[str, Any] | None = None  # the underlying request's result
    error: McpError | None = None  # or its JSON-RPC error
    tool_errors_fail: bool = True
    runner: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # Tasks extension (2026-07-28): questions the task waits on, answered by tasks/update.
    input_requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    answers: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    instance: str = ""  # the instance that runs it (a fleet's)
    remote: bool = False  # a view of a task another instance runs, made from its record

    def to_record(self) -> dict[str, Any]:
        """What the fleet keeps of the task (JSON), for the other instances."""
        return {
            "taskId": self.task_id,
            "owner": self.owner,
            "instance": self.instance,
            "ttl": self.ttl_ms,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "status": self.status,
            "statusMessage": self.status_message,
            "result": self.result,
            "error": self.error.to_error_object() if self.error is not None else None,
            "inputRequests": self.input_requests,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Task | None:
        """A view of another instance's task (None: not a task record)."""
        try:
            task = cls(
                str(record["taskId"]),
                str(record["owner"]),
                int(record["ttl"]),
                float(record["createdAt"]),
                float(record["updatedAt"]),
                str(record["status"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        message, result, error = record.get("statusMessage"), record.get("result"), record.get("error")
        task.status_message = message if isinstance(message, str) else None
        task.result = result if isinstance(result, dict) else None
        if isinstance(error, dict) and type(error.get("code")) is int:
            task.error = McpError(error["code"], str(error.get("message", "")), error.get("data"))
        requests = record.get("inputRequests")
        task.input_requests = requests if isinstance(requests, dict) else {}
        task.instance = str(record.get("instance", ""))
        task.remote = True
        if task.status in TERMINAL:
            task.done.set()
        return task

    def to_json(self) -> dict[str, Any]:
        task: dict[str, Any] = {
            "taskId": self.task_id,
            "status": self.status,
            "createdAt": _iso(self.created_at),
            "lastUpdatedAt": _iso(self.updated_at),
            "ttl": self.ttl_ms,
            "pollInterval": POLL_INTERVAL_MS,
        }
        if self.status_message is not None:
            task["statusMessage"] = self.status_message
        return task

    def to_extension_json(self) -> dict[str, Any]:
        """The Task of the tasks extension: ttlMs/pollIntervalMs, results inlined by status."""
        task: dict[str, Any] = {
            "taskId": self.task_id,
            "status": self.status,
            "createdAt": _iso(self.created_at),
            "lastUpdatedAt": _iso(self.updated_at),
            "ttlMs": self.ttl_ms,
            "pollIntervalMs": POLL_INTERVAL_MS,
        }
        if self.status_message is not None:
            task["statusMessage"] = self.status_message
        return task

    def extension_details_json(self) -> dict[str, Any]:
        """tasks/get: the task plus what its status has to show."""
        detailed = self.to_extension_json()
        if self.status == INPUT_REQUIRED:
            detailed["inputRequests"] = dict(self.input_requests)
        elif self.status == COMPLETED and self.result is not None:
            detailed["result"] = self.result
        elif self.status == FAILED:
            if self.error is not None:
                detailed["error"] = self.error.to_error_object()
            elif self.result is not None:
                detailed["result"] = self.result
        return detailed

    @property
    def expired(self) -> bool:
        return time.time() > self.created_at + self.ttl_ms / 1000


class TaskStore:
    """The tasks of this process; a status change is announced through ``on_status``."""

    def __init__(self, max_tasks: int = 10_000) -> None:
        self._tasks: BoundedMap[str, Task] = BoundedMap(max_tasks)
        self.on_status: list[Any] = []  # callables (task) -> None
        # The fleet the tasks are shared with (set by the pipeline; None or a LocalFleet: not shared).
        self.fleet: Fleet | None = None
        self._unsynced: dict[str, Task] = {}  # records still to write to the fleet, in order
        self._sync_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._syncer: asyncio.Task[None] | None = None
        self._remote_waiters: dict[str, list[asyncio.Future[None]]] = {}

    @property
    def shared(self) -> bool:
        return self.fleet is not None and self.fleet.shared

    def share_with(self, fleet: Fleet) -> None:
        """Share the tasks with ``fleet``'s instances: records, status, cancel and update."""
        self.fleet = fleet
        if not fleet.shared:
            return
        fleet.subscribe(TASK_STATUS, self._remote_status)
        fleet.subscribe(TASK_CANCEL, self._remote_cancel)
        fleet.subscribe(TASK_UPDATE, self._remote_update)

    def start(
        self,
        owner: str,
        requested_ttl: object,
        work: Coroutine[Any, Any, dict[str, Any]],
        *,
        tool_errors_fail: bool = True,
    ) -> Task:
        """Run ``work`` as a task. ``tool_errors_fail``: an isError result makes the task
        failed (2025-11-25 tasks) rather than completed with that result (the extension)."""
        ttl = requested_ttl if type(requested_ttl) is int and requested_ttl > 0 else DEFAULT_TTL_MS
        task = Task(secrets.token_urlsafe(16), owner, min(ttl, MAX_TTL_MS))
        task.tool_errors_fail = tool_errors_fail
        if self.fleet is not None:
            task.instance = self.fleet.instance
        self._tasks.put(task.task_id, task)
        task.runner = asyncio.get_running_loop().create_task(self._run(task, work))
        return task

    async def _run(self, task: Task, work: Coroutine[Any, Any, dict[str, Any]]) -> None:
        try:
            result = await work
        except asyncio.CancelledError:
            self._finish(task, CANCELLED, "The task was cancelled by request.")
            return
        except McpError as exc:
            task.error = exc
            self._finish(task, FAILED, exc.message)
            return
        task.result = result
        failed = result.get("isError") is True and task.tool_errors_fail
        self._finish(task, FAILED if failed else COMPLETED, None)

    def _finish(self, task: Task, status: str, message: str | None) -> None:
        if task.status in TERMINAL:
            return  # a cancelled task stays cancelled (spec: Task Cancellation 3)
        self.set_status(task, status, message)
        task.done.set()

    def set_status(self, task: Task, status: str, message: str | None = None) -> None:
        task.status = status
        task.status_message = message
        task.updated_at = time.time()
        for listener in self.on_status:
            listener(task)
        if self.shared and not task.remote:
            self._sync_later(task)

    # -- sharing with the fleet ------------------------------------------------------

    async def share(self, task: Task) -> None:
        """Write the new task's record (its CreateTaskResult waits for this, so that any instance
        knows the task once the client does); FleetUnavailable: the task is cancelled here."""
        if not self.shared:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sync_waiters.setdefault(task.task_id, []).append(future)
        self._sync_later(task)
        try:
            await future
        except FleetUnavailable:
            self._tasks.pop(task.task_id, None)
            if task.runner is not None:
                task.runner.cancel()
            raise

    def _sync_later(self, task: Task) -> None:
        """One writer writes the latest record of each changed task, in order of change."""
        self._unsynced[task.task_id] = task
        if self._syncer is None:
            self._syncer = asyncio.get_running_loop().create_task(self._write_records())

    async def _write_records(self) -> None:
        fleet = self.fleet
        assert fleet is not None
        try:
            while self._unsynced:
                task_id = next(iter(self._unsynced))
                task = self._unsynced.pop(task_id)
                waiters = self._sync_waiters.pop(task_id, [])
                record = task.to_record()  # the state now: later changes are written again
                try:
                    await fleet.save_task(task_id, task.owner, record, _seconds_left(task))
                    await fleet.publish(TASK_STATUS, record)
                except FleetUnavailable as exc:
                    logger.debug("task %s: its status %s was not shared (%s)", task_id, task.status, exc)
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(FleetUnavailable())
                    continue
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
        finally:
            self._syncer = None

    def _remote_status(self, record: dict[str, Any]) -> None:
        """Another instance's task changed: wake who waits for it, and tell this instance's
        listeners (the owner's GET stream may be held here)."""
        task = Task.from_record(record)
        if task is None or task.task_id in self._tasks:
            return
        self._wake(task.task_id)
        for listener in self.on_status:
            listener(task)

    def wake_all(self) -> None:
        """Everyone waiting for another instance's task looks at its record again (the fleet
        reconnected: status messages may have been missed meanwhile)."""
        for task_id in list(self._remote_waiters):
            self._wake(task_id)

    def _wake(self, task_id: str) -> None:
        for waiter in self._remote_waiters.pop(task_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _remote_cancel(self, payload: dict[str, Any]) -> None:
        task_id = payload.get("taskId")
        task = self._tasks.get(task_id) if isinstance(task_id, str) else None
        if task is not None:
            self.cancel_quietly(task)

    def _remote_update(self, payload: dict[str, Any]) -> None:
        task_id, responses = payload.get("taskId"), payload.get("inputResponses")
        task = self._tasks.get(task_id) if isinstance(task_id, str) else None
        if task is not None and isinstance(responses, dict):
            self.update(task, responses)

    async def find(self, owner: str, task_id: object) -> Task:
        """The task, here or (shared) anywhere in the fleet; -32602 when unknown or not ``owner``'s."""
        task: Task | None = self._tasks.get(task_id) if isinstance(task_id, str) else None
        if task is None and self.shared and isinstance(task_id, str):
            assert self.fleet is not None
            record = await self.fleet.load_task(task_id)
            task = Task.from_record(record) if record is not None else None
        return self._owned(owner, task)

    async def list_all(self, owner: str) -> list[Task]:
        """``owner``'s tasks here and (shared) on every instance, oldest first."""
        tasks = {task.task_id: task for task in self.list(owner)}
        if self.shared and owner:
            assert self.fleet is not None
            for record in await self.fleet.owner_tasks(owner):
                task = Task.from_record(record)
                if task is not None and task.owner == owner and not task.expired:
                    tasks.setdefault(task.task_id, task)
        return sorted(tasks.values(), key=lambda task: task.created_at)

    async def cancel_anywhere(self, owner: str, task_id: object, *, quietly: bool = False) -> Task:
        """tasks/cancel wherever the task runs. ``quietly``: a finished task is no error (the
        extension's tasks/cancel)."""
        task = await self.find(owner, task_id)
        if task.status in TERMINAL:
            if quietly:
                return task
            raise McpError(INVALID_PARAMS, f"Cannot cancel task: already in terminal status '{task.status}'")
        if not task.remote:
            return self.cancel(owner, task_id) if not quietly else self._cancelled_quietly(task)
        assert self.fleet is not None
        delivered = await self.fleet.send(task.instance, TASK_CANCEL, {"taskId": task.task_id})
        task.status, task.status_message = CANCELLED, "The task was cancelled by request."
        task.updated_at = time.time()
        if not delivered:  # the instance that ran it is gone: nobody else will record the end
            record = task.to_record()
            await self.fleet.save_task(task.task_id, task.owner, record, _seconds_left(task))
            await self.fleet.publish(TASK_STATUS, record)
        return task

    def _cancelled_quietly(self, task: Task) -> Task:
        self.cancel_quietly(task)
        return task

    async def update_anywhere(self, task: Task, responses: dict[str, Any]) -> None:
        """tasks/update wherever the task runs."""
        if not task.remote:
            self.update(task, responses)
            return
        assert self.fleet is not None
        payload = {"taskId": task.task_id, "inputResponses": responses}
        if not await self.fleet.send(task.instance, TASK_UPDATE, payload):
            raise McpError(INVALID_PARAMS, "Failed to update task: the instance that runs it is gone")

    async def _wait_remote(self, task_id: str) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._remote_waiters.setdefault(task_id, []).append(future)
        try:
            await asyncio.wait_for(future, _REMOTE_RECHECK_S)  # not asyncio.timeout: maybe no Task
        except TimeoutError:
            pass
        finally:
            waiters = self._remote_waiters.get(task_id)
            if waiters is not None and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._remote_waiters[task_id]

    def get(self, owner: str, task_id: object) -> Task:
        """A task of this process; -32602 when unknown or not ``owner``'s."""
        return self._owned(owner, self._tasks.get(task_id) if isinstance(task_id, str) else None)

    def _owned(self, owner: str, task: Task | None) -> Task:
        if task is None or task.owner != owner:
            raise McpError(INVALID_PARAMS, "Failed to retrieve task: Task not found")
        if task.expired:
            self._tasks.pop(task.task_id, None)
            raise McpError(INVALID_PARAMS, "Failed to retrieve task: Task has expired")
        return task

    def list(self, owner: str) -> list[Task]:
        return [task for task in self._tasks.values() if task.owner == owner and not task.expired]

    def cancel(self, owner: str, task_id: object) -> Task:
        task = self.get(owner, task_id)
        if task.status in TERMINAL:
            raise McpError(INVALID_PARAMS, f"Cannot cancel task: already in terminal status '{task.status}'")
        self._finish(task, CANCELLED, "The task was cancelled by request.")
        if task.runner is not None:
            task.runner.cancel()
        return task

    # -- the tasks extension (2026-07-28) -------------------------------------------

    async def ask(self, task: Task, questions: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Input needed while the task runs: status input_required until tasks/update answers."""
        loop = asyncio.get_running_loop()
        for key, request in questions.items():
            task.input_requests[key] = request
            task.answers.setdefault(key, loop.create_future())
        self.set_status(task, INPUT_REQUIRED)
        try:
            return {key: await task.answers[key] for key in questions}
        finally:
            for key in questions:
                task.input_requests.pop(key, None)
            if not task.input_requests and task.status == INPUT_REQUIRED:
                self.set_status(task, WORKING)

    def update(self, task: Task, responses: dict[str, Any]) -> None:
        """tasks/update: answers for open questions; unknown or answered keys are ignored."""
        for key, answer in responses.items():
            future = task.answers.get(key)
            if future is not None and not future.done() and key in task.input_requests:
                future.set_result(answer)
                del task.input_requests[key]  # answered: no longer asked on tasks/get
        if not task.input_requests and task.status == INPUT_REQUIRED:
            self.set_status(task, WORKING)

    def cancel_quietly(self, task: Task) -> None:
        """tasks/cancel of the extension: idempotent, also on a finished task."""
        if task.status not in TERMINAL:
            self._finish(task, CANCELLED, "The task was cancelled by request.")
            if task.runner is not None:
                task.runner.cancel()

    async def outcome(self, owner: str, task_id: object) -> dict[str, Any]:
        """tasks/result: wait for a terminal status, then what the request itself would have answered."""
        task = await self.find(owner, task_id)
        while task.remote and task.status not in TERMINAL:
            await self._wait_remote(task.task_id)
            try:
                task = await self.find(owner, task_id)
            except FleetUnavailable:
                continue  # keep waiting: the store comes back (wake_all), or the client gives up
        await task.done.wait()
        if task.error is not None:
            raise task.error
        if task.status == CANCELLED and task.result is None:
            raise McpError(INVALID_PARAMS, "The task was cancelled before it produced a result")
        result = dict(task.result or {})
        meta = dict(result.get("_meta") or {})
        meta[RELATED_TASK] = {"taskId": task.task_id}
        result["_meta"] = meta
        return result


def _seconds_left(task: Task) -> float:
    """How long the fleet keeps the task's record: until its ttl runs out."""
    return max(1.0, task.created_at + task.ttl_ms / 1000 - time.time())
