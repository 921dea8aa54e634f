"""The request pipeline over every transport, with real servers and the official `mcp` client:
middleware (what it sees, McpError, a short-circuited result), lifespan and routes.

The app is `tests/apps/pipeline_app.py`: a recording middleware outermost, a guard middleware
that refuses the tool `forbidden` with McpError(-32050) and answers the tool `short` itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx2
import orjson
import pytest
from conftest import ROOT, RunningServer, free_port, start_server, stop_server, wait_for_port
from mcp import Client, types
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

APP = "tests.apps.pipeline_app:server"
TIMEOUT_S = 30.0
T = TypeVar("T")

pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    secret = "a-session-secret-for-the-pipeline-tests"
    running = start_server(tmp_path_factory.mktemp("pipeline"), "--session-secret", secret, app=APP)
    try:
        yield running
    finally:
        stop_server(running)
    log = running.log()
    # The one traceback is the operator's copy of the bug in /broken (test_routes).
    assert log.count("Traceback") == log.count("ValueError: a bug in a route"), log


def reset(server: RunningServer) -> None:
    response = httpx2.post(f"http://127.0.0.1:{server.port}/seen/reset", timeout=10)
    assert response.status_code == 204, response.text


def seen(server: RunningServer) -> list[dict[str, Any]]:
    response = httpx2.get(f"http://127.0.0.1:{server.port}/seen", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    entries: list[dict[str, Any]] = response.json()
    return entries


def text_of(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent), result
    return block.text


def run(body: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        with anyio.fail_after(TIMEOUT_S):
            return await body()

    return anyio.run(main)


async def exercise(client: Client) -> dict[str, Any]:
    """The same four calls on every transport; what came back."""
    outcome: dict[str, Any] = {}
    echoed = await client.call_tool("echo", {"message": "through the chain"})
    outcome["echo"] = text_of(echoed)
    outcome["echo_meta"] = (echoed.meta or {}).get("middleware")
    try:
        await client.call_tool("forbidden", {})
    except MCPError as exc:
        outcome["forbidden"] = (exc.code, exc.message, exc.data)
    outcome["short"] = text_of(await client.call_tool("short", {}))
    value = await client.call_tool("lifespan_value", {})
    outcome["lifespan"] = value.structured_content
    return outcome


def check(outcome: dict[str, Any], entries: list[dict[str, Any]], transport: str, version: str) -> None:
    assert outcome["echo"] == "through the chain"
    assert outcome["echo_meta"] == "saw the result"  # a middleware may look at the result and change it
    assert outcome["forbidden"] == (-32050, "Forbidden by a middleware", {"tool": "forbidden"})
    assert outcome["short"] == "answered by a middleware"
    lifespan = outcome["lifespan"]
    assert lifespan["lifespan"]["name"] == "pipeline-app" and lifespan["transport"] == transport
    assert lifespan["tool"] == "lifespan_value"
    calls = [entry for entry in entries if entry["method"] == "tools/call"]
    # Each tools/call passed the chain exactly once, with its tool name.
    assert [entry["tool"] for entry in calls] == ["echo", "forbidden", "short", "lifespan_value"], calls
    for entry in calls:
        assert entry["transport"] == transport, entry
        assert entry["version"] == version, entry
        assert entry["principal"] is None


def test_streamable_http_with_a_2025_session(server: RunningServer) -> None:
    reset(server)

    async def body() -> dict[str, Any]:
        http = httpx2.AsyncClient(headers={"X-Test": "a header"}, timeout=TIMEOUT_S)
        async with http, Client(streamable_http_client(server.url, http_client=http), mode="legacy", cache=None) as client:
            return await exercise(client)

    outcome = run(body)
    entries = seen(server)
    check(outcome, entries, "streamable-http", "2025-11-25")
    assert entries[0]["method"] == "initialize" and entries[0]["session"] is False
    calls = [entry for entry in entries if entry["method"] == "tools/call"]
    assert all(entry["session"] and entry["client"] and entry["header"] == "a header" for entry in calls), calls


def test_streamable_http_sessionless_2026(server: RunningServer) -> None:
    reset(server)

    async def body() -> tuple[str, dict[str, Any]]:
        async with Client(server.url, mode="auto", cache=None) as client:
            return client.protocol_version, await exercise(client)

    version, outcome = run(body)
    assert version == "2026-07-28"
    entries = seen(server)
    check(outcome, entries, "streamable-http", "2026-07-28")
    assert not any(entry["session"] for entry in entries)


def test_the_old_http_sse_transport(server: RunningServer) -> None:
    reset(server)

    async def body() -> dict[str, Any]:
        async with Client(sse_client(f"http://127.0.0.1:{server.port}/sse"), cache=None) as client:
            return await exercise(client)

    outcome = run(body)
    entries = seen(server)
    check(outcome, entries, "sse", "2025-11-25")
    assert all(entry["session"] and entry["client"] for entry in entries), entries


def test_http2(server: RunningServer) -> None:
    reset(server)
    versions: list[str] = []

    async def body() -> dict[str, Any]:
        async def on_response(response: httpx2.Response) -> None:
            versions.append(response.http_version)

        http = httpx2.AsyncClient(http1=False, http2=True, timeout=TIMEOUT_S, event_hooks={"response": [on_response]})
        async with http, Client(streamable_http_client(server.url, http_client=http), mode="legacy", cache=None) as client:
            return await exercise(client)

    outcome = run(body)
    assert set(versions) == {"HTTP/2"}
    check(outcome, seen(server), "streamable-http", "2025-11-25")
    # A route over HTTP/2 too.
    with httpx2.Client(http1=False, http2=True, timeout=TIMEOUT_S) as http:
        response = http.get(f"http://127.0.0.1:{server.port}/hello?name=h2")
        assert (response.http_version, response.status_code, response.text) == ("HTTP/2", 201, "hello h2; 0 bytes from GET")


@pytest.mark.parametrize(("mode", "version"), [("legacy", "2025-11-25"), ("auto", "2026-07-28")])
def test_stdio(tmp_path: Path, mode: str, version: str) -> None:
    marker = tmp_path / "marker"
    parameters = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_fast", APP, "--transport", "stdio"],
        cwd=str(ROOT),
        env={"PYTHONUNBUFFERED": "1", "PIPELINE_APP_MARKER": str(marker)},
    )

    async def body() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        with open(tmp_path / "stderr", "w") as errlog:
            async with Client(stdio_client(parameters, errlog=errlog), mode=mode, cache=None) as client:
                outcome = await exercise(client)
                entries = (await client.call_tool("seen", {})).structured_content
                assert entries is not None
                return outcome, entries["result"][:-1]  # up to the call of `seen` itself

    outcome, entries = run(body)
    check(outcome, entries, "stdio", version)
    assert all(entry["header"] is None and not entry["client"] for entry in entries), entries
    assert "Traceback" not in (tmp_path / "stderr").read_text()
    lines = marker.read_text().split()
    assert lines[0::2] == ["enter", "exit"], lines  # the lifespan ran around the session


# -- routes ----------------------------------------------------------------------------------------


def test_routes(server: RunningServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    with httpx2.Client(timeout=TIMEOUT_S) as http:
        hello = http.get(f"{base}/hello", params={"name": "route"})
        assert (hello.status_code, hello.text, hello.headers["x-route"]) == (201, "hello route; 0 bytes from GET", "hello")
        assert hello.headers["content-type"] == "text/plain; charset=utf-8"
        posted = http.post(f"{base}/hello", content=b"12345")
        assert posted.text == "hello world; 5 bytes from POST"
        wrong = http.delete(f"{base}/hello")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, POST"
        broken = http.get(f"{base}/broken")
        assert broken.status_code == 500 and broken.text == "Internal server error\n"
        # The DNS-rebinding check applies to routes unless they opt out (/hello does).
        assert http.get(f"{base}/seen", headers={"Host": "evil.example.com"}).status_code == 421
        assert http.get(f"{base}/hello", headers={"Host": "evil.example.com"}).status_code == 201
        assert http.get(f"{base}/nothing-here").status_code == 404
    assert "ValueError: a bug in a route" in server.log()  # logged for the operator, not sent


# -- lifespan --------------------------------------------------------------------------------------


def test_lifespan_runs_around_serving(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    running = start_server(tmp_path, app=APP, env={"PIPELINE_APP_MARKER": str(marker)})
    try:
        assert marker.read_text().split()[0] == "enter"  # before the port accepted anything
        response = httpx2.get(f"http://127.0.0.1:{running.port}/seen", timeout=10)
        assert response.status_code == 200
    finally:
        stop_server(running)
    assert running.process.returncode == 0
    assert marker.read_text().split()[0::2] == ["enter", "exit"]


def test_lifespan_with_workers_runs_in_every_worker(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    running = start_server(tmp_path, "--workers", "2", "--no-legacy-sse", app=APP, env={"PIPELINE_APP_MARKER": str(marker)})
    try:
        deadline = time.monotonic() + 10
        while marker.read_text().count("enter") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop_server(running)
    words = marker.read_text().split()
    enters = {words[i + 1] for i in range(0, len(words), 2) if words[i] == "enter"}
    exits = {words[i + 1] for i in range(0, len(words), 2) if words[i] == "exit"}
    assert len(enters) == 2 and enters == exits, words


def test_a_failing_lifespan_stops_start_up_with_exit_code_1(tmp_path: Path) -> None:
    for transport in ("http", "stdio"):
        done = subprocess.run(
            [sys.executable, "-m", "mcp_fast", APP, "--transport", transport, "--port", str(free_port())],
            cwd=ROOT, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
            env={**os.environ, "PIPELINE_APP_FAIL": "1"},
        )  # fmt: skip
        assert done.returncode == 1, (transport, done.stderr)
        assert "the lifespan of 'pipeline-app' failed at start-up: RuntimeError: the database is not reachable" in done.stderr
        assert "Traceback" not in done.stderr


def test_sigterm_leaves_the_lifespan_after_the_last_request(tmp_path: Path) -> None:
    """A request in flight when SIGTERM comes is answered; the lifespan exits after it."""
    marker = tmp_path / "marker"
    port = free_port()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_fast", APP, "--port", str(port), "--stateless"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PIPELINE_APP_MARKER": str(marker)},
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port, process)
        body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "slow", "arguments": {"seconds": 0.5}}})
        with httpx2.Client(timeout=TIMEOUT_S) as http:
            headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
            started = time.monotonic()

            def late_sigterm() -> None:
                time.sleep(0.2)
                process.send_signal(signal.SIGTERM)

            threading.Thread(target=late_sigterm).start()
            response = http.post(f"http://127.0.0.1:{port}/mcp", content=body, headers=headers)
            assert response.status_code == 200 and b'"result"' in response.content, response.content
            assert time.monotonic() - started >= 0.5
        assert process.wait(timeout=15) == 0
        assert marker.read_text().split()[0::2] == ["enter", "exit"]
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


# -- the built-in probes (routes of their own) -----------------------------------------------------


def test_health_and_readiness_probes(tmp_path: Path) -> None:
    running = start_server(tmp_path, "--stateless", app=APP)
    base = f"http://127.0.0.1:{running.port}"
    try:
        with httpx2.Client(timeout=TIMEOUT_S) as http:
            health = http.get(f"{base}/health", headers={"Host": "10.0.0.7:8000"})  # kubelets call by IP
            assert (health.status_code, health.json()) == (200, {"status": "ok"})
            ready = http.get(f"{base}/ready")
            assert (ready.status_code, ready.json()) == (200, {"status": "ready", "checks": {}})
        # Draining on SIGTERM: an open connection gets 503 from /ready while requests finish.
        answers: list[httpx2.Response] = []

        def slow_call() -> None:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "slow", "arguments": {"seconds": 1}}}
            with httpx2.Client(timeout=TIMEOUT_S) as caller:
                answers.append(caller.post(f"{base}/mcp", content=orjson.dumps(body), headers={"Content-Type": "application/json", "Accept": "application/json"}))

        slow = threading.Thread(target=slow_call)
        with httpx2.Client(timeout=TIMEOUT_S) as prober:
            assert prober.get(f"{base}/ready").status_code == 200  # the connection is open now
            slow.start()
            time.sleep(0.2)
            running.process.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            draining = prober.get(f"{base}/ready")
            assert draining.status_code == 503, draining.text
            assert draining.json() == {"status": "not ready", "checks": {"draining": "failing"}}
            slow.join()
        assert answers[0].status_code == 200 and answers[0].json()["result"]["content"][0]["text"] == "slept 1"
        assert running.process.wait(timeout=15) == 0
    finally:
        stop_server(running)


def test_probe_paths_are_configurable_and_checked(tmp_path: Path) -> None:
    running = start_server(tmp_path, "--health-path", "/livez", "--ready-path", "", "--stateless", app=APP)
    try:
        with httpx2.Client(timeout=TIMEOUT_S) as http:
            assert http.get(f"http://127.0.0.1:{running.port}/livez").status_code == 200
            assert http.get(f"http://127.0.0.1:{running.port}/ready").status_code == 404
            assert http.get(f"http://127.0.0.1:{running.port}/health").status_code == 404
    finally:
        stop_server(running)
    done = subprocess.run(
        [sys.executable, "-m", "mcp_fast", APP, "--health-path", "/seen", "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--health-path /seen: that path is taken" in done.stderr and "Traceback" not in done.stderr
