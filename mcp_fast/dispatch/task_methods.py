"""The tasks methods: task-augmented ``tools/call`` and ``tasks/*``, in both of their forms.

- 2025-11-25 tasks (basic/utilities/tasks.mdx): the client asks for a task with ``params.task``
  and polls ``tasks/get``, collects with ``tasks/result``, lists and cancels its own tasks.
- The 2026-07-28 tasks extension (``io.modelcontextprotocol/tasks``): the server decides to
  run a call as a task; ``tasks/get`` shows questions and the outcome inline, ``tasks/update``
  answers questions, ``tasks/cancel`` is idempotent.
The tasks themselves live in a ``TaskStore`` (``tasks.py``).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from mcp_fast.context import Context
from mcp_fast.dispatch.handlers import call_tool
from mcp_fast.dispatch.lists import page
from mcp_fast.dispatch.tasks import Task, TaskStore
from mcp_fast.protocol.envelope import TASKS_EXTENSION
from mcp_fast.protocol.jsonrpc import INVALID_PARAMS, JsonObject, McpError
from mcp_fast.registry import Registry


def has_tasks_extension(ctx: Context) -> bool:
    extensions = (ctx.client_capabilities or {}).get("extensions")
    return isinstance(extensions, dict) and TASKS_EXTENSION in extensions


def needs_tasks_extension(message: str) -> McpError:
    data: JsonObject = {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}
    return McpError(-32021, f"{message}: declare the {TASKS_EXTENSION} extension", data)


class TaskMethods:
    def __init__(self, registry: Registry, tasks: TaskStore, page_size: int) -> None:
        self.registry = registry
        self.tasks = tasks
        self.page_size = page_size

    # -- starting a task -------------------------------------------------------------

    async def _tool_work(self, name: str, arguments: JsonObject | None, ctx: Context) -> dict[str, Any]:
        """A tools/call as a task's work: call_tool answers at once or with a coroutine."""
        outcome = call_tool(self.registry, name, arguments, ctx)
        result: dict[str, Any] = await outcome if isinstance(outcome, Coroutine) else outcome
        return result

    def start_task(
        self, name: str, arguments: JsonObject | None, task: JsonObject, ctx: Context
    ) -> JsonObject:
        """2025-11-25: answer at once with a CreateTaskResult; the tool runs on with a detached Context."""
        detached = ctx.detached_copy()
        created = self.tasks.start(ctx.owner, task.get("ttl"), self._tool_work(name, arguments, detached))
        return {"task": created.to_json()}

    def start_extension_task(self, name: str, arguments: JsonObject | None, ctx: Context) -> JsonObject:
        """The extension: the server runs the call as a task and answers a CreateTaskResult at once."""
        detached = ctx.detached_copy()
        detached.inputs = ctx.inputs  # answers given before detaching stay answered
        store = self.tasks
        holder: list[Task] = []

        async def ask(questions: dict[str, dict[str, Any]]) -> dict[str, Any]:
            return await store.ask(holder[0], questions)

        detached.asker = ask
        task = store.start("", None, self._tool_work(name, arguments, detached), tool_errors_fail=False)
        holder.append(task)
        return {"resultType": "task", **task.to_extension_json()}

    # -- 2025-11-25 tasks/* ------------------------------------------------------------

    def tasks_get(self, params: JsonObject, ctx: Context) -> JsonObject:
        return self.tasks.get(ctx.owner, params.get("taskId")).to_json()

    async def tasks_result(self, params: JsonObject, ctx: Context) -> JsonObject:
        return await self.tasks.outcome(ctx.owner, params.get("taskId"))

    def tasks_list(self, params: JsonObject, ctx: Context) -> JsonObject:
        tasks = [task.to_json() for task in self.tasks.list(ctx.owner)]
        return page(tasks, "tasks", params.get("cursor"), self.page_size)

    def tasks_cancel(self, params: JsonObject, ctx: Context) -> JsonObject:
        return self.tasks.cancel(ctx.owner, params.get("taskId")).to_json()

    # -- the tasks extension (2026-07-28) ---------------------------------------------

    def _extension_task(self, params: JsonObject, ctx: Context) -> Task:
        if not has_tasks_extension(ctx):
            raise needs_tasks_extension("tasks/* needs the tasks extension")
        return self.tasks.get("", params.get("taskId"))

    def extension_tasks_get(self, params: JsonObject, ctx: Context) -> JsonObject:
        return self._extension_task(params, ctx).extension_details_json()

    def tasks_update(self, params: JsonObject, ctx: Context) -> JsonObject:
        task = self._extension_task(params, ctx)
        responses = params.get("inputResponses")
        if not isinstance(responses, dict):
            raise McpError(INVALID_PARAMS, 'Invalid params: "inputResponses" must be an object')
        self.tasks.update(task, responses)
        return {}

    def extension_tasks_cancel(self, params: JsonObject, ctx: Context) -> JsonObject:
        self.tasks.cancel_quietly(self._extension_task(params, ctx))
        return {}
