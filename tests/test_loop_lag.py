"""The event loop's lag on /metrics: ``mcp_server_event_loop_lag_seconds`` (the largest delay of
the last 5-10 s; --workers: the largest of any worker) and ``mcp_server_event_loop_delay_seconds``
(the histogram of every 100 ms check, a stall counted once per check it held up)."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from pathlib import Path

import pytest
from conftest import start_server, stop_server
from prometheus_client.parser import text_string_to_metric_families

from mcp_fast.ops.metrics import DELAY, LAG, LAG_BUCKETS, LoopLag, Metrics, Snapshot, merge, render
from mcp_fast.server import MCPServer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_stall_counts_once_per_check_it_held_up_and_stays_in_the_gauge_for_a_window() -> None:
    clock = Clock()
    lag = LoopLag(interval=0.1, window=5.0, clock=clock)
    lag._slot_end = clock.now + 5.0
    for _ in range(10):
        clock.now += 0.1
        lag.record(0.0005, clock.now)
    assert lag.maximum() == 0.0005
    clock.now += 0.35
    lag.record(0.35, clock.now)  # one late firing that held up three more checks
    counts = lag.counts
    assert sum(counts[:-1]) == 10 + 4
    above = {LAG_BUCKETS[i] if i < len(LAG_BUCKETS) else "inf": c for i, c in enumerate(counts[:-1]) if c}
    assert above == {0.0005: 10, 0.05: 1, 0.25: 2, 0.5: 1}  # 0.05; 0.15 and 0.25; 0.35
    assert counts[-1] == pytest.approx(10 * 0.0005 + 0.35 + 0.25 + 0.15 + 0.05)
    assert lag.maximum() == 0.35
    clock.now += 5.0  # the next window: the stall is still the previous window's largest
    lag.record(0.001, clock.now)
    assert lag.maximum() == 0.35
    clock.now += 5.0  # and after that it is gone
    lag.record(0.001, clock.now)
    assert lag.maximum() == 0.001
    lag.record(-0.0004, clock.now)  # a timer fired a little early (1 ms resolution)
    assert counts[0] == 11


def test_workers_show_the_largest_lag_and_the_sum_of_the_histograms() -> None:
    metrics = Metrics(MCPServer("m").registry)
    lags = [LoopLag(), LoopLag()]
    lags[0].maxima = [0.002, 0.001]
    lags[1].maxima = [0.0, 0.3]
    lags[0].counts[0] = 7
    lags[1].counts[0], lags[1].counts[-1] = 5, 0.001
    snapshots = []
    for lag in lags:
        metrics.loop_lag(lag)  # each worker's table names its own lag
        snapshots.append(Snapshot.from_json(metrics.snapshot().to_json()))
    highest = frozenset({LAG})
    text = render(metrics._families, merge(snapshots, highest), metrics._histograms).decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families[LAG].type == "gauge"
    assert [sample.value for sample in families[LAG].samples] == [0.3]
    delay = families[DELAY]
    assert delay.type == "histogram"
    values = {(sample.name, sample.labels.get("le")): sample.value for sample in delay.samples}
    assert values[(f"{DELAY}_count", None)] == 12
    assert values[(f"{DELAY}_bucket", "0.0005")] == 12
    assert values[(f"{DELAY}_sum", None)] == pytest.approx(0.001)
    # Without the max rule a gauge is summed, as before.
    assert [row for row in merge(snapshots).gauges[LAG]] == [((), 0.302)]


def test_the_checks_stop_with_the_loop() -> None:
    async def main() -> tuple[float, bool]:
        lag = LoopLag(interval=0.01)
        lag.start()
        await asyncio.sleep(0.105)
        lag.stop()
        checks = sum(lag.counts[:-1])
        await asyncio.sleep(0.05)
        return checks, sum(lag.counts[:-1]) == checks

    checks, stopped = asyncio.run(main())
    assert 5 <= checks <= 11 and stopped


BLOCKER = '''
import time
from mcp_fast import MCPServer

server = MCPServer("blocker")


@server.tool(inline=True)
def block(seconds: float) -> str:
    """Hold the event loop (a handler that should not be inline)."""
    time.sleep(seconds)
    return "done"
'''


def scrape(port: int) -> dict[str, object]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    return {family.name: family for family in text_string_to_metric_families(text)}


def call_block(port: int, seconds: float) -> int:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
    }
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "block", "arguments": {"seconds": seconds}, "_meta": meta},
    }
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "block",
    }
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/mcp", body=json.dumps(body), headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_handler_that_blocks_the_loop_shows_on_metrics(tmp_path: Path, workers: str) -> None:
    (tmp_path / "blocker.py").write_text(BLOCKER)
    server = start_server(tmp_path, "--workers", workers, app="blocker:server", cwd=tmp_path)
    try:
        time.sleep(0.5)
        assert call_block(server.port, 0.35) == 200
        deadline = time.monotonic() + 5
        while True:  # --workers publish once a second
            families = scrape(server.port)
            gauge = families[LAG].samples[0].value  # type: ignore[attr-defined]
            if gauge >= 0.25 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert 0.25 <= gauge < 1.0, gauge  # the 0.35 s began up to 0.1 s before a check was due
        counts = {
            sample.labels["le"]: sample.value
            for sample in families[DELAY].samples  # type: ignore[attr-defined]
            if sample.name.endswith("_bucket")
        }
        held_up = counts["+Inf"] - counts["0.1"]  # 0.35 and 0.25 (and maybe 0.15)
        assert held_up >= 2, counts
    finally:
        stop_server(server)
    assert server.process.returncode == 0
    assert "Traceback" not in server.log(), server.log()
