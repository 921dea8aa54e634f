"""The README's Python examples run as written: the app of "Writing a server", its test from
"Testing your server", and the examples of "Middleware" and "Lifespan and routes"."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from conftest import ROOT, start_server, stop_server

from mcp_fast import McpError
from mcp_fast.testing import connect

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def block_starting(prefix: str) -> str:
    found = [block for block in BLOCKS if block.startswith(prefix)]
    assert len(found) == 1, f"one README python block must start with {prefix!r}"
    return found[0]


def section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_app_and_its_test_as_the_readme_writes_them(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(block_starting("# myapp.py"))
    (tmp_path / "test_myapp.py").write_text(block_starting("# test_myapp.py"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_myapp.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_the_middleware_example() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(re.findall(r"```python\n(.*?)```", section("Middleware"), re.S)[0], "README", "exec"), namespace)
    server = namespace["server"]

    @server.tool(inline=True)
    def deploy() -> str:
        return "deployed"

    @server.tool(inline=True)
    def status() -> str:
        raise AssertionError("answered by the middleware")

    async def main() -> None:
        async with connect(server, headers={"X-Team": "ops"}) as client:
            assert (await client.call_tool("deploy"))["content"][0]["text"] == "deployed"
            assert (await client.call_tool("status"))["content"][0]["text"] == "all green"
        async with connect(server, headers={"X-Team": "dev"}) as client:
            with pytest.raises(McpError) as refused:
                await client.call_tool("deploy")
            assert (refused.value.code, refused.value.data) == (-32001, {"tool": "deploy"})

    asyncio.run(main())


def test_the_lifespan_and_routes_example(tmp_path: Path) -> None:
    code = re.findall(r"```python\n(.*?)```", section("Lifespan and routes"), re.S)[0]
    (tmp_path / "inventory.py").write_text(code)
    running = start_server(tmp_path, "--stateless", app="inventory:server", env={"PYTHONPATH": str(tmp_path)})
    try:
        base = f"http://127.0.0.1:{running.port}"
        with httpx2.Client(timeout=30) as http:
            assert http.get(f"{base}/version").json() == {"version": "1.2.3"}
            webhook = http.post(f"{base}/webhook", content=b"abc")
            assert (webhook.status_code, webhook.text) == (202, "got 3 bytes")
            call = http.post(
                f"{base}/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "stock", "arguments": {"item": "x"}}},
                headers={"Accept": "application/json"},
            )
            assert call.json()["result"]["content"][0]["text"] == '{"result":7}'
    finally:
        stop_server(running)
    assert "Traceback" not in running.log()
