"""Shared fixtures: a real `python -m mcp_fast` process on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports. The sockets stay bound until all are chosen: ports taken one
    after another may repeat, and two nginx servers on one port are name-based virtual hosts, not
    an error (a CI run once sent a test's request to the redirect server that way)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/mcp"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for_port(host: str, port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with code {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {host}:{port} within {timeout}s")


# The app most tests serve: the conformance fixtures (examples/conformance.py), by name.
CONFORMANCE_APP = "examples.conformance:server"


def with_app(args: tuple[str, ...] | list[str]) -> list[str]:
    """Command-line arguments that name an app: ``args`` when they start with one
    (``module:attribute``), else the conformance app followed by ``args``."""
    if args and not args[0].startswith("-") and ":" in args[0]:
        return list(args)
    return [CONFORMANCE_APP, *args]


def start_server(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    app: str | None = CONFORMANCE_APP,
    cwd: Path = ROOT,
) -> RunningServer:
    """Start `python -m mcp_fast APP` with extra CLI args (``app`` None: the built-in demo app);
    waits until it accepts connections. ``cwd``: where it runs (this checkout's mcp_fast is
    imported wherever that is)."""
    port = free_port()
    if app is not None:
        args = tuple(with_app(args)) if app == CONFORMANCE_APP else (app, *args)
    log_path = tmp_path / f"server-{port}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if cwd != ROOT:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mcp_fast", "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    wait_for_port("127.0.0.1", port, process)
    return RunningServer(process, "127.0.0.1", port, log_path)


def console_script(directory: Path) -> Path:
    """``directory/mcp-fast``: pyproject's console script, written as pip writes it on install
    (this interpreter; the script's own directory, not the current one, first on sys.path).
    Run it with PYTHONPATH=ROOT to import this checkout's mcp_fast."""
    import tomllib

    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["mcp-fast"]
    module, _, function = target.partition(":")
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "mcp-fast"
    script.write_text(
        f"#!{sys.executable}\n"
        "import re\nimport sys\n"
        f"from {module} import {function}\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
        f"    sys.exit({function}())\n"
    )
    script.chmod(0o755)
    return script


def stop_server(server: RunningServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def rss_kib(pid: int) -> int:
    """Resident memory of a process, KiB (/proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def module_server(*flags: str) -> Any:
    """A module-scoped fixture running the conformance app with ``flags``; fails on a server traceback.

    ``name = module_server("--stateless")`` at module level makes a fixture called ``name``.
    """

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
        server = start_server(tmp_path_factory.mktemp("server"), *flags)
        try:
            yield server
        finally:
            stop_server(server)
        assert "Traceback" not in server.log(), server.log()

    return fixture


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[RunningServer]:
    """The conformance app served by a real process; fails the test on a server traceback."""
    server = start_server(tmp_path)
    try:
        yield server
    finally:
        stop_server(server)
    assert "Traceback" not in server.log(), server.log()


@pytest.fixture(scope="module")
def shared_demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One conformance-app server for a whole test module (for read-only interop checks)."""
    server = start_server(tmp_path_factory.mktemp("server"))
    try:
        yield server
    finally:
        stop_server(server)
    assert "Traceback" not in server.log(), server.log()
