#!/usr/bin/env python3
"""Instructions per request of mcp_fast's own code, counted by callgrind: a figure that does not
depend on what else the machine is doing, for checking that a change costs nothing.

    python bench/instructions.py [--workloads echo,echo_async,...] [--flags '--audit-log /tmp/a.log']

Runs ``bench/inprocess.py`` under ``valgrind --tool=callgrind`` twice per workload (a short and a
longer run, ``PYTHONHASHSEED=0``) and divides the difference of the totals by the difference of
the request counts, so start-up and warm-up cancel out. Needs valgrind (Debian: ``valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = ("echo", "echo_async", "echo_inline", "echo_stateless", "sessionless", "sse", "list", "cached", "h2")
SHORT, LONG = 4000, 12000


def collected(workload: str, requests: int, scratch: Path, extra: list[str]) -> int:
    """Total instructions of one callgrind run of the in-process benchmark."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={scratch / f'{workload}.{requests}.out'}",
            sys.executable,
            str(HERE / "inprocess.py"),
            "--workload",
            workload,
            "--requests",
            str(requests),
            "--repeat",
            "1",
            "--offload-after",
            "10s",  # valgrind runs everything ~50x slower: keep a quick handler quick
            *extra,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        check=True,
    )
    match = re.search(r"Collected : ([\d,]+)", done.stderr)
    if match is None:
        raise SystemExit(f"callgrind printed no total for {workload}:\n{done.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="comma-separated, of: " + ", ".join(WORKLOADS)
    )
    parser.add_argument("--flags", default="", help="more server flags, as bench/inprocess.py's --flags")
    parser.add_argument(
        "--header", action="append", default=[], help="NAME:VALUE sent with every request (repeatable)"
    )
    args = parser.parse_args()
    extra = [f"--flags={args.flags}"] if args.flags else []
    extra += [f"--header={header}" for header in args.header]
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    workloads = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"--workloads: unknown {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    with tempfile.TemporaryDirectory() as scratch:
        for workload in workloads:
            short = collected(workload, SHORT, Path(scratch), extra)
            long = collected(workload, LONG, Path(scratch), extra)
            print(f"{workload}: {(long - short) / (LONG - SHORT):,.0f} instructions per request", flush=True)


if __name__ == "__main__":
    main()
