"""Where handlers run (dispatch/runner.py): async def as an eager Task, def in the thread pool
until seen to be quick, then on the loop; inline= and offload= force either. No timed asserts:
each rule is shown by what a handler sees (its thread, its Task) or by what would deadlock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
from conftest import start_server, stop_server
from httpclient import RawClient, rpc_bytes

from mcp_fast import Context, McpError, MCPServer, ToolError
from mcp_fast.registry import SLOW_CALLS, SLOW_WINDOW, TRIAL_CALLS
from mcp_fast.testing import connect


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def thread_server() -> MCPServer:
    server = MCPServer("placement")

    @server.tool()
    def where() -> str:
        """The thread that ran this call."""
        return threading.current_thread().name

    @server.tool()
    def where_slowly(seconds: float) -> str:
        time.sleep(seconds)
        return threading.current_thread().name

    @server.tool(inline=True)
    def always_loop() -> str:
        return threading.current_thread().name

    @server.tool(offload=True)
    def always_pool() -> str:
        return threading.current_thread().name

    return server


def test_a_def_handler_runs_in_the_pool_until_it_is_seen_to_be_quick() -> None:
    server = thread_server()
    loop_thread = threading.current_thread().name

    async def main() -> None:
        async with connect(server) as client:
            names = [(await client.call_tool("where"))["content"][0]["text"] for _ in range(TRIAL_CALLS + 2)]
            assert all(name != loop_thread for name in names[:TRIAL_CALLS]), names  # the trial: in the pool
            assert names[TRIAL_CALLS:] == [loop_thread, loop_thread], names  # then on the loop
            assert (await client.call_tool("always_loop"))["content"][0]["text"] == loop_thread
            for _ in range(TRIAL_CALLS + 2):
                assert (await client.call_tool("always_pool"))["content"][0]["text"] != loop_thread

    run(main())


def test_a_slow_call_moves_a_handler_back_to_the_pool_for_good(caplog: pytest.LogCaptureFixture) -> None:
    server = thread_server()
    server.registry.offload_after = 0.05  # 50 ms, so that the quick calls are surely quick
    loop_thread = threading.current_thread().name

    async def main() -> None:
        async with connect(server) as client:
            for _ in range(TRIAL_CALLS):
                await client.call_tool("where_slowly", {"seconds": 0})
            for n in range(SLOW_CALLS):  # on the loop, and slow: one alone may be the machine's doing
                on_loop = await client.call_tool("where_slowly", {"seconds": 0.1})
                assert on_loop["content"][0]["text"] == loop_thread
                if n < SLOW_CALLS - 1:  # a quick call between: a handler that blocks every other call
                    quick = await client.call_tool("where_slowly", {"seconds": 0})
                    assert quick["content"][0]["text"] == loop_thread
            for _ in range(TRIAL_CALLS + 2):  # from now on in the pool, quick or not
                assert (await client.call_tool("where_slowly", {"seconds": 0}))["content"][0][
                    "text"
                ] != loop_thread

    with caplog.at_level(logging.INFO, logger="mcp_fast"):
        run(main())
    assert any("it runs in the thread pool from now on" in record.getMessage() for record in caplog.records)


def test_a_slow_call_long_ago_is_forgotten() -> None:
    """One slow call, SLOW_WINDOW quick ones, one slow call: never two within the window, so the
    handler stays on the loop."""
    server = thread_server()
    server.registry.offload_after = 0.05
    loop_thread = threading.current_thread().name

    async def main() -> None:
        async with connect(server) as client:
            for _ in range(TRIAL_CALLS):
                await client.call_tool("where_slowly", {"seconds": 0})
            for _ in range(2):
                await client.call_tool("where_slowly", {"seconds": 0.06})
                for _ in range(SLOW_WINDOW):
                    await client.call_tool("where_slowly", {"seconds": 0})
            last = await client.call_tool("where_slowly", {"seconds": 0})
            assert last["content"][0]["text"] == loop_thread

    run(main())


def test_a_handler_that_blocks_from_its_first_call_never_holds_up_other_clients() -> None:
    """A def handler blocks until another request releases it: were it on the event loop, the
    release could never be read, and this test would hang (it fails on its timeout instead)."""
    server = MCPServer("blocking")
    gate = threading.Event()

    @server.tool()
    def wait_for_release() -> str:
        if not gate.wait(timeout=10):
            raise ToolError("never released: the event loop was blocked")
        return "released"

    @server.tool()
    async def release() -> str:
        gate.set()
        return "done"

    async def main() -> None:
        async with connect(server) as client:
            waiting = [asyncio.ensure_future(client.call_tool("wait_for_release")) for _ in range(4)]
            await asyncio.sleep(0.05)
            await client.ping()  # served while the four block
            assert (await client.call_tool("release"))["content"][0]["text"] == "done"
            results = await asyncio.wait_for(asyncio.gather(*waiting), 10)
            assert [result["content"][0]["text"] for result in results] == ["released"] * 4

    run(main())


def test_an_async_handler_runs_as_a_task_from_its_first_line() -> None:
    """asyncio.current_task() and asyncio.timeout work before the first await (an eager Task)."""
    server = MCPServer("tasks")

    @server.tool()
    async def timed() -> dict[str, Any]:
        task = asyncio.current_task()
        async with asyncio.timeout(5):  # needs a current Task
            immediate = True
        async with asyncio.timeout(5):
            await asyncio.sleep(0)  # waits: the same Task goes on
        return {
            "task": task is not None and not task.done(),
            "same": asyncio.current_task() is task,
            "ok": immediate,
        }

    @server.tool()
    async def times_out() -> str:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(10)
        except TimeoutError:
            return "timed out"
        return "no"

    async def main() -> None:
        async with connect(server) as client:
            result = await client.call_tool("timed")
            assert result["structuredContent"] == {"task": True, "same": True, "ok": True}
            assert (await client.call_tool("times_out"))["content"][0]["text"] == "timed out"

    run(main())


@pytest.mark.parametrize("place", ["offload", "adaptive", "inline"])
def test_progress_and_logs_from_a_def_handler(place: str) -> None:
    """A def handler calls ctx.report_progress / ctx.info without await, in the pool or on the loop."""
    server = MCPServer("progress")
    options: dict[str, Any] = (
        {"offload": True} if place == "offload" else {"inline": True} if place == "inline" else {}
    )

    @server.tool(**options)
    def count(ctx: Context, steps: int) -> str:
        for step in range(steps):
            ctx.report_progress(step + 1, steps, f"step {step + 1}")
            ctx.info(f"did step {step + 1}")
        return "counted"

    progress: list[Any] = []

    async def main() -> None:
        async with connect(server) as client:
            result = await client.call_tool(
                "count",
                {"steps": 3},
                on_progress=lambda done, total, message: progress.append((done, total, message)),
            )
            assert result["content"][0]["text"] == "counted"
            assert [entry["data"] for entry in client.logs] == ["did step 1", "did step 2", "did step 3"]

    run(main())
    assert progress == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]


def test_an_offloaded_handler_is_cancelled_and_sees_it() -> None:
    """notifications/cancelled: no answer is sent, and ctx.cancelled tells the thread to stop."""
    server = MCPServer("cancel")
    started = threading.Event()
    stopped: list[str] = []

    @server.tool(offload=True)
    def long_job(ctx: Context) -> str:
        started.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if ctx.cancelled:
                stopped.append("saw the cancellation")
                return "stopped early"
            time.sleep(0.01)
        return "ran to the end"

    async def main() -> None:
        async with connect(server) as client:
            call = asyncio.ensure_future(client.call_tool("long_job"))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
            await client.notify("notifications/cancelled", {"requestId": max(client._waiting)})
            for _ in range(200):
                if stopped:
                    break
                await asyncio.sleep(0.01)
            assert stopped == ["saw the cancellation"]
            await asyncio.sleep(0.05)
            assert not call.done()  # no answer for a cancelled request
            call.cancel()

    run(main())


def test_a_shutdown_names_the_handlers_still_running_in_the_pool(caplog: pytest.LogCaptureFixture) -> None:
    """A thread cannot be stopped: the process exits only once its handler returns, after the
    shutdown timeout if need be. The shutdown log names the handlers it waits for."""
    from mcp_fast.app import say_what_threads_hold
    from mcp_fast.dispatch.runner import running_in_threads

    server = MCPServer("holding")
    started, release = threading.Event(), threading.Event()

    @server.tool(offload=True)
    def hold() -> str:
        started.set()
        release.wait(10)
        return "released"

    async def main() -> None:
        async with connect(server) as client:
            call = asyncio.ensure_future(client.call_tool("hold"))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
            assert [name.rsplit(".", 1)[-1] for name in running_in_threads()] == ["hold"]
            with caplog.at_level(logging.WARNING, logger="mcp_fast"):
                say_what_threads_hold()
            release.set()
            assert (await call)["content"][0]["text"] == "released"
            assert running_in_threads() == []

    try:
        run(main())
    finally:
        release.set()
    [record] = [r for r in caplog.records if "handler thread" in r.getMessage()]
    assert "1 handler thread still running" in record.getMessage() and "hold" in record.getMessage()


@pytest.mark.parametrize("place", ["offload", "adaptive", "inline", "async"])
def test_exceptions_keep_their_messages_wherever_the_handler_runs(place: str) -> None:
    server = MCPServer("errors")
    options: dict[str, Any] = (
        {"offload": True} if place == "offload" else {"inline": True} if place == "inline" else {}
    )

    if place == "async":

        @server.tool()
        async def fail(kind: str) -> str:
            raise _error(kind)

    else:

        @server.tool(**options)
        def fail(kind: str) -> str:
            raise _error(kind)

    async def main() -> None:
        async with connect(server) as client:
            for _ in range(TRIAL_CALLS + 1):  # through the trial and after it
                tool_error = await client.call_tool("fail", {"kind": "tool"})
                assert (
                    tool_error["isError"] and tool_error["content"][0]["text"] == "a tool error, as written"
                )
                bug = await client.call_tool("fail", {"kind": "bug"})
                assert bug["isError"] and bug["content"][0]["text"] == "Tool 'fail' failed: a bug, as written"
                with pytest.raises(McpError) as protocol:
                    await client.call_tool("fail", {"kind": "protocol"})
                assert (protocol.value.code, protocol.value.message) == (
                    -32042,
                    "a protocol error, as written",
                )

    run(main())


def _error(kind: str) -> Exception:
    if kind == "tool":
        return ToolError("a tool error, as written")
    if kind == "protocol":
        return McpError(-32042, "a protocol error, as written")
    return ValueError("a bug, as written")


def test_inline_and_offload_are_checked_at_registration() -> None:
    server = MCPServer("options")
    with pytest.raises(ValueError, match="contradict"):

        @server.tool(inline=True, offload=True)
        def both() -> str:
            return ""

    with pytest.raises(ValueError, match="async def"):

        @server.tool(offload=True)
        async def coroutine() -> str:
            return ""


POOL_APP = '''
import threading
import time

from mcp_fast import MCPServer

server = MCPServer("pool")
lock = threading.Lock()
running = 0
peak = 0


@server.tool(offload=True)
def crowd(seconds: float) -> str:
    """Sleeps; answers its thread and the most calls seen running at once."""
    global running, peak
    with lock:
        running += 1
        peak = max(peak, running)
    time.sleep(seconds)
    with lock:
        running -= 1
    return f"{threading.current_thread().name} {peak}"
'''


@pytest.mark.parametrize(("threads", "calls", "expected_peak"), [(2, 4, 2), (None, 4, 4)])
def test_handler_threads_bounds_the_calls_that_run_at_once(
    tmp_path: Path, threads: int | None, calls: int, expected_peak: int
) -> None:
    """``--handler-threads N``: N offloaded calls at once, in threads named mcp_fast-handler_*;
    the default (32) lets all four run together."""
    (tmp_path / "pool_app.py").write_text(POOL_APP)
    flags = ["--stateless"] + ([] if threads is None else ["--handler-threads", str(threads)])
    server = start_server(tmp_path, *flags, app="pool_app:server", cwd=tmp_path)
    try:
        clients = [RawClient(server.port) for _ in range(calls)]
        for i, client in enumerate(clients):
            params = {"name": "crowd", "arguments": {"seconds": 0.3}}
            client.send(rpc_bytes("tools/call", params, i, **{"MCP-Protocol-Version": "2025-06-18"}))
        answers = [client.read_response().json()["result"]["content"][0]["text"] for client in clients]
        for client in clients:
            client.close()
    finally:
        stop_server(server)
    assert all(answer.startswith("mcp_fast-handler") for answer in answers), answers
    assert max(int(answer.split()[1]) for answer in answers) == expected_peak, answers


# -- the first step's Task (dispatch/runner.start_task) ---------------------------------------------


def _first_steps(*handlers: Any) -> list[Any]:
    """Start each handler's coroutine with start_task in one event loop; what each gave back
    (Finished: a 1-tuple of the value; a Task; or the exception its first step raised), once every Task has ended."""
    from mcp_fast.dispatch.runner import start_task

    async def main() -> list[Any]:
        outcomes: list[Any] = []
        for handler in handlers:
            try:
                started = start_task(handler(), "handler")
            except Exception as exc:  # noqa: BLE001 - the outcome under test
                outcomes.append(exc)
                continue
            if type(started) is not tuple:  # a Task, not Finished (a 1-tuple of the value)
                with contextlib.suppress(BaseException):
                    await started
            outcomes.append(started)
        await asyncio.sleep(0)  # done callbacks run
        return outcomes

    return run(main())


def test_a_handler_that_finishes_at_once_gives_its_value_and_a_kept_task_stays_its_own() -> None:
    """A first step's Task nobody kept serves the next handler (Python 3.11: a pure-Python Task
    is slow to make); a Task a handler kept, strongly or weakly, or waited on, or cancelled, is
    that handler's for good, and ends as a Task ends."""
    kept: list[Any] = []
    weak: list[Any] = []
    called: list[str] = []
    seen: list[tuple[int, bool]] = []

    async def plain() -> str:
        task = asyncio.current_task()
        seen.append((id(task), task is not None and not task.done()))
        return "plain"

    async def keeps() -> str:
        kept.append(asyncio.current_task())
        return "kept"

    async def keeps_weakly() -> str:
        weak.append(weakref.ref(asyncio.current_task()))  # type: ignore[arg-type]
        return "weak"

    async def adds_a_callback() -> str:
        asyncio.current_task().add_done_callback(lambda task: called.append(task.result()))  # type: ignore[union-attr]
        return "callback"

    async def cancels_itself() -> str:
        asyncio.current_task().cancel()  # type: ignore[union-attr]
        return "never seen"

    async def fails() -> str:
        raise ValueError("the handler's own message")

    async def waits() -> str:
        await asyncio.sleep(0)
        return "waited"

    outcomes = _first_steps(plain, keeps, keeps_weakly, adds_a_callback, cancels_itself, fails, plain, waits, plain)
    finished = [o[0] if type(o) is tuple else None for o in outcomes]
    assert finished == ["plain", None, None, None, None, None, "plain", None, "plain"]
    # Each handler saw a real, running Task as its current one.
    assert [running for _, running in seen] == [True, True, True]
    # The kept Tasks ended as Tasks do, with their handlers' values.
    assert outcomes[1] is kept[0] and kept[0].done() and kept[0].result() == "kept"
    assert outcomes[2] is weak[0]() and outcomes[2].result() == "weak"
    assert called == ["callback"]
    assert outcomes[4].cancelled()  # as a Task cancelled during its step ends
    assert isinstance(outcomes[5], ValueError) and str(outcomes[5]) == "the handler's own message"
    assert outcomes[7].result() == "waited"
    # A Task a handler kept was not handed to a later handler (the last `plain` came after all).
    assert seen[2][0] not in {id(task) for task in (kept[0], outcomes[2], outcomes[3], outcomes[4], outcomes[7])}


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ makes its eager Tasks in C")
def test_a_first_steps_task_nobody_kept_serves_the_next_handler() -> None:
    """The count of references a Task has when nobody else holds it (runner._UNSEEN_REFERENCES)
    matches this Python: otherwise every Task would be made anew (slow, but not wrong)."""
    seen: list[int] = []

    async def plain() -> None:
        seen.append(id(asyncio.current_task()))

    _first_steps(plain, plain, plain)
    assert len(set(seen)) == 1
