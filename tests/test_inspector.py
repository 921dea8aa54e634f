"""The MCP Inspector CLI (npm `@modelcontextprotocol/inspector`), a second official client, against
mcp_fast over each transport: Streamable HTTP, the old HTTP+SSE transport and stdio.

`scripts/install_inspector.sh` installs it (and Node 22) into `.cache/` when missing; this test
never skips for a missing Node or npm: it installs them, or fails saying why. Each case runs one
`inspector --cli ... --method M` (the Inspector connects, initializes, does M, prints the result as
JSON and exits) and checks the printed result and the exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import CONFORMANCE_APP, ROOT, RunningServer, module_server

INSTALL_SCRIPT = ROOT / "scripts" / "install_inspector.sh"
RUN_TIMEOUT_S = 60
# The CLI's exit code when a tool answers isError or the call is refused (seen with 2.12.0).
TOOL_FAILED = 5

server = module_server("--session-secret", "an-inspector-test-secret-long-enough-0123")


@dataclass(frozen=True)
class Inspector:
    node_bin_dir: str
    launcher: str


@pytest.fixture(scope="module")
def inspector() -> Inspector:
    proc = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"{INSTALL_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    node_bin_dir, launcher = proc.stdout.split()
    return Inspector(node_bin_dir, launcher)


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


TRANSPORTS = ["streamable-http", "old-http-sse", "stdio"]


@pytest.fixture(params=TRANSPORTS)
def target(request: pytest.FixtureRequest, server: RunningServer) -> list[str]:
    """What comes after ``--cli`` to reach the server over one transport."""
    base = f"http://127.0.0.1:{server.port}"
    if request.param == "streamable-http":
        return [f"{base}/mcp", "--transport", "http"]
    if request.param == "old-http-sse":
        return [f"{base}/sse", "--transport", "sse"]
    # stdio: the Inspector starts the server itself; "--" keeps our flags away from its parser.
    return ["--", sys.executable, "-m", "mcp_fast", CONFORMANCE_APP, "--transport", "stdio"]


def run(inspector: Inspector, target: list[str], *args: str) -> Outcome:
    """One Inspector CLI call; ``args`` (the method and its options) go before a stdio command."""
    argv = [*args, *target] if target[0] == "--" else [target[0], *args, *target[1:]]
    env = {**os.environ, "PATH": f"{inspector.node_bin_dir}:{os.environ['PATH']}", "NO_COLOR": "1"}
    proc = subprocess.run(
        ["node", inspector.launcher, "--cli", *argv],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, cwd=ROOT, check=False,
    )  # fmt: skip
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def ok(outcome: Outcome) -> Any:
    assert outcome.code == 0, (outcome.code, outcome.stdout[-2000:], outcome.stderr[-2000:])
    return outcome.json()


def test_tools_list(inspector: Inspector, target: list[str]) -> None:
    tools = {tool["name"]: tool for tool in ok(run(inspector, target, "--method", "tools/list"))["tools"]}
    assert tools["echo"]["inputSchema"]["required"] == ["message"]
    assert tools["echo"]["inputSchema"]["properties"]["message"]["type"] == "string"
    assert "test_simple_text" in tools


def test_tools_call(inspector: Inspector, target: list[str]) -> None:
    result = ok(run(inspector, target, "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "message=hi"))
    assert result == {"content": [{"type": "text", "text": "hi"}], "isError": False}


def test_a_tool_error_and_bad_arguments_are_reported_as_such(inspector: Inspector, target: list[str]) -> None:
    failed = run(inspector, target, "--method", "tools/call", "--tool-name", "test_error_handling")
    assert failed.code == TOOL_FAILED, failed
    assert '"isError": true' in failed.stdout
    missing = run(inspector, target, "--method", "tools/call", "--tool-name", "echo")
    assert missing.code == TOOL_FAILED, missing
    assert "message: Field required" in missing.stdout  # a sentence a person understands


def test_resources(inspector: Inspector, target: list[str]) -> None:
    listed = ok(run(inspector, target, "--method", "resources/list"))
    assert "test://static-text" in {resource["uri"] for resource in listed["resources"]}
    read = ok(run(inspector, target, "--method", "resources/read", "--uri", "test://static-text"))
    assert read["contents"] == [
        {
            "uri": "test://static-text",
            "mimeType": "text/plain",
            "text": "This is the content of the static text resource.",
        }
    ]
    templates = ok(run(inspector, target, "--method", "resources/templates/list"))
    assert [t["uriTemplate"] for t in templates["resourceTemplates"]] == ["test://template/{id}/data"]


def test_prompts(inspector: Inspector, target: list[str]) -> None:
    listed = ok(run(inspector, target, "--method", "prompts/list"))
    assert "test_prompt_with_arguments" in {prompt["name"] for prompt in listed["prompts"]}
    arguments = ["--prompt-name", "test_prompt_with_arguments", "--prompt-args", "arg1=a", "arg2=b"]
    got = ok(run(inspector, target, "--method", "prompts/get", *arguments))
    assert got["messages"][0]["content"]["text"] == "Prompt with arguments: arg1='a', arg2='b'"


def test_logging_set_level(inspector: Inspector, target: list[str]) -> None:
    assert ok(run(inspector, target, "--method", "logging/setLevel", "--log-level", "debug")) == {}


def test_the_server_logged_no_traceback(server: RunningServer) -> None:
    assert "Traceback" not in server.log(), server.log()
