"""Tasks (MCP 2025-11-25, experimental): task-augmented ``tools/call`` with polling.

Spec: docs/specification/2025-11-25/basic/utilities/tasks.mdx. A ``tools/call``
whose params carry ``task`` answers at once with a CreateTaskResult; the tool
runs in the background; the client polls ``tasks/get`` and fetches the outcome
with ``tasks/result`` (which waits for a terminal status). Tasks live in this
process, bounded in number and by their ttl, and belong to the session (or, in
stateless mode, to nobody in particular) that created them.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from mcp_fast.bounded import BoundedMap
from mcp_fast.protocol.jsonrpc import INVALID_PARAMS, McpError

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

    def get(self, owner: str, task_id: object) -> Task:
        task: Task | None = self._tasks.get(task_id) if isinstance(task_id, str) else None
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
        task = self.get(owner, task_id)
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
