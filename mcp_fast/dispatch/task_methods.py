"""The tasks methods: task-augmented ``tools/call`` and ``tasks/*``, in both of their forms.

- 2025-11-25 tasks (basic/utilities/tasks.mdx): the client asks for a task with ``params.task``
  and polls ``tasks/get``, collects with ``tasks/result``, lists and cancels its own tasks.
- The 2026-07-28 tasks extension (``io.modelcontextprotocol/tasks``): the server decides to
  run a call as a task; ``tasks/get`` shows questions and the outcome inline, ``tasks/update``
  answers questions, ``tasks/cancel`` is idempotent.
The tasks themselves live in a ``TaskStore`` (``tasks.py``); in a fleet that shares them, the
methods find a task wherever it runs, so they may wait for the fleet's store.
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
    ) -> JsonObject | Coroutine[Any, Any, JsonObject]:
        """2025-11-25: answer at once with a CreateTaskResult; the tool runs on with a detached
        Context. In a fleet that shares tasks, once the fleet knows the task."""
        detached = ctx.detached_copy()
        created = self.tasks.start(ctx.owner, task.get("ttl"), self._tool_work(name, arguments, detached))
        if self.tasks.shared:
            return self._shared(created, {"task": created.to_json()})
        return {"task": created.to_json()}

    async def _shared(self, task: Task, result: JsonObject) -> JsonObject:
        await self.tasks.share(task)
        return result

    def start_extension_task(
        self, name: str, arguments: JsonObject | None, ctx: Context
    ) -> JsonObject | Coroutine[Any, Any, JsonObject]:
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
        result: JsonObject = {"resultType": "task", **task.to_extension_json()}
        return self._shared(task, result) if store.shared else result

    # -- 2025-11-25 tasks/* ------------------------------------------------------------

    async def tasks_get(self, params: JsonObject, ctx: Context) -> JsonObject:
        return (await self.tasks.find(ctx.owner, params.get("taskId"))).to_json()

    async def tasks_result(self, params: JsonObject, ctx: Context) -> JsonObject:
        return await self.tasks.outcome(ctx.owner, params.get("taskId"))

    async def tasks_list(self, params: JsonObject, ctx: Context) -> JsonObject:
        tasks = [task.to_json() for task in await self.tasks.list_all(ctx.owner)]
        return page(tasks, "tasks", params.get("cursor"), self.page_size)

    async def tasks_cancel(self, params: JsonObject, ctx: Context) -> JsonObject:
        return (await self.tasks.cancel_anywhere(ctx.owner, params.get("taskId"))).to_json()

    # -- the tasks extension (2026-07-28) ---------------------------------------------

    async def _extension_task(self, params: JsonObject, ctx: Context) -> Task:
        if not has_tasks_extension(ctx):
            raise needs_tasks_extension("tasks/* needs the tasks extension")
        return await self.tasks.find("", params.get("taskId"))

    async def extension_tasks_get(self, params: JsonObject, ctx: Context) -> JsonObject:
        return (await self._extension_task(params, ctx)).extension_details_json()

    async def tasks_update(self, params: JsonObject, ctx: Context) -> JsonObject:
        task = await self._extension_task(params, ctx)
        responses = params.get("inputResponses")
        if not isinstance(responses, dict):
            raise McpError(INVALID_PARAMS, 'Invalid params: "inputResponses" must be an object')
        await self.tasks.update_anywhere(task, responses)
        return {}

    async def extension_tasks_cancel(self, params: JsonObject, ctx: Context) -> JsonObject:
        if not has_tasks_extension(ctx):
            raise needs_tasks_extension("tasks/* needs the tasks extension")
        await self.tasks.cancel_anywhere("", params.get("taskId"), quietly=True)
        return {}
