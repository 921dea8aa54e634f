"""Every shell command of README.md runs as written, against real servers, and answers as it says.

How the README and this file stay in step (read this before adding a ```bash block):

- Every ```bash block is listed in BLOCKS below by its first line: checked here, or skipped by
  design with the reason (installing into this environment, needing a container engine, a
  cluster or systemd). A block that is in neither fails test_every_bash_block_is_accounted_for.
- A block runs with bash, unchanged but for ports: `127.0.0.1:8000`, `--port 8000/8001/8002`
  become free loopback ports (a server block without a port gets MCP_FAST_PORT instead). The
  installed `mcp-fast` script is this checkout's (conftest.console_script).
- `myapp.py` is the README's ```python block that starts with `# myapp.py`; the blocks that
  serve `myapp:server` run in a directory holding it.
- A sentence "prints `X`" right after a checked block is checked too: the block prints X.
- The configuration tables are checked against the server's option table (config.OPTIONS).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import ROOT, console_script, free_ports
from httpclient import MCP_HEADERS, RawClient, Response, client_request_bytes
from redis_server import running_redis
from test_nginx import ensure_tool

from mcp_fast.config import GROUPS, OPTIONS, Option

README = ROOT / "README.md"


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass(frozen=True)
class Check:
    test: str  # the test below that runs the block


BLOCKS: dict[str, Skip | Check] = {
    "python -m pip install -e .": Skip(
        "installs this checkout into the environment: .ci/run runs the same install (with the test extra) before the tests"
    ),
    "python -m mcp_fast": Check("test_quick_start"),
    "SESSION=$(curl -s -o /dev/null -w '%header{mcp-session-id}' http://127.0.0.1:8000/mcp \\": Check(
        "test_quick_start"
    ),
    "curl -s http://127.0.0.1:8000/mcp -H 'Content-Type: application/json' \\": Check("test_quick_start"),
    "python -m pip install -e '.[test]' && python -m pytest -q": Skip(
        "the test suite itself (.ci/run runs exactly this)"
    ),
    "python -m mcp_fast myapp:server --port 8000": Check("test_writing_a_server"),
    "python -m mcp_fast myapp:server --transport stdio": Check("test_stdio"),
    "mcp-fast --help": Check("test_command_line"),
    "mcp-fast --version": Check("test_command_line"),
    "mcp-fast --port 70000": Check("test_command_line"),
    "sudo systemctl daemon-reload && sudo systemctl enable --now mcp-fast": Skip(
        "needs systemd as PID 1 and root; tests/test_deploy.py verifies the unit (systemd-analyze) and runs its ExecStart behind nginx"
    ),
    "docker build -f deploy/Dockerfile -t mcp-fast .": Skip(
        "needs a container engine (none in CI); tests/test_deploy.py lints the Dockerfile and runs its CMD and HEALTHCHECK, scripts/build_image.sh builds and runs it by hand"
    ),
    "bash scripts/build_image.sh --debian-base": Skip(
        "needs a container engine (podman); run by hand, not in CI"
    ),
    'export MCP_FAST_SESSION_SECRET="$(openssl rand -hex 32)"   # once: every instance gets the same': Check(
        "test_instances_behind_nginx"
    ),
    'export MCP_FAST_SESSION_SECRET="$(openssl rand -hex 32)"': Skip(
        "docker compose needs a container engine; tests/test_deploy.py runs compose's nginx.conf in front of three instances configured as compose.yaml says"
    ),
    "python -m mcp_fast secured:server \\": Skip(
        "names an authorization server on the internet (auth.example.com); tests/test_production.py serves the README's secured.py with the same flags against a JWKS and an authorization server of its own"
    ),
    "python -m mcp_fast myapp:server --rate-limit 100/60s --idempotency-ttl 600": Check(
        "test_rate_limits_and_idempotency"
    ),
    "curl -s http://127.0.0.1:8000/mcp -H 'Content-Type: application/json' -H 'Idempotency-Key: order-42' \\": Check(
        "test_rate_limits_and_idempotency"
    ),
    "python -m mcp_fast myapp:server --host 0.0.0.0 --cors-origins https://app.example.com \\": Check(
        "test_cors_and_proxies"
    ),
    "python -m mcp_fast myapp:server --workers 4 --audit-log audit.jsonl --access-log -": Check(
        "test_metrics_and_logs"
    ),
    "curl -s http://127.0.0.1:8000/metrics | grep mcp_server_requests_total": Check("test_metrics_and_logs"),
    "python -m mcp_fast myapp:server --host 0.0.0.0 --port 8443 \\": Skip(
        "names certificate files under /etc/mcp/tls that only a real host has; tests/test_tls.py serves with the same "
        "flags and certificates it makes (curl --http2 and --http1.1, the official client, reload, start-up errors)"
    ),
    "kubectl apply -k deploy/k8s/": Skip(
        "needs a Kubernetes cluster; tests/test_deploy.py validates the manifests with kubernetes-validate --strict"
    ),
    "python bench/soak.py --seconds 30": Skip(
        "a benchmark (about 40 s, most of the machine): tests/test_soak.py runs bench/soak.py briefly, "
        "the mix and each fault, and checks what it reports"
    ),
    "python scripts/mutations.py --check   # seconds: every row still applies (tests/test_mutations.py runs this)": Skip(
        "the full run applies every mutation and runs its tests (the suite within the suite); "
        "tests/test_mutations.py runs the --check line"
    ),
}


def bash_blocks() -> list[str]:
    return re.findall(r"^```bash\n(.*?)\n```$", README.read_text(), re.M | re.S)


def block(first_line: str) -> str:
    [found] = [text for text in bash_blocks() if text.splitlines()[0] == first_line]
    return found


def stated_output(first_line: str) -> str | None:
    """X of the README's "prints `X`" that follows the block, if it says one."""
    text = README.read_text()
    after = text.split(block(first_line) + "\n```\n", 1)[1]
    match = re.match(r"\s*prints `([^`]+)`", after)
    return " ".join(match[1].split()) if match else None


def myapp_source() -> str:
    [source] = [
        b
        for b in re.findall(r"^```python\n(.*?)\n```$", README.read_text(), re.M | re.S)
        if b.startswith("# myapp.py")
    ]
    return source


def with_ports(text: str, ports: dict[int, int]) -> str:
    for old, new in ports.items():
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}").replace(f"--port {old}", f"--port {new}")
    return text


def shell_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh shell on a machine where mcp_fast is installed."""
    bin_dir = tmp_path / "bin"
    if not (bin_dir / "mcp-fast").exists():
        console_script(bin_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_FAST_")}
    env.update(
        {"PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    )
    env.update(extra)
    return env


def run_block(
    text: str, cwd: Path, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", text], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


@contextlib.contextmanager
def serving(text: str, cwd: Path, env: dict[str, str], ports: list[int]) -> Iterator[Path]:
    """A block that starts servers, run with bash in a process group of its own; stopped with
    SIGTERM to the group."""
    log = cwd / f"block-{ports[0]}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["bash", "-c", text],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        for port in ports:
            _wait_listening(port, log)
        yield log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
        deadline = time.monotonic() + 15
        while any(_listening(port) for port in ports) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "Traceback" not in log.read_text(), log.read_text()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_listening(port: int, log: Path) -> None:
    """Until a server listens on ``port``: in the foreground of the block, or started in the
    background (`&`), when bash has exited and the server runs on."""
    deadline = time.monotonic() + 15
    while not _listening(port):
        assert time.monotonic() < deadline, f"nothing listens on {port}:\n{log.read_text()}"
        time.sleep(0.05)


def post(
    port: int, method: str, params: dict[str, Any], session: str | None = None, host: str = "127.0.0.1"
) -> Response:
    headers = {**MCP_HEADERS, "MCP-Protocol-Version": "2025-11-25"}
    if session:
        headers["Mcp-Session-Id"] = session
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    with RawClient(port) as client:
        client.send(client_request_bytes("POST", "/mcp", body, headers, host=host))
        return client.read_response()


def answer(response: Response) -> Any:
    """The JSON-RPC response, whether it came as JSON or at the end of an SSE stream."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        [final] = [message for message in response.sse_messages() if "id" in message]
        return final
    return response.json()


INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "readme", "version": "1"}}


# -- the blocks ------------------------------------------------------------------------------------


def test_every_bash_block_is_accounted_for() -> None:
    """A new ```bash block in the README is run by a test here, or skipped with a reason."""
    first_lines = [text.splitlines()[0] for text in bash_blocks()]
    assert len(first_lines) == len(set(first_lines)), "two blocks start alike: tell them apart"
    assert sorted(first_lines) == sorted(BLOCKS), (
        f"README blocks not listed in tests/test_readme.py: {sorted(set(first_lines) - set(BLOCKS))}; "
        f"listed but gone: {sorted(set(BLOCKS) - set(first_lines))}"
    )
    tests = {name for name, value in globals().items() if name.startswith("test_") and callable(value)}
    for first_line, how in BLOCKS.items():
        if isinstance(how, Check):
            assert how.test in tests, first_line
        else:
            assert len(how.reason) > 20, first_line


def test_quick_start(tmp_path: Path) -> None:
    """`python -m mcp_fast`, then the curl commands from a second terminal."""
    [port] = free_ports(1)
    env = shell_env(tmp_path)
    with serving(block("python -m mcp_fast"), tmp_path, {**env, "MCP_FAST_PORT": str(port)}, [port]) as log:
        session_call = (
            "SESSION=$(curl -s -o /dev/null -w '%header{mcp-session-id}' http://127.0.0.1:8000/mcp \\"
        )
        result = run_block(with_ports(block(session_call), {8000: port}), tmp_path, env)
        assert result.returncode == 0, result.stderr
        assert orjson.loads(result.stdout) == {
            "jsonrpc": "2.0",
            "id": 2,
            "result": {"content": [{"type": "text", "text": "hi"}], "isError": False},
        }
        assert stated_output(session_call) == result.stdout.strip()
        sessionless = "curl -s http://127.0.0.1:8000/mcp -H 'Content-Type: application/json' \\"
        result = run_block(with_ports(block(sessionless), {8000: port}), tmp_path, env)
        assert result.returncode == 0, result.stderr
        answer = orjson.loads(result.stdout)
        assert (
            answer["result"]["structuredContent"] == {"result": 5}
            and answer["result"]["resultType"] == "complete"
        )
        assert '"structuredContent":{"result":5}' in result.stdout  # as the README quotes it
    assert f"serving 'mcp-fast-demo' on http://127.0.0.1:{port} " in log.read_text()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with the README's myapp.py."""
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "myapp.py").write_text(myapp_source())
    return directory


def test_writing_a_server(project: Path, tmp_path: Path) -> None:
    """The README's myapp.py, served by its command, answers as the README describes."""
    [port] = free_ports(1)
    command = with_ports(block("python -m mcp_fast myapp:server --port 8000"), {8000: port})
    with serving(command, project, shell_env(tmp_path), [port]):
        initialized = post(port, "initialize", INIT)
        assert initialized.json()["result"]["serverInfo"]["name"] == "weather"
        session = initialized.headers["mcp-session-id"]
        tools = {
            tool["name"]: tool for tool in post(port, "tools/list", {}, session).json()["result"]["tools"]
        }
        assert set(tools) == {"echo", "forecast"}
        assert tools["forecast"]["inputSchema"]["properties"]["city"]["description"] == "City name"
        assert "outputSchema" in tools["forecast"]
        paris = {"name": "forecast", "arguments": {"city": "Paris"}}
        forecast = answer(post(port, "tools/call", paris, session))["result"]
        assert forecast["structuredContent"] == {"city": "Paris", "celsius": 21.5}
        nowhere = {"name": "forecast", "arguments": {"city": ""}}
        empty = answer(post(port, "tools/call", nowhere, session))["result"]
        assert empty["isError"] is True and empty["content"][0]["text"] == "city must not be empty"
        read = post(port, "resources/read", {"uri": "weather://cities/Oslo"}, session).json()["result"]
        assert orjson.loads(read["contents"][0]["text"]) == {"city": "Oslo"}
        prompt = post(
            port, "prompts/get", {"name": "plan_trip", "arguments": {"city": "Rome"}}, session
        ).json()["result"]
        assert prompt["messages"][0]["content"]["text"] == "Plan a day in Rome."


def test_stdio(project: Path, tmp_path: Path) -> None:
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": "over stdio"}},
        },
    ]
    stdin = "".join(orjson.dumps(line).decode() + "\n" for line in lines)
    result = run_block(
        block("python -m mcp_fast myapp:server --transport stdio"), project, shell_env(tmp_path), stdin
    )
    assert result.returncode == 0, result.stderr
    answers = {answer["id"]: answer for answer in map(orjson.loads, result.stdout.splitlines())}
    assert answers[1]["result"]["serverInfo"]["name"] == "weather"
    assert answers[2]["result"]["content"] == [{"type": "text", "text": "over stdio"}]
    assert "Traceback" not in result.stderr


def test_command_line(tmp_path: Path) -> None:
    env = shell_env(tmp_path)
    helped = run_block(block("mcp-fast --help"), tmp_path, env)
    assert (
        helped.returncode == 0 and "HTTP limits:" in helped.stdout and "--max-body-size SIZE" in helped.stdout
    )
    version = run_block(block("mcp-fast --version"), tmp_path, env)
    stated = stated_output("mcp-fast --version")
    assert stated is None  # the README gives an example instead, "e.g. `...`": its form is checked
    text = README.read_text()
    [example] = re.findall(r"e\.g\. `(mcp-fast [^`]+)`", text.split(block("mcp-fast --version"), 1)[1])
    pattern = re.escape(" ".join(example.split())).replace(r"3\.11\.7", r"3\.\d+\.\d+")
    assert re.fullmatch(pattern, " ".join(version.stdout.split())), (example, version.stdout)
    refused = run_block(block("mcp-fast --port 70000"), tmp_path, env)
    assert refused.returncode == 2
    assert stated_output("mcp-fast --port 70000") in refused.stderr.splitlines()
    # The prose's second example, as written there.
    [variable_example] = re.findall(
        r"`(MCP_FAST_LOG_LEVEL=verbose mcp-fast)` prints `([^`]+)`", " ".join(text.split())
    )
    command, said = variable_example
    refused = run_block(command, tmp_path, env)
    assert refused.returncode == 2 and said in " ".join(refused.stderr.split()), refused.stderr


def test_instances_behind_nginx(project: Path, tmp_path: Path) -> None:
    """The two instances of "Instances behind nginx", started as written (in the background),
    share the secret and Redis (a real redis-server where the block says 6379): a session begun
    on one is served by the other, and a DELETE on one ends it on the other."""
    ensure_tool("openssl", "openssl")
    first = 'export MCP_FAST_SESSION_SECRET="$(openssl rand -hex 32)"   # once: every instance gets the same'
    port_a, port_b = free_ports(2)
    with running_redis(tmp_path / "redis") as redis:
        command = with_ports(block(first), {8001: port_a, 8002: port_b, 6379: redis.port})
        with serving(command, project, shell_env(tmp_path), [port_a, port_b]):
            host = "mcp.example.com"  # what nginx passes on as Host
            initialized = post(port_a, "initialize", INIT, host=host)
            assert initialized.status == 200, initialized.body
            session = initialized.headers["mcp-session-id"]
            called = post(
                port_b, "tools/call", {"name": "echo", "arguments": {"message": "on b"}}, session, host=host
            )
            assert called.json()["result"]["content"][0]["text"] == "on b"
            assert post(port_a, "initialize", INIT, host="evil.example.com").status == 421
            headers = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
            with RawClient(port_a) as client:
                client.send(client_request_bytes("DELETE", "/mcp", b"", headers, host=host))
                assert client.read_response().status == 200
            deadline = time.monotonic() + 15
            while post(port_b, "ping", {}, session, host=host).status != 404:
                assert time.monotonic() < deadline, "the DELETE on a never reached b"
                time.sleep(0.02)


def test_rate_limits_and_idempotency(project: Path, tmp_path: Path) -> None:
    """The server block of "Rate limits and idempotency", then its curl twice: the retry is
    answered from the first call (counted as a replay); past 100 requests a caller gets 429."""
    [port] = free_ports(1)
    env = shell_env(tmp_path)
    server = block("python -m mcp_fast myapp:server --rate-limit 100/60s --idempotency-ttl 600")
    with serving(server, project, {**env, "MCP_FAST_PORT": str(port)}, [port]):
        retry = with_ports(
            block(
                "curl -s http://127.0.0.1:8000/mcp -H 'Content-Type: application/json' -H 'Idempotency-Key: order-42' \\"
            ),
            {8000: port},
        )
        first, second = (run_block(retry, tmp_path, env) for _ in range(2))
        assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
        assert orjson.loads(first.stdout)["result"]["content"][0]["text"] == "once", first.stdout
        assert second.stdout == first.stdout
        with RawClient(port) as client:
            client.send(client_request_bytes("GET", "/metrics"))
            metrics = client.read_response().body.decode()
        assert re.search(r"^mcp_server_idempotent_replays_total(\{[^}]*\})? 1(\.0)?$", metrics, re.M), metrics
        statuses = []
        for _ in range(101):  # the curls above took 2 of the caller's 100
            statuses.append(post(port, "initialize", INIT).status)
            if statuses[-1] == 429:
                break
        assert statuses[-1] == 429 and len(statuses) <= 99, statuses


def test_cors_and_proxies(project: Path, tmp_path: Path) -> None:
    """The block of "CORS and proxies": a browser's preflight from the allowed origin is let
    through, another origin's is refused."""
    [port] = free_ports(1)
    env = shell_env(tmp_path, MCP_FAST_PORT=str(port))
    command = block(
        "python -m mcp_fast myapp:server --host 0.0.0.0 --cors-origins https://app.example.com \\"
    )
    with serving(command, project, env, [port]):
        for origin, status in (("https://app.example.com", 204), ("https://evil.example.com", 403)):
            headers = {"Origin": origin, "Access-Control-Request-Method": "POST"}
            with RawClient(port) as client:
                client.send(client_request_bytes("OPTIONS", "/mcp", b"", headers))
                response = client.read_response()
            assert response.status == status, (origin, response.status, response.body)
            if status == 204:
                assert response.headers["access-control-allow-origin"] == origin


def test_metrics_and_logs(project: Path, tmp_path: Path) -> None:
    """The block of "Metrics, tracing and logs" (four workers), a session's calls, then the
    curl from another terminal: the counts of every worker, an audit line per tools/call, an
    access line per request on stdout."""
    [port] = free_ports(1)
    env = shell_env(tmp_path)
    command = block("python -m mcp_fast myapp:server --workers 4 --audit-log audit.jsonl --access-log -")
    with serving(command, project, {**env, "MCP_FAST_PORT": str(port)}, [port]) as log:
        initialized = post(port, "initialize", INIT)
        session = initialized.headers["mcp-session-id"]
        for n in range(8):  # new connections: the kernel spreads them over the workers
            called = post(port, "tools/call", {"name": "echo", "arguments": {"message": f"m{n}"}}, session)
            assert answer(called)["result"]["content"][0]["text"] == f"m{n}"
        scrape = with_ports(
            block("curl -s http://127.0.0.1:8000/metrics | grep mcp_server_requests_total"), {8000: port}
        )
        deadline = time.monotonic() + 10
        while True:  # each worker publishes its numbers once a second
            result = run_block(scrape, tmp_path, env)
            calls = sum(
                float(line.rsplit(" ", 1)[1])
                for line in result.stdout.splitlines()
                if 'mcp_method_name="tools/call"' in line
            )
            if calls == 8 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert calls == 8, result.stdout
        deadline = time.monotonic() + 5
        audit = project / "audit.jsonl"
        while (
            not (audit.exists() and len(audit.read_text().splitlines()) >= 8) and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        lines = [orjson.loads(line) for line in audit.read_text().splitlines()]
        assert len(lines) == 8 and {line["tool"] for line in lines} == {"echo"}
    access = [orjson.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert sum(1 for line in access if line.get("mcp_method") == "tools/call") == 8, log.read_text()[-2000:]


# -- the configuration tables -------------------------------------------------------------------


def test_the_configuration_tables_are_the_option_table() -> None:
    """Every setting has its row under its group: the flag as --help spells it, the variable,
    the default as --help shows it (the meaning column is free text)."""
    section = README.read_text().split("## Command line and configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str, str, str]] = {}
    group = ""
    for line in section.splitlines():
        heading = re.match(r"\*\*(.+?)\*\*:", line)
        if heading:
            group = heading[1].lower()
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            flag = re.match(r"`(--[a-z0-9-]+)", cells[0])
            assert flag, line
            rows[flag[1]] = (group, cells[0], cells[1], cells[2].strip("`"))
    titles = {group.key: group.title.lower() for group in GROUPS}

    def spelled(option: Option) -> str:
        if option.is_switch:
            return f"`{option.flag}` / `--no-{option.flag[2:]}`"
        return f"`{option.flag} {option.kind.metavar}`"

    expected = {
        option.flag: (titles[option.group], spelled(option), f"`{option.env}`", option.shown_default)
        for option in OPTIONS
    }
    assert rows == expected
