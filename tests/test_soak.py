"""bench/soak.py, short: the mixed workload and each fault, run as the README says and judged by
what they report (every answer checked by the soak's clients; the figures of each fault).

The runs are light (250 operations a second) and overlap (two waves beside the longest run,
the rolling restart), 30 s each, so the whole file takes about 70 s: each is a separate `python
bench/soak.py` with its own server, nginx and Redis. nginx and redis-server come from
Debian's packages, installed with apt-get when missing (bench/soak_target.py, as
tests/test_nginx.py does); a run that cannot set its target up exits 2 and fails here, never
skips. The long runs (`--seconds 600`) and their figures are in bench/README.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

SOAK = ROOT / "bench" / "soak.py"
LAST_LINE = re.compile(r"^soak: (\d+) requests, (\d+) errors, (\d+) lost, rss ([\d.]+) -> ([\d.]+) MiB")

# name: (seconds, extra arguments): a short run of each, 30 s (issue 16), at a light load. The
# rolling restart has two instances restarted in that time, each back in nginx's rotation (nginx
# keeps a refused instance out for 10 s) before the next stops.
RUNS: dict[str, tuple[float, list[str]]] = {
    "mix": (30, []),
    "sigterm": (30, ["--fault", "sigterm"]),
    "kill-worker": (30, ["--fault", "kill-worker"]),
    "rolling-restart": (30, ["--fault", "rolling-restart"]),
    "slow-reader": (30, ["--fault", "slow-reader"]),
    "audit-disk-full": (30, ["--fault", "audit-disk-full"]),
    "redis-restart": (30, ["--fault", "redis-restart"]),
}
# Two waves, so that fewer runs share the CPU (the kill-9 fault times a new worker to 1 s):
# the second starts once the first wave's short runs are done, beside the rolling restart.
FIRST_WAVE = ("rolling-restart", "kill-worker", "audit-disk-full")


@dataclass
class Run:
    name: str
    log: Path
    report: Path
    chart: Path
    process: subprocess.Popen[bytes] | None = None
    started: threading.Event = field(default_factory=threading.Event)
    code: int | None = None

    def start(self, env: dict[str, str]) -> None:
        seconds, extra = RUNS[self.name]
        command = [
            sys.executable, str(SOAK), "--seconds", str(seconds), "--rate", "250", "--clients", "1",
            "--output", str(self.report), "--chart", str(self.chart), *extra,
        ]  # fmt: skip
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.started.set()

    def wait(self) -> int:
        assert self.started.wait(timeout=240), f"soak {self.name} was never started"
        assert self.process is not None
        if self.code is None:
            try:
                self.code = self.process.wait(timeout=240)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"soak {self.name} did not end within 240 s:\n{self.output()[-4000:]}")
        return self.code

    def finish(self) -> tuple[int, str, dict[str, Any]]:
        code = self.wait()
        summary = json.loads(self.report.read_text()) if self.report.exists() else {}
        return code, self.output(), summary

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    directory = tmp_path_factory.mktemp("soak")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    every = {
        name: Run(name, directory / f"{name}.log", directory / f"{name}.json", directory / f"{name}.svg")
        for name in RUNS
    }

    def waves() -> None:
        for name in FIRST_WAVE:
            every[name].start(env)
        for name in FIRST_WAVE:
            if name != "rolling-restart":
                with contextlib.suppress(BaseException):
                    every[name].wait()
        for name, run in every.items():
            if name not in FIRST_WAVE:
                run.start(env)

    starter = threading.Thread(target=waves, daemon=True)
    starter.start()
    try:
        yield every
    finally:
        starter.join(timeout=300)
        for run in every.values():
            if run.process is not None and run.process.poll() is None:
                run.process.kill()
                run.process.wait()


def judged(run: Run) -> tuple[str, dict[str, Any]]:
    """The run's output and report, after checking what every run must show: exit 0, every
    check passed, no error or lost request the fault does not explain, and the last line."""
    code, output, summary = run.finish()
    assert code == 0, f"soak {run.name} exited {code}:\n{output[-5000:]}"
    assert summary, output[-3000:]
    assert all(verdict["ok"] for verdict in summary["verdicts"]), summary["verdicts"]
    assert summary["unexplained_errors"] == 0 and summary["unexplained_lost"] == 0, summary["failures"][:5]
    last = output.strip().splitlines()[-1]
    match = LAST_LINE.match(last)
    assert match is not None, last
    assert int(match.group(1)) == summary["requests"] > 0
    assert (int(match.group(2)), int(match.group(3))) == (summary["errors"], summary["lost"])
    return output, summary


def test_the_mix_every_operation_checked_nothing_wrong_or_lost(runs: dict[str, Run]) -> None:
    output, summary = judged(runs["mix"])
    assert summary["errors"] == 0 and summary["lost"] == 0
    kinds = {
        "call",
        "read",
        "v2026",
        "sse",
        "h2",
        "batch",
        "legacy",
        "get",
        "resume",
        "cancel",
        "delete",
        "bad",
        "save",
    }
    done = {kind for kind, figures in summary["operations"].items() if figures["done"] > 0}
    assert kinds <= done, f"never done: {kinds - done}"
    # Samples of the server every 2 s: RSS, descriptors and the event loop's lag from /metrics.
    samples = summary["samples"]
    assert len(samples) >= 4 and all(sample["rss_mib"] > 10 and sample["fds"] > 0 for sample in samples)
    assert any(sample["lag"] is not None for sample in samples)
    assert summary["lag"]["checks"] > 0 and summary["lag"]["p99"] is not None
    # The table, and the chart of throughput, p99, RSS and lag over time.
    assert "| operation | done | errors | lost |" in output
    chart = runs["mix"].chart.read_text()
    assert chart.startswith("<svg") and chart.count("<polyline") >= 4


def test_sigterm_to_an_instance_behind_nginx(runs: dict[str, Run]) -> None:
    """Every request that reached the instance is answered before it exits (exit 0, within the
    shutdown timeout); clients behind nginx see no error (no 5xx from nginx either)."""
    _, summary = judged(runs["sigterm"])
    assert summary["errors"] == 0 and summary["lost"] == 0
    figures = summary["fault"]["figures"]
    [restart] = figures["restarts"]
    assert restart["exit_code"] == 0 and restart["exit_seconds"] < 10
    assert figures["5xx to clients"] == 0


def test_kill_9_of_a_worker(runs: dict[str, Run]) -> None:
    """The supervisor starts a new worker that listens within a second; the only requests that
    fail are the killed worker's own (on its connections, or in its accept queue)."""
    _, summary = judged(runs["kill-worker"])
    figures = summary["fault"]["figures"]
    assert figures["new worker listening (s)"] is not None and figures["new worker listening (s)"] <= 1.0
    assert summary["errors"] == summary["explained"]["errors"]
    assert summary["lost"] == summary["explained"]["lost"]


def test_rolling_restart_behind_nginx(runs: dict[str, Run]) -> None:
    _, summary = judged(runs["rolling-restart"])
    assert summary["errors"] == 0 and summary["lost"] == 0
    figures = summary["fault"]["figures"]
    restarts = figures["restarts"]
    assert len(restarts) >= 2 and {restart["instance"] for restart in restarts} == {"a", "b"}
    assert all(restart["exit_code"] == 0 for restart in restarts)
    assert figures["5xx to clients"] == 0


def test_a_client_that_stops_reading(runs: dict[str, Run]) -> None:
    """The server drops every slow connection at the write timeout, its memory stays bounded,
    the other clients are served without an error."""
    _, summary = judged(runs["slow-reader"])
    assert summary["errors"] == 0 and summary["lost"] == 0
    figures = summary["fault"]["figures"]
    assert figures["dropped by the server"] == figures["slow connections"] > 0
    assert figures["RSS peak after (MiB)"] - figures["RSS before (MiB)"] <= 32
    assert figures["answers asked for (MiB)"] >= 36  # more than the kernel buffers of its sockets take


def test_the_audit_log_disk_full(runs: dict[str, Run]) -> None:
    """No request fails; the full disk is reported once, its lines counted as dropped; once
    there is room again the log says so and valid lines are written."""
    _, summary = judged(runs["audit-disk-full"])
    assert summary["errors"] == 0 and summary["lost"] == 0
    figures = summary["fault"]["figures"]
    assert figures["'cannot write' reports"] == 1 and figures["'works again' reports"] == 1
    assert figures["lines dropped while full"] > 0 and figures["lines written after"] > 0


def test_redis_stopped_and_started_again(runs: dict[str, Run]) -> None:
    """Only what needs Redis is refused (503) while it is away, nothing after; every instance
    is ready again; nginx answers no other 5xx."""
    _, summary = judged(runs["redis-restart"])
    figures = summary["fault"]["figures"]
    refused = figures["503 while Redis was away"]
    assert set(refused) <= {"delete", "cancel", "resume"}, refused
    assert summary["lost"] == 0
