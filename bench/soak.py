#!/usr/bin/env python3
"""Soak test: a mixed workload from several client processes against a running mcp_fast, for a
long time, every answer checked, paced at a fraction of the measured maximum.

    python bench/soak.py --seconds 600                 # the demo server, started here
    python bench/soak.py --seconds 60 --fault sigterm  # a fault under load (see FAULTS)
    python bench/soak.py --url http://127.0.0.1:8000/mcp --pid 4242 --seconds 300

1. The target: with no ``--url``, the demo app (``python -m mcp_fast``) in one process, or with
   ``--workers N``, or two instances behind a real nginx (``--nginx``; what a fault needs).
2. The maximum: the mix flat out (each client process ``--concurrency`` operations at once) for
   ``--calibrate`` seconds after a second of warm-up; operations per second done.
3. The run: ``--load`` times that, on an open-loop schedule (each operation starts at its
   scheduled time and its latency counts from then), for ``--seconds``. Every ``--sample``
   seconds: the server's RSS, open descriptors and CPU (``/proc``), the event loop's lag
   (``/metrics``), the machine's other load (noise).
4. The report: a table per operation, figures, a chart (SVG) and a JSON file; the last line is
   ``soak: <requests> requests, <errors> errors, <lost> lost, rss <start> -> <end> MiB``.

Exit status: 0 when no answer was wrong, none was lost, the RSS after the warm-up grew by 10 %
or less (the RSS of a run whose fault restarts servers is not judged) and the fault's own checks
passed; 1 otherwise; 2 when the target could not be set up (or the fault cannot run here).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak_faults import FAULTS, Fault
from soak_mix import DEFAULT_WEIGHTS, SHORT, Plan, client_main
from soak_report import ms, operations_table, percentile, render_svg
from soak_target import (
    ROOT,
    Deployment,
    External,
    Local,
    LoopReading,
    NginxFleet,
    SetupError,
    cpu_seconds,
    machine_busy_seconds,
    open_fds,
    quantile,
    read_metrics,
    rss_kib,
    scrape,
    work_directory,
)

RESULTS = ROOT / "bench" / "results"  # git-ignored
RSS_GROWTH_LIMIT = 0.10
LAG_P99_GOAL = 0.005


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the paced run (60)")
    parser.add_argument(
        "--load", type=float, default=0.8, help="fraction of the measured maximum to pace at (0.8)"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="operations per second to pace at (skips the measurement)"
    )
    parser.add_argument(
        "--calibrate", type=float, default=5.0, help="seconds of the flat-out measurement (5)"
    )
    parser.add_argument("--clients", type=int, default=2, help="client processes (2)")
    parser.add_argument(
        "--concurrency", type=int, default=256, help="operations at once per process when flat out (256)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds before RSS and the loop lag are judged (a quarter of the run, 10 to 150)",
    )
    parser.add_argument(
        "--sample", type=float, default=2.0, help="seconds between samples of RSS, descriptors, lag (2)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="how long an operation's answers may take (30)"
    )
    parser.add_argument("--fault", choices=sorted(FAULTS), help="a fault to inject during the run")
    parser.add_argument(
        "--mix", default="", help="weights to change, e.g. call=40,bad=0 (see soak_mix.DEFAULT_WEIGHTS)"
    )
    parser.add_argument("--workers", type=int, default=1, help="start the demo server with --workers N")
    parser.add_argument("--nginx", action="store_true", help="start two instances behind nginx")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="another flag for the server(s) the soak starts"
    )
    parser.add_argument("--url", help="an external target, http://HOST:PORT/mcp (the soak starts nothing)")
    parser.add_argument(
        "--pid", type=int, action="append", default=[], help="the external target's process (repeatable)"
    )
    parser.add_argument(
        "--metrics-port", type=int, action="append", default=[], help="where to scrape /metrics (external)"
    )
    parser.add_argument("--no-h2", action="store_true", help="external target: no HTTP/2 in the mix")
    parser.add_argument(
        "--one-process", action="store_true", help="external target is one process (legacy, resume, notify)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS / "soak.json", help="the JSON report")
    parser.add_argument("--chart", type=Path, default=RESULTS / "soak.svg", help="the SVG chart")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server and nginx logs)")
    args = parser.parse_args(argv)
    if args.warmup is None:
        # Until the bounded tables are full and have turned over (the event store's 10,000
        # streams, the allocator's arenas under their churn): about 150 s of the mix at
        # 3,600 ops/s, when RSS growth falls to what the session denylist adds (README).
        args.warmup = min(150.0, max(10.0, args.seconds / 4))
    if args.seconds <= 0 or not 0 < args.load <= 2 or args.clients < 1:
        parser.error("--seconds > 0, 0 < --load <= 2, --clients >= 1")
    return args


def weights_of(text: str) -> dict[str, float]:
    weights = dict(DEFAULT_WEIGHTS)
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if name not in weights:
            raise SystemExit(f"soak: --mix: unknown operation {name!r} (known: {', '.join(weights)})")
        weights[name] = float(value)
    return weights


# -- running the client processes ----------------------------------------------------------------


@dataclass
class Second:
    """What every client process counted in one second of the run."""

    done: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    answered: int = 0
    errors: int = 0
    lost: int = 0
    latencies: list[float] = field(default_factory=list)  # short operations


@dataclass
class Collected:
    seconds: dict[int, Second] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    done: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    answered: int = 0
    errors: int = 0
    lost: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)
    finals: int = 0
    max_in_flight: int = 0

    def add(self, report: dict[str, Any], start: float) -> None:
        index = math.floor(report["time"] - start - 0.5)  # its tally covers the second before
        second = self.seconds.setdefault(index, Second())
        for kind, count in report["done"].items():
            second.done[kind] += count
            self.done[kind] += count
        for kind, count in report["failed"].items():
            second.failed[kind] += count
            self.failed[kind] += count
        for name in ("requests", "answered", "errors", "lost"):
            setattr(second, name, getattr(second, name) + report[name])
            setattr(self, name, getattr(self, name) + report[name])
        for kind, values in report["latencies"].items():
            self.latencies.setdefault(kind, []).extend(values)
            if kind in SHORT:
                second.latencies.extend(values)
        self.failures.extend(report["failures"])
        self.notes.update(report["notes"])
        self.max_in_flight = max(self.max_in_flight, report["in_flight"])
        if report["final"]:
            self.finals += 1


class Clients:
    """The client processes of one phase (the flat-out measurement, or the paced run)."""

    def __init__(self, plans: list[Plan]) -> None:
        context = multiprocessing.get_context("fork")
        self.queue: Any = context.Queue()
        self.processes = [
            context.Process(target=client_main, args=(plan, self.queue), daemon=True) for plan in plans
        ]
        self.collected = Collected()
        self.start = plans[0].start
        for process in self.processes:
            process.start()

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes if process.pid is not None]

    def poll(self, until: float) -> None:
        """Take reports until the wall-clock time ``until``."""
        while True:
            left = until - time.time()
            if left <= 0:
                return
            try:
                report = self.queue.get(timeout=left)
            except queue.Empty:
                return
            self.collected.add(report, self.start)

    def finish(self, deadline: float) -> None:
        """Every process's final report (or the deadline), then the processes are gone."""
        while self.collected.finals < len(self.processes) and time.time() < deadline:
            self.poll(min(deadline, time.time() + 0.5))
            if all(not process.is_alive() for process in self.processes):
                self.poll(time.time() + 0.5)
                break
        for process in self.processes:
            process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join()
        if self.collected.finals < len(self.processes):
            self.collected.errors += 1
            self.collected.failures.append(
                {
                    "time": time.time(),
                    "kind": "client",
                    "category": "client-died",
                    "detail": "a client process sent no final report",
                    "local_port": 0,
                }
            )


def plans_for(
    args: argparse.Namespace,
    deployment: Deployment,
    weights: dict[str, float],
    mode: str,
    seconds: float,
    rate: float,
) -> list[Plan]:
    start = time.time() + 2.0  # the processes initialize their sessions meanwhile
    return [
        Plan(
            index=index,
            processes=args.clients,
            target=deployment.target,
            weights=weights,
            mode=mode,
            start=start,
            seconds=seconds,
            rate=rate / args.clients,
            concurrency=args.concurrency,
            seed=args.seed,
            timeout=args.timeout,
            drain=args.timeout,
        )
        for index in range(args.clients)
    ]


def measure_maximum(
    args: argparse.Namespace, deployment: Deployment, weights: dict[str, float]
) -> dict[str, Any]:
    """The mix flat out: operations per second done after the first second."""
    seconds = args.calibrate + 1.0
    clients = Clients(plans_for(args, deployment, weights, "closed", seconds, 0.0))
    busy_before, cores = machine_busy_seconds()
    server_before = sum(cpu_seconds(pid) for pid in deployment.server_pids())
    clients.poll(clients.start + 1.0)
    busy_mid, _ = machine_busy_seconds()
    server_mid = sum(cpu_seconds(pid) for pid in deployment.server_pids())
    clients.poll(clients.start + seconds)
    busy_end, _ = machine_busy_seconds()
    server_end = sum(cpu_seconds(pid) for pid in deployment.server_pids())
    clients.finish(time.time() + args.timeout + 30)
    collected = clients.collected
    window = [second for index, second in collected.seconds.items() if 1 <= index < seconds]
    done = sum(sum(second.done.values()) for second in window)
    rate = done / max(1, len(window))
    span = max(1e-9, args.calibrate)
    del busy_before, server_before
    return {
        "operations_per_second": rate,
        "seconds": len(window),
        "errors": collected.errors,
        "lost": collected.lost,
        "failures": collected.failures[:20],
        "machine_busy": (busy_end - busy_mid) / span / cores,
        "server_cpu": (server_end - server_mid) / span,
    }


# -- sampling the server ------------------------------------------------------------------------------


@dataclass
class LagTracker:
    """The delay histogram of each instance, as deltas over the judged part of the run (an
    instance that restarted begins again from zero)."""

    last: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    judged: list[float] = field(default_factory=list)
    bounds: list[float] = field(default_factory=list)

    def add(self, port: int, reading: LoopReading, judged: bool) -> None:
        buckets = reading.buckets
        if not buckets:
            return
        before = self.last.get(port)
        self.last[port] = buckets
        if before is None:
            return  # the first reading of the run: what came before is not the run's
        if len(before) != len(buckets) or buckets[-1][1] < before[-1][1]:
            before = [(bound, 0.0) for bound, _ in buckets]  # restarted: all of it is new
        if not judged:
            return
        if not self.judged:
            self.bounds = [bound for bound, _ in buckets]
            self.judged = [0.0] * len(buckets)
        for index, ((_, now), (_, then)) in enumerate(zip(buckets, before, strict=True)):
            self.judged[index] += now - then

    def p99(self) -> float | None:
        return quantile(list(zip(self.bounds, self.judged, strict=True)), 0.99)

    def count(self) -> int:
        return int(self.judged[-1]) if self.judged else 0

    def share_over(self, bound: float) -> float | None:
        """The share of the judged checks later than ``bound`` (one of the histogram's bounds):
        under 1 % is a p99 within ``bound``, which the bucket bound alone cannot tell from one
        just at it."""
        if not self.judged or self.judged[-1] <= 0 or bound not in self.bounds:
            return None
        return 1.0 - self.judged[self.bounds.index(bound)] / self.judged[-1]


class Sampler:
    """RSS, descriptors and CPU of the server processes, the loop's lag, and the noise."""

    def __init__(self, deployment: Deployment, start: float, warmup: float) -> None:
        self.deployment = deployment
        self.start = start
        self.warmup = warmup
        self.samples: list[dict[str, Any]] = []
        self.lag = LagTracker()
        self.cpu: dict[int, float] = {}
        self.machine = machine_busy_seconds()[0]
        self.last_time = time.time()
        self.client_pids: list[int] = []

    def _cpu_delta(self, pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            now = cpu_seconds(pid)
            if now == 0.0:  # gone since (a client process after the run): not a negative delta
                self.cpu.pop(pid, None)
                continue
            total += now - self.cpu.get(pid, 0.0)  # a process new since the last sample: all of it
            self.cpu[pid] = now
        return total

    def prime(self, client_pids: list[int]) -> None:
        self.client_pids = client_pids
        for pid in [*self.deployment.server_pids(), *self.deployment.extra_pids, *client_pids, os.getpid()]:
            self.cpu[pid] = cpu_seconds(pid)
        for port in self.deployment.metrics_ports():
            text = scrape(port)
            if text is not None:
                self.lag.add(port, read_metrics(text), judged=False)
        self.machine = machine_busy_seconds()[0]
        self.last_time = time.time()

    def sample(self) -> dict[str, Any]:
        now = time.time()
        t = now - self.start
        pids = self.deployment.server_pids()
        rss = sum(rss_kib(pid) for pid in pids) / 1024
        fds = sum(open_fds(pid) for pid in pids)
        lag: float | None = None
        dropped = 0.0
        connections = 0.0
        for port in self.deployment.metrics_ports():
            text = scrape(port)
            if text is None:
                continue
            reading = read_metrics(text)
            if reading.lag is not None:
                lag = max(lag or 0.0, reading.lag)
            self.lag.add(port, reading, judged=t >= self.warmup)
            dropped += sum(
                value
                for name, value in reading.values.items()
                if name.startswith("mcp_server_log_lines_dropped")
            )
            connections += reading.values.get("mcp_server_open_connections", 0.0)
        span = now - self.last_time
        server_cpu = self._cpu_delta(pids)
        others = self._cpu_delta([*self.deployment.extra_pids, *self.client_pids, os.getpid()])
        machine, cores = machine_busy_seconds()
        noise = max(0.0, (machine - self.machine) - server_cpu - others) / max(span, 1e-6) / cores
        self.machine, self.last_time = machine, now
        rates: dict[str, float | None] = {
            "server_cpu": server_cpu / max(span, 1e-6),
            "load_cpu": others / max(span, 1e-6),
            "noise": noise,
        }
        if span < 0.5:  # CPU time moves in 10 ms ticks: a rate over a moment means nothing
            rates = dict.fromkeys(rates)
        sample = {
            "t": round(t, 2),
            "rss_mib": round(rss, 1),
            "fds": fds,
            "lag": lag,
            **rates,
            "processes": len(pids),
            "log_lines_dropped": dropped,
            "open_connections": connections,
        }
        self.samples.append(sample)
        return sample


# -- the report ---------------------------------------------------------------------------------------


def summarize(
    args: argparse.Namespace,
    deployment: Deployment,
    fault: Fault | None,
    maximum: dict[str, Any] | None,
    rate: float,
    clients: Clients,
    sampler: Sampler,
) -> dict[str, Any]:
    collected = clients.collected
    operations: dict[str, Any] = {}
    errors_by_kind: Counter[str] = Counter()
    lost_by_kind: Counter[str] = Counter()
    excused_errors = excused_lost = unexpected_503 = 0
    for failure in collected.failures:
        excused = fault is not None and fault.excused(failure)
        if failure["category"] == "lost":
            lost_by_kind[failure["kind"]] += failure.get("lost", 1)
            excused_lost += failure.get("lost", 1) if excused else 0
        elif failure["category"] == "503":
            unexpected_503 += 0 if excused else 1
        else:
            errors_by_kind[failure["kind"]] += 1
            excused_errors += 1 if excused else 0
    for kind in sorted(set(collected.done) | set(collected.failed), key=lambda k: -collected.done[k]):
        values = collected.latencies.get(kind, [])
        operations[kind] = {
            "done": collected.done[kind],
            "errors": errors_by_kind[kind],
            "lost": lost_by_kind[kind],
            "p50": percentile(values, 0.5),
            "p99": percentile(values, 0.99),
            "max": max(values) if values else None,
        }
    short = [value for kind in SHORT for value in collected.latencies.get(kind, [])]
    series = []
    for index in range(int(args.seconds)):
        second = collected.seconds.get(index, Second())
        series.append(
            {
                "t": index + 0.5,
                "done": sum(second.done.values()),
                "answered": second.answered,
                "errors": second.errors,
                "lost": second.lost,
                "p99": percentile(second.latencies, 0.99),
            }
        )
    samples = sampler.samples
    judged = [sample for sample in samples if sample["t"] >= args.warmup and sample["t"] <= args.seconds]
    first = samples[0] if samples else {"rss_mib": 0.0, "fds": 0}
    last_in_run = [sample for sample in samples if sample["t"] <= args.seconds + 0.5] or samples
    end = last_in_run[-1] if last_in_run else first
    warm = judged[0] if judged else end
    growth = (end["rss_mib"] - warm["rss_mib"]) / warm["rss_mib"] if warm["rss_mib"] else 0.0
    done_per_second = [point["done"] for point in series[1:-1]] or [0]
    lags = [sample["lag"] for sample in samples if sample["lag"] is not None]
    noise = [sample["noise"] for sample in samples if sample["noise"] is not None]
    cpu = [sample["server_cpu"] for sample in samples if sample["server_cpu"] is not None]
    summary: dict[str, Any] = {
        "title": f"mcp_fast soak: {args.seconds:.0f} s at {args.load:g} of the maximum"
        + (f", fault {args.fault}" if args.fault else ""),
        "target": deployment.describe(),
        "seconds": args.seconds,
        "load": args.load,
        "clients": args.clients,
        "maximum": maximum,
        "rate": rate,
        "operations": operations,
        "requests": collected.requests,
        "answered": collected.answered,
        "errors": collected.errors,
        "lost": collected.lost,
        # What the checks count: the fault's explained failures out, 503s it did not explain in.
        "unexplained_errors": collected.errors - excused_errors + unexpected_503,
        "unexplained_lost": collected.lost - excused_lost,
        "explained": {"errors": excused_errors, "lost": excused_lost},
        "throughput": {
            "operations_per_second": sum(collected.done.values()) / args.seconds,
            "requests_per_second": collected.requests / args.seconds,
            "median_per_second": statistics.median(done_per_second),
            "min_per_second": min(done_per_second),
        },
        "latency_short": {
            "p50": percentile(short, 0.5),
            "p99": percentile(short, 0.99),
            "max": max(short) if short else None,
        },
        "rss": {
            "start": first["rss_mib"],
            "warm": warm["rss_mib"],
            "warm_t": warm.get("t"),
            "end": end["rss_mib"],
            "peak": max((sample["rss_mib"] for sample in samples), default=0.0),
            "growth_after_warmup": growth,
            "judged": fault is None or fault.judge_rss,
        },
        "fds": {
            "start": first["fds"],
            "end": end["fds"],
            "max": max((sample["fds"] for sample in samples), default=0),
        },
        "lag": {
            "p99": sampler.lag.p99(),
            "checks": sampler.lag.count(),
            "over_goal": sampler.lag.share_over(LAG_P99_GOAL),
            "max_gauge": max(lags) if lags else None,
            "gauge_p99": percentile(lags, 0.99),
        },
        "server_cpu": statistics.mean(cpu) if cpu else 0.0,
        "noise": {"median": statistics.median(noise) if noise else 0.0, "max": max(noise) if noise else 0.0},
        "notes": dict(collected.notes),
        "failures": sorted(collected.failures, key=lambda f: f["category"] == "503")[:50],
        "failure_counts": dict(Counter(f"{f['kind']} {f['category']}" for f in collected.failures)),
        "max_in_flight": collected.max_in_flight,
        "series": series,
        "samples": samples,
        "markers": [{"t": args.warmup, "label": "warm-up ends", "color": "#888"}],
        "machine": f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}",
        "git": git_head(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    summary["subtitle"] = (
        f"{summary['target'][:110]}; {rate:,.0f} ops/s paced; "
        f"{collected.requests:,} requests, {collected.errors} errors, {collected.lost} lost"
    )
    if fault is not None:
        summary["fault"] = fault.report(summary, clients, deployment)
        summary["markers"] += fault.markers
    return summary


def git_head() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "?"
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def verdicts(summary: dict[str, Any], args: argparse.Namespace) -> list[tuple[bool, str]]:
    explained = summary["explained"]
    why = (
        f" (besides {explained['errors']} errors and {explained['lost']} lost the fault explains)"
        if any(explained.values())
        else ""
    )
    checks = [
        (summary["unexplained_errors"] == 0, f"{summary['unexplained_errors']} errors{why}"),
        (summary["unexplained_lost"] == 0, f"{summary['unexplained_lost']} lost"),
    ]
    rss = summary["rss"]
    if rss["judged"]:
        checks.append(
            (
                rss["growth_after_warmup"] <= RSS_GROWTH_LIMIT,
                f"RSS after the warm-up {rss['warm']:.1f} -> {rss['end']:.1f} MiB ({rss['growth_after_warmup']:+.1%}, limit +{RSS_GROWTH_LIMIT:.0%})",
            )
        )
    lag = summary["lag"]
    if lag["p99"] is not None:
        # Reported against the goal; not an exit condition (a shared machine's CPU steal shows here).
        summary["lag"]["goal_met"] = lag["p99"] <= LAG_P99_GOAL
    for ok, message in summary.get("fault", {}).get("verdicts", []):
        checks.append((ok, message))
    return checks


def print_summary(summary: dict[str, Any], checks: list[tuple[bool, str]]) -> None:
    maximum = summary["maximum"]
    print()
    print(f"## {summary['title']}")
    print(f"target: {summary['target']}")
    if maximum is not None:
        print(
            f"maximum: {maximum['operations_per_second']:,.0f} ops/s flat out ({maximum['seconds']} s, machine "
            f"{maximum['machine_busy']:.0%} busy, server {maximum['server_cpu']:.0%} of a core); paced at "
            f"{summary['rate']:,.0f} ops/s ({summary['load']:g})"
        )
    else:
        print(f"paced at {summary['rate']:,.0f} ops/s (given)")
    print()
    print(operations_table(summary))
    print()
    throughput = summary["throughput"]
    latency = summary["latency_short"]
    rss = summary["rss"]
    lag = summary["lag"]
    print(
        f"throughput: {throughput['operations_per_second']:,.0f} ops/s ({throughput['requests_per_second']:,.0f} requests/s; "
        f"per second median {throughput['median_per_second']:,.0f}, min {throughput['min_per_second']:,.0f})"
    )
    print(
        f"short operations: p50 {ms(latency['p50'])} ms, p99 {ms(latency['p99'])} ms, max {ms(latency['max'])} ms"
    )
    print(
        f"server RSS: {rss['start']:.1f} MiB at the start, {rss['warm']:.1f} after the warm-up ({rss['warm_t']} s), "
        f"{rss['end']:.1f} at the end ({rss['growth_after_warmup']:+.1%}), peak {rss['peak']:.1f}"
        + ("" if rss["judged"] else " (not judged: the fault restarts servers)")
    )
    print(
        f"open descriptors: {summary['fds']['start']} -> {summary['fds']['end']} (max {summary['fds']['max']})"
    )
    print(
        f"event loop lag: p99 {ms(lag['p99'])} ms over {lag['checks']:,} checks after the warm-up (goal < 5 ms), "
        f"largest seen {ms(lag['max_gauge'])} ms"
        + (f"; {lag['over_goal']:.2%} of the checks over 5 ms" if lag.get("over_goal") is not None else "")
    )
    print(
        f"server CPU {summary['server_cpu']:.0%} of a core on average; noise (other processes): median "
        f"{summary['noise']['median']:.0%}, max {summary['noise']['max']:.0%} of the machine"
    )
    if summary["notes"]:
        print("notes: " + ", ".join(f"{name} {count:,}" for name, count in sorted(summary["notes"].items())))
    if summary["failures"]:
        print("first failures:")
        for failure in summary["failures"][:10]:
            print(f"  {failure['kind']}: {failure['category']}: {failure['detail']}")
    fault = summary.get("fault")
    if fault is not None:
        print(
            f"fault {fault['name']}: "
            + ", ".join(f"{name} {value}" for name, value in fault["figures"].items())
        )
    for ok, message in checks:
        print(f"  [{'ok' if ok else 'FAIL'}] {message}")


def _stop_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # the servers, nginx and Redis it started are stopped on the way out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    weights = weights_of(args.mix)
    fault = FAULTS[args.fault]() if args.fault else None
    if fault is not None:
        problem = fault.unavailable()
        if problem:
            print(f"soak: fault {args.fault}: {problem}", file=sys.stderr)
            return 2
    directory = work_directory()
    deployment: Deployment
    extra = list(args.server_arg) + (fault.server_args(directory) if fault is not None else [])
    try:
        if args.url:
            deployment = External(
                directory, args.url, args.pid, args.metrics_port, not args.no_h2, args.one_process
            )
        elif fault is not None and fault.deployment != "local":
            deployment = fault.build(directory, extra)
        elif args.nginx:
            deployment = NginxFleet(directory, extra)
        else:
            deployment = Local(directory, extra, fault.workers if fault is not None else args.workers)
        if fault is not None:
            fault.prepare(deployment, weights)
        deployment.start()
    except SetupError as exc:
        print(f"soak: cannot set up the target: {exc}", file=sys.stderr)
        return 2
    print(f"soak: {deployment.describe()}; work directory {directory}", flush=True)
    try:
        return run(args, deployment, fault, weights)
    finally:
        deployment.stop()
        if fault is not None:
            fault.cleanup()
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


def run(
    args: argparse.Namespace, deployment: Deployment, fault: Fault | None, weights: dict[str, float]
) -> int:
    maximum = None
    if args.rate:
        rate = args.rate
    else:
        print(f"soak: measuring the maximum: the mix flat out for {args.calibrate:g} s ...", flush=True)
        maximum = measure_maximum(args, deployment, weights)
        if maximum["errors"] or maximum["lost"]:
            print(
                f"soak: the flat-out measurement had {maximum['errors']} errors, {maximum['lost']} lost:",
                file=sys.stderr,
            )
            for failure in maximum["failures"][:10]:
                print(f"  {failure['kind']}: {failure['category']}: {failure['detail']}", file=sys.stderr)
        rate = args.load * maximum["operations_per_second"]
        print(
            f"soak: maximum {maximum['operations_per_second']:,.0f} ops/s; pacing at {rate:,.0f} ops/s for {args.seconds:g} s",
            flush=True,
        )
        time.sleep(1.0)  # the flat-out clients' connections are gone
    plans = plans_for(args, deployment, weights, "open", args.seconds, rate)
    clients = Clients(plans)
    sampler = Sampler(deployment, clients.start, args.warmup)
    clients.poll(clients.start - 0.3)
    sampler.prime(clients.pids)
    sampler.sample()
    if fault is not None:
        fault.begin(clients.start, args.seconds, deployment)
    next_sample = clients.start + args.sample
    next_line = clients.start + 10
    end = clients.start + args.seconds
    while time.time() < end:
        step_until = min(next_sample, end)
        if fault is not None:
            step_until = min(step_until, fault.next_action(time.time()))
        clients.poll(step_until)
        now = time.time()
        if fault is not None and now >= fault.next_action(now):
            fault.act(now - clients.start)
        if now >= next_sample:
            sample = sampler.sample()
            next_sample += args.sample
            if now >= next_line:
                collected = clients.collected
                print(
                    f"  {sample['t']:6.0f} s  {sum(collected.done.values()):>9,} ops  {collected.errors} errors  {collected.lost} lost  "
                    f"rss {sample['rss_mib']:.1f} MiB  fds {sample['fds']}  lag {ms(sample['lag'])} ms  noise {(sample['noise'] or 0.0):.0%}",
                    flush=True,
                )
                next_line += 10
    sampler.sample()
    clients.finish(time.time() + args.timeout + 30)
    if fault is not None:
        fault.finish(deployment)
    sampler.sample()
    summary = summarize(args, deployment, fault, maximum, rate, clients, sampler)
    checks = verdicts(summary, args)
    summary["verdicts"] = [{"ok": ok, "check": message} for ok, message in checks]
    print_summary(summary, checks)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    args.chart.parent.mkdir(parents=True, exist_ok=True)
    args.chart.write_text(render_svg(summary))
    print(f"soak: report {args.output}, chart {args.chart}")
    rss = summary["rss"]
    explained = summary["explained"]
    why = (
        f" ({explained['errors']} errors and {explained['lost']} lost explained by the fault)"
        if any(explained.values())
        else ""
    )
    print(
        f"soak: {summary['requests']} requests, {summary['errors']} errors, {summary['lost']} lost, "
        f"rss {rss['start']:.1f} -> {rss['end']:.1f} MiB{why}",
        flush=True,
    )
    return 0 if all(ok for ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
