#!/usr/bin/env python3
"""mcp_fast benchmark harness: the project and its peers, side by side, in one run.

    python bench/run.py [--duration 10] [--connections 50] [--repetitions 3] [--quick]

Each server runs as its own process pinned to one core (``taskset -c 0``); wrk runs pinned to the
other (``taskset -c 1``). Every server is checked for a correct answer before any load; then each
(workload, server) pair is warmed up, and measured in interleaved repetitions (A B C A B C ...),
medians reported with ratios against the peers. Results go to ``bench/results/latest.json``.

Peers and workloads are rows in the ``SERVERS`` and ``WORKLOADS`` tables below; adding the stateful
SDK, FastMCP, SSE or HTTP/2 means adding rows (and, for h2, a load-generator column).

Only the standard library is used here, so any Python >= 3.10 can run it; the peers run from the
virtualenv ``.bench-venv/`` which this script creates from ``bench/peers/requirements.txt``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS_DIR = BENCH / "peers"
WRK_DIR = BENCH / "wrk"
RESULTS_DIR = BENCH / "results"
LOG_DIR = RESULTS_DIR / "logs"
VENV = ROOT / ".bench-venv"  # already in the repo's .gitignore
PEER_REQUIREMENTS = PEERS_DIR / "requirements.txt"
VENV_STAMP = VENV / ".bench-requirements.sha256"

HOST = "127.0.0.1"  # load only ever targets loopback
PROTOCOL_VERSION = "2025-06-18"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class SetupError(RuntimeError):
    """The harness could not prepare its tools (wrk, the peers' virtualenv, CPUs)."""


# --------------------------------------------------------------------------------------------
# Tables: servers and workloads
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pythons:
    project: str  # runs mcp_fast (the interpreter running this script unless --project-python)
    peers: str  # .bench-venv/bin/python


@dataclass(frozen=True)
class ServerSpec:
    name: str
    description: str
    command: Callable[[Pythons, int], list[str]]
    # Which workloads this server can serve (stateless servers only, for wrk: no initialize).
    workloads: tuple[str, ...] = ("tools_call_echo",)
    startup_timeout: float = 30.0


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(
            name="mcp_fast",
            description="python -m mcp_fast (built-in demo app)",
            command=lambda py, port: [
                py.project,
                "-m",
                "mcp_fast",
                "--host",
                HOST,
                "--port",
                str(port),
                "--log-level",
                "warning",
                # The headline workload is stateless tools/call (as the SDK peer's
                # stateless JSON mode): no initialize, no Mcp-Session-Id.
                "--stateless",
            ],
        ),
        ServerSpec(
            name="official_sdk",
            description=(
                "official mcp SDK MCPServer, stateless_http + json_response, uvicorn uvloop/httptools"
            ),
            command=lambda py, port: [
                py.peers,
                str(PEERS_DIR / "official_sdk_server.py"),
                "--host",
                HOST,
                "--port",
                str(port),
            ],
        ),
        ServerSpec(
            name="raw_ceiling",
            description="bare uvloop asyncio.Protocol + orjson, answers from the request id",
            command=lambda py, port: [
                py.peers,
                str(PEERS_DIR / "raw_ceiling.py"),
                "--host",
                HOST,
                "--port",
                str(port),
            ],
        ),
    )
}


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    wrk_script: Path
    path: str
    wrk_env: dict[str, str]
    check: Callable[[int], CheckResult]


def _post_json(
    port: int, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


MCP_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": PROTOCOL_VERSION,
}


def check_tools_call_echo(port: int, message: str, request_id: int | str) -> CheckResult:
    """One tools/call of echo; the answer must be a JSON (not SSE) JSON-RPC result echoing `message`."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": message}},
        },
        separators=(",", ":"),
    ).encode()
    try:
        status, headers, data = _post_json(port, "/mcp", body, MCP_HEADERS)
    except OSError as exc:
        return CheckResult(False, f"request failed: {exc!r}")
    snippet = data[:300].decode("utf-8", "replace")
    if status != 200:
        return CheckResult(False, f"HTTP {status}: {snippet}")
    ctype = headers.get("content-type", "")
    if not ctype.startswith("application/json"):
        return CheckResult(
            False,
            f"content-type {ctype!r} (expected application/json; SSE means JSON mode is off): {snippet}",
        )
    try:
        msg = json.loads(data)
    except ValueError as exc:
        return CheckResult(False, f"body is not JSON ({exc}): {snippet}")
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
        return CheckResult(False, f"not a JSON-RPC 2.0 object: {snippet}")
    if msg.get("id") != request_id:
        return CheckResult(False, f"id {msg.get('id')!r} != request id {request_id!r}")
    if "error" in msg or not isinstance(msg.get("result"), dict):
        return CheckResult(False, f"no result: {snippet}")
    result = msg["result"]
    if result.get("isError") is True:
        return CheckResult(False, f"isError true: {snippet}")
    content = result.get("content")
    texts = (
        [c.get("text") for c in content if isinstance(c, dict) and c.get("type") == "text"]
        if isinstance(content, list)
        else []
    )
    if message not in texts:
        return CheckResult(False, f"echoed text {texts!r} != {message!r}")
    return CheckResult(True, "ok")


def check_echo_twice(port: int) -> CheckResult:
    # Once with the exact load-test body, once with a random message and string id, so a server that
    # answers a canned "hello" (a fast wrong answer) fails.
    first = check_tools_call_echo(port, "hello", 1)
    if not first.ok:
        return first
    token = uuid.uuid4().hex
    second = check_tools_call_echo(port, f"check-{token}", f"req-{token[:8]}")
    return second if not second.ok else CheckResult(True, "ok (2 requests)")


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            name="tools_call_echo",
            description='POST /mcp tools/call echo {"message":"hello"}, JSON response, HTTP/1.1 keep-alive',
            wrk_script=WRK_DIR / "tools_call.lua",
            path="/mcp",
            wrk_env={"BENCH_PATH": "/mcp", "BENCH_MESSAGE": "hello"},
            check=check_echo_twice,
        ),
    )
}

# (numerator, denominator) of the ratios reported for every workload.
RATIOS: tuple[tuple[str, str], ...] = (("mcp_fast", "official_sdk"), ("mcp_fast", "raw_ceiling"))


# --------------------------------------------------------------------------------------------
# Setup: wrk and the peers' virtualenv
# --------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, flush=True)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk not found: apt-get install -y wrk")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(["apt-get", "install", "-y", "wrk"], env=env).returncode != 0:
        log("install failed: apt-get update, then retry")
        subprocess.run(["apt-get", "update"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, check=False)
    found = shutil.which("wrk")
    if not found:
        raise SetupError("could not install wrk (apt-get install -y wrk)")
    return found


def ensure_peers_venv() -> str:
    py = VENV / "bin" / "python"
    if not py.exists():
        log(f"creating peers virtualenv {VENV.relative_to(ROOT)}/")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    wanted = hashlib.sha256(PEER_REQUIREMENTS.read_bytes()).hexdigest()
    have = VENV_STAMP.read_text().strip() if VENV_STAMP.exists() else ""
    if have != wanted:
        log(f"installing peers from {PEER_REQUIREMENTS.relative_to(ROOT)}")
        subprocess.run(
            [
                str(py),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "-r",
                str(PEER_REQUIREMENTS),
            ],
            check=True,
        )
        VENV_STAMP.write_text(wanted + "\n")
    return str(py)


def peer_versions(peers_python: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        "for d in ('mcp', 'uvicorn', 'uvloop', 'httptools', 'starlette', 'pydantic', 'orjson'):\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    out = subprocess.run([peers_python, "-c", code], capture_output=True, text=True, check=False)
    try:
        return dict(json.loads(out.stdout))
    except ValueError:
        return {}


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).strip().splitlines()[0] if (out.stdout + out.stderr).strip() else "?"


# --------------------------------------------------------------------------------------------
# /proc readers (psutil is not available)
# --------------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (a server may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_ticks(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        total += int(f[11]) + int(f[12])  # utime, stime (fields 14, 15 of /proc/PID/stat)
    return total


def rss_kb(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            # statm field 2 is resident pages; cheaper to parse than /proc/PID/status.
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
        except (OSError, IndexError, ValueError):
            continue
    return total


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def core_busy_ticks(cpu: int) -> dict[str, int]:
    """user+nice+system, softirq+irq, steal and total for one core, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:]]
            user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
            return {
                "task": user + nice + system,
                "irq": irq + softirq,
                "steal": steal,
                "total": user + nice + system + idle + iowait + irq + softirq + steal,
            }
    raise SetupError(f"cpu{cpu} not in /proc/stat")


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    spec: ServerSpec
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    startup_s: float = 0.0
    idle_rss_kb: int = 0
    check: CheckResult | None = None
    failure: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_server(spec: ServerSpec, pythons: Pythons, server_cpu: int) -> RunningServer:
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{spec.name}.log"
    argv = ["taskset", "-c", str(server_cpu), *spec.command(pythons, port)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with log_path.open("wb") as log_file:
        log_file.write(("$ " + " ".join(argv) + "\n").encode())
        log_file.flush()
        # taskset execs the command, so the Popen pid is the server's pid.
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = RunningServer(spec=spec, port=port, process=proc, log_path=log_path)
    t0 = time.monotonic()
    deadline = t0 + spec.startup_timeout
    while time.monotonic() < deadline:
        if not server.alive():
            server.failure = f"exited with code {proc.returncode} during startup"
            return server
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.05)
    else:
        server.failure = f"not listening after {spec.startup_timeout:.0f}s"
        return server
    server.startup_s = time.monotonic() - t0
    time.sleep(0.2)  # let lifespan/startup hooks settle after bind
    server.idle_rss_kb = rss_kb(process_tree(server.pid))
    return server


def stop_server(server: RunningServer) -> None:
    proc = server.process
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # own session: the server and anything it forked
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


# --------------------------------------------------------------------------------------------
# One wrk run
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    server: str
    workload: str
    repetition: int  # 0 = warm-up
    duration_s: float
    requests: int = 0
    rps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    non200: int = 0
    non200_by_status: dict[str, int] = field(default_factory=dict)
    server_cpu_pct: float = 0.0
    server_rss_mb: float = 0.0
    loadgen_cpu_pct: float = 0.0
    other_load_pct: dict[str, float] = field(default_factory=dict)  # noise on each pinned core
    core_busy_pct: dict[str, float] = field(default_factory=dict)  # incl. irq/softirq and steal
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and self.non200 == 0 and not any(self.errors.values())


def run_wrk(
    wrk: str,
    server: RunningServer,
    workload: Workload,
    *,
    repetition: int,
    duration: float,
    connections: int,
    threads: int,
    timeout_s: float,
    server_cpu: int,
    load_cpu: int,
) -> RunResult:
    result = RunResult(server.spec.name, workload.name, repetition, duration)
    if not server.alive():
        result.failure = f"server died (exit {server.process.returncode})"
        return result
    url = f"http://{HOST}:{server.port}"
    argv = [
        "taskset",
        "-c",
        str(load_cpu),
        wrk,
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{duration:g}s",
        "--timeout",
        f"{timeout_s:g}s",
        "-s",
        str(workload.wrk_script),
        url,
    ]
    env = dict(os.environ, **workload.wrk_env)
    tree = process_tree(server.pid)
    cores0 = {c: core_busy_ticks(c) for c in (server_cpu, load_cpu)}
    srv0 = cpu_ticks(tree)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    try:
        output = proc.stdout.read().decode("utf-8", "replace")
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of wrk itself: load-generator CPU
    except BaseException:  # interrupted: leave no wrk behind
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    srv1 = cpu_ticks(tree)
    cores1 = {c: core_busy_ticks(c) for c in (server_cpu, load_cpu)}
    result.server_rss_mb = rss_kb(process_tree(server.pid)) / 1024
    if proc.returncode != 0:
        result.failure = f"wrk exit {proc.returncode}: {output.strip()[-300:]}"
        return result
    line = next((ln for ln in output.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        result.failure = f"no BENCH_JSON line from wrk: {output.strip()[-300:]}"
        return result
    data = json.loads(line[len("BENCH_JSON ") :])
    measured_s = data["duration_us"] / 1e6
    result.duration_s = measured_s
    result.requests = int(data["requests"])
    result.rps = result.requests / measured_s if measured_s > 0 else 0.0
    result.latency_ms = {k: v / 1000 for k, v in data["latency_us"].items()}
    result.errors = {k: int(v) for k, v in data["errors"].items()}
    result.non200 = int(data["non200"])
    result.non200_by_status = {str(k): int(v) for k, v in data["non200_by_status"].items()}
    # CPU: ticks over wall time of the wrk process (includes its ~ms of start/stop).
    result.server_cpu_pct = 100.0 * (srv1 - srv0) / CLK_TCK / wall
    wrk_cpu_s = usage.ru_utime + usage.ru_stime
    result.loadgen_cpu_pct = 100.0 * wrk_cpu_s / wall
    # Noise: task time on each pinned core that is neither the server nor wrk (other sessions,
    # daemons), plus steal. Kernel softirq work for loopback TCP is not counted as noise.
    # /proc/stat is tick-sampled while rusage is exact, so on a core that is mostly idle but wakes
    # often (the load core under a slow server) "other" reads high spuriously; on a saturated core
    # (the server's) it is reliable.
    for core, ours in ((server_cpu, (srv1 - srv0) / CLK_TCK), (load_cpu, wrk_cpu_s)):
        d = {k: cores1[core][k] - cores0[core][k] for k in cores0[core]}
        if server_cpu == load_cpu:
            ours = (srv1 - srv0) / CLK_TCK + wrk_cpu_s
        other = max(0.0, d["task"] / CLK_TCK - ours) + d["steal"] / CLK_TCK
        result.other_load_pct[f"cpu{core}"] = 100.0 * other / wall
        busy = d["task"] + d["irq"] + d["steal"]
        result.core_busy_pct[f"cpu{core}"] = 100.0 * busy / d["total"] if d["total"] else 0.0
    return result


# --------------------------------------------------------------------------------------------
# Summary and output
# --------------------------------------------------------------------------------------------


def summarize(runs: Sequence[RunResult], server_cpu: int, load_cpu: int) -> dict[str, Any]:
    measured = [r for r in runs if r.repetition > 0 and r.failure is None]
    if not measured:
        return {"repetitions": 0}
    rps = [r.rps for r in measured]
    med_rps = statistics.median(rps)

    def med(get: Callable[[RunResult], float]) -> float:
        return float(statistics.median(get(r) for r in measured))

    return {
        "repetitions": len(measured),
        "rps": med_rps,
        "rps_all": rps,
        "rps_spread_pct": 100.0 * (max(rps) - min(rps)) / med_rps if med_rps else 0.0,
        "latency_ms": {
            k: float(statistics.median(r.latency_ms.get(k, 0.0) for r in measured))
            for k in ("p50", "p90", "p99", "max")
        },
        "server_cpu_pct": med(lambda r: r.server_cpu_pct),
        "server_rss_mb": med(lambda r: r.server_rss_mb),
        "loadgen_cpu_pct": med(lambda r: r.loadgen_cpu_pct),
        # Worst run's share of each pinned core taken by other processes (or steal).
        "noise_pct_max": {
            "server_core": max(r.other_load_pct.get(f"cpu{server_cpu}", 0.0) for r in measured),
            "load_core": max(r.other_load_pct.get(f"cpu{load_cpu}", 0.0) for r in measured),
        },
        "core_busy_pct_max": {
            "server_core": max(r.core_busy_pct.get(f"cpu{server_cpu}", 0.0) for r in measured),
            "load_core": max(r.core_busy_pct.get(f"cpu{load_cpu}", 0.0) for r in measured),
        },
        "core_busy_pct": {
            "server_core": med(lambda r: r.core_busy_pct.get(f"cpu{server_cpu}", 0.0)),
            "load_core": med(lambda r: r.core_busy_pct.get(f"cpu{load_cpu}", 0.0)),
        },
        "non200": sum(r.non200 for r in runs if r.repetition > 0),
        "socket_errors": sum(
            sum(v for k, v in r.errors.items() if k != "status") for r in runs if r.repetition > 0
        ),
        "all_ok": all(r.ok for r in runs if r.repetition > 0),
    }


def _status(s: dict[str, Any]) -> str:
    if not s["all_ok"]:
        return "ERRORS"
    notes = []
    if s["loadgen_cpu_pct"] > 85:
        notes.append("wrk near its core's limit")
    elif s["core_busy_pct_max"]["load_core"] > 90:
        # wrk itself has headroom but others took the rest of its core: the server was starved of load.
        notes.append("load core saturated by others")
    if s["noise_pct_max"]["server_core"] > 10:
        notes.append("noisy server core")
    if s["server_cpu_pct"] < 85 and not notes:
        # Neither core visibly full, yet the server idled: contention this VM does not report.
        notes.append("server not saturated")
    return "ok" + (f" ({'; '.join(notes)})" if notes else "")


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def print_table(
    summary: dict[str, dict[str, dict[str, Any]]],
    servers: dict[str, RunningServer],
    ratios: dict[str, dict[str, float | None]],
) -> None:
    cols = [
        "server",
        "req/s",
        "spread",
        "p50 ms",
        "p99 ms",
        "max ms",
        "cpu%",
        "rss MB",
        "wrk cpu%",
        "errors",
        "noise% s/l",
        "status",
    ]
    for workload, per_server in summary.items():
        log(f"\n== {workload}: {WORKLOADS[workload].description}")
        rows = [cols]
        for name, s in per_server.items():
            srv = servers.get(name)
            failure = srv.failure if srv and srv.failure else None
            if failure or not s.get("repetitions"):
                rows.append(
                    [
                        name,
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                        f"FAILED: {failure or 'no successful run'}"[:90],
                    ]
                )
                continue
            lat = s["latency_ms"]
            rows.append(
                [
                    name,
                    fmt_int(s["rps"]),
                    f"±{s['rps_spread_pct'] / 2:.0f}%",
                    f"{lat['p50']:.2f}",
                    f"{lat['p99']:.2f}",
                    f"{lat['max']:.1f}",
                    f"{s['server_cpu_pct']:.0f}",
                    f"{s['server_rss_mb']:.1f}",
                    f"{s['loadgen_cpu_pct']:.0f}",
                    str(s["non200"] + s["socket_errors"]),
                    f"{s['noise_pct_max']['server_core']:.0f}/{s['noise_pct_max']['load_core']:.0f}",
                    _status(s),
                ]
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        for i, row in enumerate(rows):
            cells = [
                c.rjust(w) if 0 < j < len(cols) - 1 else c.ljust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            log(("  " + "  ".join(cells)).rstrip())
            if i == 0:
                log("  " + "  ".join("-" * w for w in widths[:-1]) + "  ------")
        for label, value in ratios.get(workload, {}).items():
            log(f"  {label}: " + (f"{value:.2f}x" if value is not None else "n/a"))
    log("\n  spread: half the max-min range of req/s over repetitions. errors: non-200 responses")
    log("  plus socket errors. noise% s/l: worst run's share of the server / load core taken by other")
    log("  processes or steal. Server-core noise above ~10% makes a row suspect; load-core noise matters")
    log("  only when that core is saturated (flagged), and reads high spuriously when it is mostly idle.")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark mcp_fast against its peers (see bench/README.md).")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    p.add_argument("--connections", type=int, default=50, help="keep-alive connections (default 50)")
    p.add_argument(
        "--repetitions", type=int, default=3, help="interleaved repetitions; medians reported (default 3)"
    )
    p.add_argument(
        "--warmup", type=float, default=3.0, help="warm-up seconds per server and workload (default 3)"
    )
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: it has one core)")
    p.add_argument(
        "--timeout", type=float, default=5.0, help="wrk per-request timeout in seconds (default 5)"
    )
    p.add_argument("--quick", action="store_true", help="smoke check: 2 s runs, 1 repetition, 1 s warm-up")
    p.add_argument("--servers", default=",".join(SERVERS), help=f"comma list from {','.join(SERVERS)}")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list from {','.join(WORKLOADS)}")
    p.add_argument("--server-cpu", type=int, default=0, help="core the servers are pinned to (default 0)")
    p.add_argument("--load-cpu", type=int, default=1, help="core wrk is pinned to (default 1)")
    p.add_argument("--project-python", default=sys.executable, help="interpreter for python -m mcp_fast")
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.repetitions, args.warmup = 2.0, 1, 1.0
    args.servers = [s for s in args.servers.split(",") if s]
    args.workloads = [w for w in args.workloads.split(",") if w]
    for s in args.servers:
        if s not in SERVERS:
            p.error(f"unknown server {s!r}; known: {', '.join(SERVERS)}")
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; known: {', '.join(WORKLOADS)}")
    if args.connections < args.threads:
        p.error("--connections must be >= --threads")
    return args


def check_cpus(server_cpu: int, load_cpu: int) -> None:
    available = os.sched_getaffinity(0)
    missing = {server_cpu, load_cpu} - available
    if missing:
        raise SetupError(f"CPU(s) {sorted(missing)} not available (have {sorted(available)})")
    if server_cpu == load_cpu:
        log("WARNING: server and load generator share a core; figures are not comparable")
    if shutil.which("taskset") is None:
        raise SetupError("taskset not found (Debian package util-linux)")


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # same clean-up path as Ctrl-C: stop the servers, write partial results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        check_cpus(args.server_cpu, args.load_cpu)
        wrk = ensure_wrk()
        peers_python = ensure_peers_venv()
    except (SetupError, subprocess.CalledProcessError) as exc:
        log(f"setup failed: {exc}")
        return 2
    pythons = Pythons(project=args.project_python, peers=peers_python)
    plan_workloads = [WORKLOADS[w] for w in args.workloads]

    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "host": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "project_python": pythons.project,
            "cpu_count": os.cpu_count(),
            "cpu_model": _cpu_model(),
        },
        "wrk": wrk_version(wrk),
        "peer_versions": peer_versions(peers_python),
        "protocol_version": PROTOCOL_VERSION,
        "git": _git_describe(),
    }
    log(f"wrk: {meta['wrk']}; peers: {meta['peer_versions']}")
    log(
        f"plan: {len(args.servers)} servers x {len(plan_workloads)} workloads x {args.repetitions} reps, "
        f"{args.duration:g}s each, {args.connections} connections, warm-up {args.warmup:g}s; "
        f"servers on cpu{args.server_cpu}, wrk on cpu{args.load_cpu}"
    )

    servers: dict[str, RunningServer] = {}
    runs: list[RunResult] = []
    interrupted = False
    try:
        # Start and check every server first; a server that fails its check never gets load.
        for name in args.servers:
            spec = SERVERS[name]
            server = start_server(spec, pythons, args.server_cpu)
            servers[name] = server
            if server.failure is None:
                for workload in plan_workloads:
                    if workload.name not in spec.workloads:
                        continue
                    server.check = workload.check(server.port)
                    if not server.check.ok:
                        server.failure = f"{workload.name} check: {server.check.detail}"
                        break
            if server.failure:
                log(f"[setup] {name}: FAILED {server.failure}")
                tail = server.log_tail()
                if tail:
                    log("        " + tail.replace("\n", "\n        "))
                stop_server(server)
            else:
                detail = server.check.detail if server.check else "-"
                log(
                    f"[setup] {name}: up on port {server.port} in {server.startup_s:.2f}s, "
                    f"idle RSS {server.idle_rss_kb / 1024:.1f} MB, check {detail}"
                )

        live = [s for s in servers.values() if s.failure is None]
        pairs = [(w, s) for w in plan_workloads for s in live if w.name in s.spec.workloads]
        total = len(pairs) * args.repetitions
        common = dict(
            connections=args.connections,
            threads=args.threads,
            timeout_s=args.timeout,
            server_cpu=args.server_cpu,
            load_cpu=args.load_cpu,
        )
        if args.warmup > 0:
            for workload, server in pairs:
                r = run_wrk(wrk, server, workload, repetition=0, duration=args.warmup, **common)
                runs.append(r)
                log(
                    f"[warm-up] {server.spec.name:<13} {workload.name}: {fmt_int(r.rps)} req/s"
                    + (f"  FAILED {r.failure}" if r.failure else "")
                )
        n = 0
        for rep in range(1, args.repetitions + 1):
            for workload, server in pairs:
                n += 1
                r = run_wrk(wrk, server, workload, repetition=rep, duration=args.duration, **common)
                runs.append(r)
                if r.failure:
                    log(f"[{n}/{total}] {server.spec.name:<13} {workload.name} rep {rep}: FAILED {r.failure}")
                    continue
                lat = r.latency_ms
                bad = r.non200 + sum(v for k, v in r.errors.items() if k != "status")
                log(
                    f"[{n}/{total}] {server.spec.name:<13} {workload.name} rep {rep}: "
                    f"{fmt_int(r.rps):>8} req/s  p50 {lat['p50']:.2f} ms  p99 {lat['p99']:.2f} ms  "
                    f"max {lat['max']:.1f} ms  cpu {r.server_cpu_pct:.0f}%  rss {r.server_rss_mb:.1f} MB  "
                    f"wrk {r.loadgen_cpu_pct:.0f}%  "
                    f"noise {r.other_load_pct.get(f'cpu{args.server_cpu}', 0):.0f}"
                    f"/{r.other_load_pct.get(f'cpu{args.load_cpu}', 0):.0f}%"
                    + (
                        f"  ERRORS non200={r.non200} {r.non200_by_status} socket={r.errors}"
                        if bad or r.errors.get("status")
                        else ""
                    )
                )
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping servers, writing partial results")
    finally:
        for server in servers.values():
            stop_server(server)

    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for workload in plan_workloads:
        summary[workload.name] = {
            name: summarize(
                [r for r in runs if r.server == name and r.workload == workload.name],
                args.server_cpu,
                args.load_cpu,
            )
            for name in args.servers
            if workload.name in SERVERS[name].workloads
        }
    ratios: dict[str, dict[str, float | None]] = {}
    for wname, per_server in summary.items():
        ratios[wname] = {}
        for num, den in RATIOS:
            if num not in per_server or den not in per_server:
                continue
            a, b = per_server[num].get("rps"), per_server[den].get("rps")
            ratios[wname][f"{num} / {den}"] = (a / b) if a and b else None

    print_table(summary, servers, ratios)
    measured = [r for r in runs if r.repetition > 0 and r.failure is None]
    noisy = [r for r in measured if r.other_load_pct.get(f"cpu{args.server_cpu}", 0.0) > 10.0]
    if noisy:
        log(
            f"\n  WARNING: {len(noisy)} of {len(measured)} runs had >10% of the server core taken by other "
            "processes; the figures are unreliable, rerun on a quieter machine."
        )

    ok = (
        not interrupted
        and all(s.failure is None for s in servers.values())
        and all(r.ok for r in runs if r.repetition > 0)
    )
    report = {
        "meta": meta,
        "ok": ok,
        "interrupted": interrupted,
        "servers": {
            name: {
                "description": s.spec.description,
                "command": s.spec.command(pythons, s.port),
                "port": s.port,
                "startup_s": round(s.startup_s, 3),
                "idle_rss_mb": round(s.idle_rss_kb / 1024, 2),
                "check": asdict(s.check) if s.check else None,
                "failure": s.failure,
                "log": str(s.log_path.relative_to(ROOT)),
            }
            for name, s in servers.items()
        },
        "workloads": {
            w.name: {"description": w.description, "wrk_script": str(w.wrk_script.relative_to(ROOT))}
            for w in plan_workloads
        },
        "summary": summary,
        "ratios": ratios,
        "runs": [asdict(r) | {"ok": r.ok} for r in runs],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    log(
        f"\nwrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}"
        f"{'' if ok else '  (FAILURES: see above)'}"
    )
    return 0 if ok else 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _git_describe() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())
