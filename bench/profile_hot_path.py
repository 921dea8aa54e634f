#!/usr/bin/env python3
"""Where mcp_fast's time per request goes, on the headline workload (bench/README.md "Profile").

    python bench/profile_hot_path.py [--duration 10] [--rate 500] [--workload tools_call_echo]
                                     [--server mcp_fast]

1. Start mcp_fast as bench/run.py does (``--server``: ``mcp_fast`` is the headline, default flags,
   a JWT session, echo a plain ``def``; ``mcp_fast_inline``, ``mcp_fast_async``,
   ``mcp_fast_stateless`` are its variants), pinned to core 0, and check it answers correctly.
2. Warm up, then one run of wrk without the profiler (core 1, 50 connections): the server's CPU time
   per request (utime + stime from /proc; the kernel's loopback TCP work in its own syscalls is in
   stime) and its split between user and kernel.
3. One run with py-spy (``--native``: uvloop's C frames and the syscalls show) attached to the server
   while wrk loads it: a stack every 1/rate s, idle samples (the loop waiting in epoll) dropped.
4. Each sample goes to the step of the request it was in: the innermost frame that matches a rule
   in ``STEPS`` decides (a write syscall under ``HttpConnection.respond`` is "write"; orjson under
   ``jsonrpc.decode`` is "JSON decode"); a sample no rule claims is event loop / kernel work.
   Share of samples x CPU µs per request (step 2) = µs per request per step. py-spy runs on the load
   core; ``--native`` needs it to stop the server for each sample (``--nonblocking`` can't unwind C
   frames), which slows the server, so the rate is low (100/s) and the run long. As a check on
   the sampling, the share of samples in syscalls is printed next to the kernel's share of the
   server's CPU time (stime / (utime + stime) from /proc): they should agree.

Writes ``bench/results/profile.json`` (table and settings) and ``bench/results/profile.raw.txt``
(py-spy's collapsed stacks, for a flame graph); for another ``--server`` than ``mcp_fast``,
``profile.<server>.json`` and ``profile.<server>.raw.txt``. py-spy comes from ``.bench-venv/`` (requirements).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/run.py: servers, checks, wrk runner

RESULTS = run.RESULTS_DIR

WRITE = "write (response head, transport.writelines)"
WRITE_SYSCALL = "kernel: send of the response (loopback TCP, delivery into the client's socket)"
# (step, file substring, function names or None for any) -- checked innermost frame first. py-spy
# names a frame "function (path:line)", the path relative to sys.path ("mcp_fast/wire/h1.py");
# native frames are "symbol (library or C file)".
STEPS: list[tuple[str, str, tuple[str, ...] | None]] = [
    ("handler (echo)", "mcp_fast_app.py", None),
    ("argument validation", "pydantic_core", None),
    ("argument validation", "pydantic", None),
    ("encode (orjson.dumps)", "mcp_fast/protocol/jsonrpc.py", ("encode_result", "dumps", "_default")),
    ("JSON decode (orjson.loads)", "mcp_fast/protocol/jsonrpc.py", ("decode",)),
    (
        "JSON-RPC envelope",
        "mcp_fast/protocol/jsonrpc.py",
        ("parse_message", "request_parts", "_parse_response"),
    ),
    ("result shaping", "mcp_fast/results.py", None),
    ("result shaping", "mcp_fast/content.py", None),
    ("result shaping", "mcp_fast/schema.py", ("serialize",)),
    ("result shaping", "mcp_fast/dispatch/dispatcher.py", ("finalize",)),
    ("dispatch (route, tool lookup)", "mcp_fast/dispatch/", None),
    ("pipeline (Call, cache probe, answer)", "mcp_fast/pipeline/", None),
    ("pipeline (Call, cache probe, answer)", "mcp_fast/call.py", None),
    (
        WRITE,
        "mcp_fast/wire/h1.py",
        ("response_head", "encode_response", "_status_line", "encode_chunk"),
    ),
    (
        WRITE,
        "mcp_fast/net/connection.py",
        ("respond", "start_stream", "send_stream", "end_stream"),
    ),
    ("channel + context (PostChannel, Context)", "mcp_fast/transport/streamable/answer.py", None),
    ("channel + context (PostChannel, Context)", "mcp_fast/transport/streamable/calls.py", None),
    ("channel + context (PostChannel, Context)", "mcp_fast/context.py", None),
    ("JSON-RPC envelope", "mcp_fast/protocol/envelope.py", None),
    (
        "POST handling (streamable.post)",
        "mcp_fast/transport/streamable/endpoint.py",
        ("post", "post_message", "state_of"),
    ),
    ("POST handling (streamable.post)", "mcp_fast/transport/streamable/sessionless.py", None),
    ("header verdict (routing, Host/Accept/version)", "mcp_fast/transport/streamable/", None),
    ("header verdict (routing, Host/Accept/version)", "mcp_fast/transport/origin.py", None),
    ("header verdict (routing, Host/Accept/version)", "mcp_fast/protocol/versions.py", None),
    ("HTTP parse (h1)", "mcp_fast/wire/h1.py", None),
    ("request loop (connection.py, eager start)", "mcp_fast/net/connection.py", None),
    ("request loop (connection.py, eager start)", "mcp_fast/net/eager.py", None),
    ("request loop (connection.py, eager start)", "mcp_fast/net/flow.py", None),
]
SYSCALLS = {
    "read": "kernel: socket read",
    "recv": "kernel: socket read",
    "recvfrom": "kernel: socket read",
    "readv": "kernel: socket read",
    "write": "kernel: other socket writes",
    "writev": "kernel: other socket writes",
    "send": "kernel: other socket writes",
    "sendmsg": "kernel: other socket writes",
    "epoll_wait": "kernel: epoll",
    "epoll_pwait": "kernel: epoll",
    "epoll_ctl": "kernel: epoll",
}
ORDER = [
    "HTTP parse (h1)",
    "header verdict (routing, Host/Accept/version)",
    "JSON decode (orjson.loads)",
    "JSON-RPC envelope",
    "POST handling (streamable.post)",
    "pipeline (Call, cache probe, answer)",
    "channel + context (PostChannel, Context)",
    "dispatch (route, tool lookup)",
    "argument validation",
    "handler (echo)",
    "result shaping",
    "encode (orjson.dumps)",
    WRITE,
    "request loop (connection.py, eager start)",
    "event loop (uvloop/libuv code)",
    "other (interpreter, GC, libc)",
    "kernel: socket read",
    WRITE_SYSCALL,
    "kernel: other socket writes",
    "kernel: epoll",
]


def _frame_parts(frame: str) -> tuple[str, str]:
    """'name (file:line)' -> (name, file)."""
    name, _, where = frame.rpartition(" (")
    return (name or frame), where.rstrip(")")


def classify(stack: list[str]) -> str:
    """The step of one sample: its innermost frame that a rule claims. Kernel time goes to the step
    whose code made the syscall (the response's send is "write"); syscalls no rule claims (the
    loop's reads and epoll) are listed by themselves."""
    leaf_name, leaf_file = _frame_parts(stack[-1])
    syscall = SYSCALLS.get(leaf_name) if "libc" in leaf_file else None
    for frame in reversed(stack):
        name, where = _frame_parts(frame)
        method = name.rsplit(".", 1)[-1]
        for step, file_part, functions in STEPS:
            if file_part in where and (functions is None or method in functions):
                if step == WRITE and syscall == "kernel: other socket writes":
                    return WRITE_SYSCALL
                return step
    if syscall:
        return syscall
    if any("uvloop" in f or "loop.c" in f or "libuv" in f for f in stack):
        return "event loop (uvloop/libuv code)"
    return "other (interpreter, GC, libc)"


def _idle_pool_thread(stack: list[str]) -> bool:
    """A handler thread waiting for work (the thread pool of plain ``def`` handlers): py-spy's
    native mode samples it as busy, but it takes no CPU."""
    return any(frame.startswith("_worker ") for frame in stack) and any(
        "SimpleQueue_get" in frame for frame in stack[-5:]
    )


def analyse(raw_path: Path, cpu_us: float, kernel_share: float) -> tuple[list[dict[str, Any]], int, float]:
    """Steps with their share of samples and µs per request.

    py-spy's native mode stops the server for each sample, and that over-samples syscalls (about
    two thirds of the samples against under half of the CPU time in the kernel, measured). So the
    µs are rescaled per group: the kernel steps share the kernel time /proc measured (stime), the
    others the user time (utime), each in proportion to their samples.
    """
    steps: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text:
            continue
        stack = stack_text.split(";")
        if _idle_pool_thread(stack):
            continue
        n = int(count)
        total += n
        steps[classify(stack)] += n
    kernel_samples = sum(n for step, n in steps.items() if step.startswith("kernel"))
    user_samples = total - kernel_samples
    rows = []
    for step in ORDER + sorted(set(steps) - set(ORDER)):
        n = steps.get(step, 0)
        if step.startswith("kernel"):
            us = n / kernel_samples * kernel_share * cpu_us if kernel_samples else 0.0
        else:
            us = n / user_samples * (1 - kernel_share) * cpu_us if user_samples else 0.0
        rows.append(
            {
                "step": step,
                "samples_pct": round(100 * n / total, 1) if total else 0.0,
                "us_per_request": round(us, 2),
                "time_pct": round(100 * us / cpu_us, 1) if cpu_us else 0.0,
            }
        )
    return rows, total, 100 * kernel_samples / total if total else 0.0


def print_table(rows: list[dict[str, Any]], cpu_us: float, kernel_share: float, in_syscalls: float) -> None:
    print(
        f"samples in syscalls: {in_syscalls:.0f}%; kernel share of the server's CPU time (stime / "
        f"(utime + stime), /proc): {100 * kernel_share:.0f}%: µs rescaled per group (see analyse())\n"
    )
    print(f"| step | samples | share of time | µs per request (of {cpu_us:.1f}) |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['step']} | {r['samples_pct']:.1f} % | {r['time_pct']:.1f} % | {r['us_per_request']:.2f} |"
        )


def _user_sys(pid: int) -> tuple[int, int]:
    fields = run._stat_fields(pid)
    return int(fields[11]), int(fields[12])  # utime, stime in clock ticks


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=20.0, help="seconds of each run (default 20)")
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second (default 100)")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument(
        "--workload",
        default=run.HEADLINE,
        choices=list(run.WORKLOADS),
    )
    p.add_argument(
        "--server",
        default="mcp_fast",
        choices=[name for name, spec in run.SERVERS.items() if spec.family == "mcp_fast"],
        help="which mcp_fast server of bench/run.py (default mcp_fast: the headline, default flags)",
    )
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument(
        "--analyse-only",
        action="store_true",
        help="no run: classify bench/results/profile.raw.txt again with profile.json's figures",
    )
    args = p.parse_args()
    spec = run.SERVERS[args.server]
    if args.workload not in spec.workloads:
        p.error(
            f"--workload {args.workload}: {args.server} does not serve it (it serves {', '.join(spec.workloads)})"
        )
    stem = "profile" if args.server == "mcp_fast" else f"profile.{args.server}"
    json_path, raw_path = RESULTS / f"{stem}.json", RESULTS / f"{stem}.raw.txt"
    if args.analyse_only:
        saved = json.loads(json_path.read_text())
        cpu_us, kernel_share = saved["plain"]["us_per_request"], saved["plain"]["kernel_share_pct"] / 100
        rows, total, in_syscalls = analyse(raw_path, cpu_us, kernel_share)
        print_table(rows, cpu_us, kernel_share, in_syscalls)
        saved["steps"] = rows
        json_path.write_text(json.dumps(saved, indent=2) + "\n")
        return 0
    run.check_cpus(args.server_cpu, args.load_cpu)
    peers_python = run.ensure_peers_venv()
    pyspy = str(Path(peers_python).parent / "py-spy")
    tools = {"wrk": run.ensure_tool("wrk", "wrk")}
    workload = run.WORKLOADS[args.workload]
    pythons = run.Pythons(project=sys.executable, peers=peers_python)
    server = run.launch_server(spec, pythons, (args.server_cpu,), label=f"{args.server}_profile")
    try:
        run.wait_listening(server)
        if server.failure:
            print(f"mcp_fast did not start: {server.failure}\n{server.log_tail()}")
            return 1
        run.check_server(server, [workload])  # opens the session the headline app needs
        check = server.checks[workload.name]
        if not check.ok:
            print(f"mcp_fast answers wrongly: {check.detail}")
            return 1
        request = run.write_request_file(workload, server)
        load = run.LoadSettings(args.connections, 1, 5.0, (args.load_cpu,))

        def load_run(duration: float, rep: int) -> run.RunResult:
            return run.run_load(
                tools,
                server,
                workload,
                request,
                phase="profile",
                repetition=rep,
                duration=duration,
                load=load,
            )

        load_run(3.0, 0)  # warm-up
        user0, sys0 = _user_sys(server.pid)
        plain = load_run(args.duration, 1)
        user1, sys1 = _user_sys(server.pid)
        if not plain.ok:
            print(f"load run failed: {plain.failure or plain.errors}")
            return 1
        # CPU time per request: the process's utime + stime. This kernel accounts by ticks (no
        # IRQ_TIME_ACCOUNTING), so the softirq work of its own sends (loopback TCP delivery) is in
        # its stime, as it is in py-spy's samples of the send syscall. Interrupt work outside the
        # process (the rest of the core's busy time) is reported, not profiled.
        cpu_us = plain.server_cpu_pct / 100 * 1e6 / plain.rps
        core_us = plain.core_busy_pct.get("server", 0.0) / 100 * 1e6 / plain.rps
        kernel_share = (sys1 - sys0) / max(1, (user1 - user0) + (sys1 - sys0))
        print(
            f"without profiler: {plain.rps:,.0f} req/s; server cpu {plain.server_cpu_pct:.0f}%, its core busy "
            f"{plain.core_busy_pct.get('server', 0.0):.0f}% (noise {plain.other_load_pct.get('server', 0):.0f}%); "
            f"{cpu_us:.1f} µs CPU per request in the process ({100 * kernel_share:.0f}% in the kernel), "
            f"{core_us:.1f} µs of its core; p50 {plain.latency_ms['p50']:.2f} ms, p99 {plain.latency_ms['p99']:.2f} ms"
        )
        RESULTS.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen(
            ["taskset", "-c", str(args.load_cpu), pyspy, "record", "--pid", str(server.pid), "--native",
             "--rate", str(args.rate), "--format", "raw", "--output", str(raw_path),
             "--duration", str(int(args.duration) + 2)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        time.sleep(1.0)  # py-spy attached
        profiled = load_run(args.duration, 2)
        out, _ = spy.communicate(timeout=args.duration + 30)
        if spy.returncode != 0 or not raw_path.exists():
            print(f"py-spy failed ({spy.returncode}): {out.decode(errors='replace')[-500:]}")
            return 1
    finally:
        run.stop_server(server)

    rows, total, in_syscalls = analyse(raw_path, cpu_us, kernel_share)
    print(
        f"with py-spy at {args.rate}/s: {profiled.rps:,.0f} req/s ({100 * (profiled.rps / plain.rps - 1):+.0f}%), "
        f"{total:,} non-idle samples"
    )
    print_table(rows, cpu_us, kernel_share, in_syscalls)
    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "workload": workload.name,
        "server": args.server,
        "connections": args.connections,
        "git": run._git_describe(),
        "loadavg": os.getloadavg(),
        "plain": {
            "rps": plain.rps,
            "server_cpu_pct": plain.server_cpu_pct,
            "us_per_request": cpu_us,
            "core_us_per_request": core_us,
            "core_busy_pct": plain.core_busy_pct,
            "kernel_share_pct": 100 * kernel_share,
            "latency_ms": plain.latency_ms,
            "noise_pct": plain.other_load_pct,
        },
        "profiled": {
            "rps": profiled.rps,
            "server_cpu_pct": profiled.server_cpu_pct,
            "samples": total,
            "samples_in_syscalls_pct": in_syscalls,
            "rate": args.rate,
        },
        "steps": rows,
        "raw": str(raw_path.relative_to(run.ROOT)),
    }
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {json_path.relative_to(run.ROOT)} and {raw_path.relative_to(run.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
