#!/usr/bin/env python3
"""Deliberate bugs, and the tests that must catch them.

    python scripts/mutations.py            # every mutation: apply it to a copy, run its tests
    python scripts/mutations.py --check    # seconds: every snippet is still in the code, once
    python scripts/mutations.py --only NAME [--only NAME ...]

Each row of ``MUTATIONS`` is a small bug that once passed every test (or would have): a file,
an exact snippet of it, what to put instead, and the tests that must now fail. For each row the
script copies the checkout (the files git tracks or would track, as they are in the working
tree, uncommitted edits included) to a temporary directory, puts the bug in the copy, and runs
the listed tests there with pytest: "caught" when they fail, "SURVIVED" when they pass. The
working tree is never touched. Before the first mutation the listed tests run once on the
unchanged copy: they must pass, or "caught" would mean nothing.

A row whose snippet is no longer in its file exactly once is "stale": the code moved on and the
row must follow it (``--check`` finds these without running anything; tests/test_mutations.py
runs it). Exit status 1 when any mutation survived, is stale, or its tests could not run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    why: str  # the behaviour the bug breaks
    file: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    replacement: str
    tests: tuple[str, ...]  # pytest node ids that must fail with the bug in place


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "h1-bare-lf-head-waits",
        "a head whose lines end in a bare LF/CR is refused at once, not left waiting for the header timeout",
        "mcp_fast/wire/h1.py",
        "        if bare is not None and bare.end() - start <= max_head:\n"
        "            raise ProtocolError(400, _BARE_CR_LF_REASON)\n",
        "        if False:\n            raise ProtocolError(400, _BARE_CR_LF_REASON)\n",
        (
            "tests/test_h1.py::test_bare_cr_or_lf_in_a_head_is_refused_at_once",
            "tests/test_http_server.py::test_bare_cr_or_lf_is_refused_at_once",
        ),
    ),
    Mutation(
        "h1-bare-lf-answer-depends-on-split",
        "a complete head with a bare LF gets the same answer (400) as when it arrives in pieces",
        "mcp_fast/wire/h1.py",
        "            return exc  # the request-line was too long first: _parse_head raised 414\n"
        "        return ProtocolError(400, _BARE_CR_LF_REASON)\n",
        "            return exc  # the request-line was too long first: _parse_head raised 414\n"
        "        return exc\n",
        ("tests/test_h1.py::test_bare_lf_with_too_many_fields_is_400_however_split",),
    ),
    Mutation(
        "h1-bare-lf-chunk-size-line-waits",
        "a chunk-size line ending in a bare LF is refused at once",
        "mcp_fast/wire/h1.py",
        'if data.find(b"\\n", i, n) >= 0 or data.find(b"\\r", i, n - 1) >= 0:',
        "if False:",
        ("tests/test_h1.py::test_bare_cr_or_lf_in_chunked_framing_is_refused_at_once",),
    ),
    Mutation(
        "resume-replays-from-the-start",
        "a resumed SSE stream (Last-Event-ID) sends only the events after that id",
        "mcp_fast/fleet/event_store.py",
        " if seq > after]\n",
        " if seq > 0]\n",
        ("tests/test_streams_and_tasks.py::test_a_resumed_stream_sends_only_the_events_after_last_event_id",),
    ),
    Mutation(
        "resume-from-an-evicted-event-served-with-a-gap",
        "a resume from an event the store let go of is refused, not served with a silent gap",
        "mcp_fast/fleet/event_store.py",
        "        if after + 1 < log.dropped_before:\n",
        "        if after + 1 < 0:\n",
        ("tests/test_streams_and_tasks.py::test_a_resume_from_an_evicted_event_is_refused",),
    ),
    Mutation(
        "redis-resume-of-another-sessions-stream",
        "with --redis, a Last-Event-ID of another session's stream is refused, not replayed from Redis",
        "mcp_fast/fleet/redis_fleet.py",
        '        if meta is None or meta.get("s") != session_id:\n',
        "        if meta is None:\n",
        ("tests/test_fleet_redis.py::test_a_stream_of_another_session_is_not_replayed",),
    ),
    Mutation(
        "redis-resume-from-trimmed-events-served-with-a-gap",
        "with --redis, a resume from events Redis trimmed is refused, not served with a silent gap",
        "mcp_fast/fleet/redis_fleet.py",
        "        if first and _seq(first[0][0]) > after + 1:\n",
        "        if False:\n",
        ("tests/test_fleet_redis.py::test_a_resume_from_events_redis_trimmed_or_expired_is_refused",),
    ),
    Mutation(
        "redis-rate-limit-per-process",
        "with --redis, a caller's rate limit is shared by every instance, not counted by each",
        "mcp_fast/app.py",
        "        production.rate_limits.share(shared)",
        "        pass",
        (
            "tests/test_fleet_redis.py::"
            "test_a_rate_limit_is_shared_by_the_fleet_and_falls_back_to_each_instance_while_redis_is_away",
        ),
    ),
    Mutation(
        "shared-rate-limit-lease-spent-for-nothing",
        "a request admitted from a leased token spends it: the fleet admits no more than the bucket gives",
        "mcp_fast/ops/ratelimit.py",
        "            if lease.tokens >= 1:\n"
        "                lease.tokens -= 1\n"
        "                if lease.tokens <= self._low",
        "            if lease.tokens >= 1:\n"
        "                lease.tokens -= 0\n"
        "                if lease.tokens <= self._low",
        ("tests/test_production_units.py::test_a_caller_is_limited_across_instances_within_the_lease_slack",),
    ),
    Mutation(
        "2026-missing-protocol-version-header-accepted",
        "a 2026-07-28 request without MCP-Protocol-Version is refused like a disagreeing one (-32020)",
        "mcp_fast/protocol/envelope.py",
        '    if version_header is None or version_header.decode("latin-1").strip() != version:\n',
        '    if version_header is not None and version_header.decode("latin-1").strip() != version:\n',
        ("tests/test_sessionless.py::test_a_missing_required_header_is_refused_like_a_disagreeing_one",),
    ),
    Mutation(
        "2026-missing-mcp-method-header-accepted",
        "a 2026-07-28 request without Mcp-Method is refused like a disagreeing one (-32020)",
        "mcp_fast/protocol/envelope.py",
        '    if method_header is None or method_header.decode("latin-1").strip() != method:\n',
        '    if method_header is not None and method_header.decode("latin-1").strip() != method:\n',
        ("tests/test_sessionless.py::test_a_missing_required_header_is_refused_like_a_disagreeing_one",),
    ),
    Mutation(
        "2026-missing-mcp-name-header-accepted",
        "a 2026-07-28 request without Mcp-Name is refused like a disagreeing one (-32020)",
        "mcp_fast/protocol/envelope.py",
        "    if name_header is None or decode_header_value(name_header.strip()) != body_name:\n",
        "    if name_header is not None and decode_header_value(name_header.strip()) != body_name:\n",
        ("tests/test_sessionless.py::test_a_missing_required_header_is_refused_like_a_disagreeing_one",),
    ),
    Mutation(
        "expired-request-state-accepted",
        "an expired input-required requestState is refused (-32602)",
        "mcp_fast/protocol/input_required.py",
        'state["exp"] < self.clock():',
        'state["exp"] < 0:',
        ("tests/test_sessionless.py::test_an_expired_request_state_is_refused",),
    ),
    Mutation(
        "write-timeout-never-fires",
        "a client that reads nothing is disconnected at --write-timeout (HTTP/1.1 and HTTP/2)",
        "mcp_fast/net/flow.py",
        "            self._write_watch = loop.call_later(self._write_timeout, self._give_up)\n",
        "            pass\n",
        (
            "tests/test_backpressure.py::test_a_client_that_never_reads_is_disconnected_at_the_write_timeout",
            "fuzz/test_h2_frames.py::test_client_that_reads_nothing_at_all_is_dropped",
        ),
    ),
)


# -- the table against the code ---------------------------------------------------------------


def problems(mutation: Mutation, root: Path = ROOT) -> list[str]:
    """What makes a row unusable: its snippet is not in its file exactly once, or a listed test
    does not exist. Empty when the row can be applied."""
    found: list[str] = []
    path = root / mutation.file
    if not path.is_file():
        return [f"{mutation.file} does not exist"]
    count = path.read_text(encoding="utf-8").count(mutation.original)
    if count != 1:
        found.append(f"its snippet occurs {count} times in {mutation.file} (must be exactly once)")
    if mutation.replacement == mutation.original:
        found.append("its replacement is the original")
    if not mutation.tests:
        found.append("it lists no test")
    for node in mutation.tests:
        test_file, _, function = node.partition("::")
        test_path = root / test_file
        function = function.split("::")[-1].split("[")[0]
        if not test_path.is_file():
            found.append(f"{test_file} does not exist")
        elif not re.search(rf"^\s*(async )?def {re.escape(function)}\(", test_path.read_text(), re.M):
            found.append(f"{node}: no such test")
    return found


def check(mutations: tuple[Mutation, ...]) -> int:
    stale = 0
    for mutation in mutations:
        found = problems(mutation)
        if found:
            stale += 1
            print(f"{mutation.name:50} stale: " + "; ".join(found))
        else:
            print(f"{mutation.name:50} ok")
    print(
        f"{len(mutations) - stale} of {len(mutations)} mutations apply"
        + (f", {stale} stale" if stale else "")
    )
    return 1 if stale else 0


# -- running them -----------------------------------------------------------------------------


def copy_checkout(destination: Path) -> None:
    """The files git tracks or would track (not ignored ones: no caches, no __pycache__), as the
    working tree has them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():
            continue  # deleted in the working tree
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
    """pytest's exit status for ``tests`` in ``copy`` (None: timed out) and its last lines."""
    # No bytecode: a mutation of the same length written within the second of the original
    # could otherwise be hidden by a cached .pyc (the servers the tests start inherit this).
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])
    return done.returncode, tail


def run(mutations: tuple[Mutation, ...], timeout: float) -> int:
    stale = [m for m in mutations if problems(m)]
    for mutation in stale:
        print(f"{mutation.name:50} stale: " + "; ".join(problems(mutation)))
    live = tuple(m for m in mutations if m not in stale)
    caught = not_caught = 0
    with tempfile.TemporaryDirectory(prefix="mcp-fast-mutations-") as scratch:
        copy = Path(scratch) / "checkout"
        copy_checkout(copy)
        every_test = tuple(dict.fromkeys(node for m in live for node in m.tests))
        if every_test:
            status, tail = run_tests(copy, every_test, timeout * len(live))
            if status != 0:
                print(f"the listed tests fail without any mutation (exit {status}):\n{tail}")
                return 1
        for mutation in live:
            path = copy / mutation.file
            original = path.read_text(encoding="utf-8")
            path.write_text(original.replace(mutation.original, mutation.replacement), encoding="utf-8")
            started = time.monotonic()
            try:
                status, tail = run_tests(copy, mutation.tests, timeout)
            finally:
                path.write_text(original, encoding="utf-8")
            seconds = time.monotonic() - started
            if status == 1:  # pytest: the tests ran and one failed
                verdict = "caught"
                caught += 1
            elif status == 0:
                verdict = "SURVIVED"
                not_caught += 1
            else:  # interrupted, usage error, nothing collected, timed out: not a catch
                verdict = f"ERROR (pytest exit {status}): {tail}"
                not_caught += 1
            print(f"{mutation.name:50} {verdict:8} {seconds:5.1f} s  {mutation.why}", flush=True)
    print(f"{caught} caught, {not_caught} not caught, {len(stale)} stale, of {len(mutations)} mutations")
    return 1 if not_caught or stale else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that every row still applies")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this mutation (repeatable)")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds the tests of one mutation may take (300)"
    )
    args = parser.parse_args()
    mutations = MUTATIONS
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTATIONS}
        if unknown:
            parser.error("no such mutation: " + ", ".join(sorted(unknown)))
        mutations = tuple(m for m in MUTATIONS if m.name in args.only)
    if args.check:
        return check(mutations)
    return run(mutations, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
