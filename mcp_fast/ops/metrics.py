"""``GET /metrics``: Prometheus text format 0.0.4 (``--metrics``, on by default; ``--metrics-path``).

What is counted, and how it costs the request path nothing noticeable:
- requests, by MCP method, tool and outcome, and their duration: ``RequestMetrics`` is the
  pipeline's ``RequestObserver`` (two plain calls per request, no coroutine). The histogram
  ``mcp_server_operation_duration_seconds`` follows the OpenTelemetry MCP semantic conventions
  (``mcp.server.operation.duration``: attributes ``mcp.method.name``, ``gen_ai.tool.name``,
  ``error.type``, here as Prometheus labels ``mcp_method_name``, ``gen_ai_tool_name``,
  ``error_type``; ``error.type`` is the JSON-RPC error code, ``tool_error`` for an ``isError``
  result, ``cancelled`` when no answer was sent). Its buckets are the convention's, with finer
  ones below 10 ms added (this server answers in well under a millisecond). Label values come
  from bounded sets: methods the protocol defines (else ``other``), tools that are registered
  (else ``other``). ``mcp_server_requests_total`` (by outcome) is derived from the same table
  at scrape time.
- everything else (open connections and streams, sessions created, result cache hits, misses
  and evictions, rate-limit refusals, authorization failures, idempotent replays, dropped log
  lines) is read at scrape time from counters the components keep anyway: plain integers.
- the event loop's lag (``LoopLag``): a timer that fires every 100 ms notes how late it fired.
  ``mcp_server_event_loop_lag_seconds`` is the largest delay of the last 5 to 10 seconds (a
  gauge; with ``--workers``, the largest of any worker), ``mcp_server_event_loop_delay_seconds``
  the histogram of every check since start (summed over workers: its quantiles are the loop's).
  Ten callbacks a second: nothing a request notices.

Why our own table and not ``prometheus_client``: its ``Histogram.labels(...).observe()`` and
``Counter.labels(...).inc()`` take a lock and resolve labels on every call (2.3 µs and 1.8 µs
measured here: a quarter of a request's 17 µs), and its multiprocess mode writes every update
to an mmap file. Here an update is a dictionary lookup and two list increments (about 0.3 µs
with the two clock reads), and ``--workers N`` aggregate at scrape time: each worker
publishes its table to a shared directory once a second, and the scraped worker sums its own
live table with the others' (``MetricsShare``). The text format is small and specified; the
tests parse our output with ``prometheus_client``'s parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from mcp_fast.call import Call
from mcp_fast.protocol.versions import POLICIES
from mcp_fast.registry import Registry
from mcp_fast.routes import HttpRequest, Response

logger = logging.getLogger("mcp_fast.metrics")

# OpenTelemetry MCP semantic conventions' advice for mcp.server.operation.duration
# (0.01 ... 300 s), with finer buckets below 10 ms in front.
BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
KNOWN_METHODS: Final = frozenset(method for policy in POLICIES.values() for method in policy.methods)
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
DURATION: Final = "mcp_server_operation_duration_seconds"
REQUESTS: Final = "mcp_server_requests_total"
_LABELS: Final = ("mcp_method_name", "gen_ai_tool_name", "error_type")
_REQUEST_LABELS: Final = ("mcp_method_name", "gen_ai_tool_name", "outcome")
PUBLISH_SECONDS: Final = 1.0
_FIRST_BUCKET: Final = BUCKETS[0]
_perf_counter: Final = time.perf_counter
# The ``le`` label of each bucket, +Inf last (the row's extra count).
_BOUNDS: Final = (*(f'le="{bound}"' for bound in BUCKETS), 'le="+Inf"')

# LoopLag: how often the loop is checked, the gauge's window, and the histogram's buckets
# (from below a millisecond, which a healthy loop shows, up to the multi-second stall).
LAG_INTERVAL: Final = 0.1
LAG_WINDOW: Final = 5.0
LAG_BUCKETS: Final = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
LAG: Final = "mcp_server_event_loop_lag_seconds"
DELAY: Final = "mcp_server_event_loop_delay_seconds"

Labels = tuple[str, ...]


class RequestMetrics:
    """The ``RequestObserver``: a histogram row per (method, tool, error type).

    ``end`` runs once per request, so its common case (a method or tool answered without error)
    is one dictionary lookup by the method or tool name and two list increments; the full
    label tuple is built only for errors and on a name's first appearance.
    """

    __slots__ = ("_ok_methods", "_ok_tools", "_tools", "rows")

    needs_begin = False

    def __init__(self, registry: Registry) -> None:
        self._tools = registry.tools
        # [count per bucket ..., count above the last bucket (+Inf), sum of seconds]
        self.rows: dict[Labels, list[float]] = {}
        # The rows of successful requests by method name, and of tools/call by tool name.
        self._ok_methods: dict[str, list[float]] = {}
        self._ok_tools: dict[str, list[float]] = {}

    def begin(self, call: Call) -> None:
        return None  # the pipeline stamps call.started

    def end(self, call: Call, answered: bool) -> None:
        elapsed = _perf_counter() - call.started
        row: list[float] | None = None
        if answered and call.error_code is None and not call.tool_error:
            method = call.method
            if method == "tools/call":
                params = call.params
                row = self._ok_tools.get(params.get("name") if params is not None else None)  # type: ignore[arg-type]
            else:
                row = self._ok_methods.get(method)
        if row is None:
            row = self._row(call, answered)
        # Most requests take well under 100 µs here: the first bucket, without a search.
        row[0 if elapsed <= _FIRST_BUCKET else bisect_left(BUCKETS, elapsed)] += 1
        row[-1] += elapsed

    def _row(self, call: Call, answered: bool) -> list[float]:
        """The row of this request's labels, made on first use (bounded label values)."""
        method = call.method
        tool = ""
        if method == "tools/call":
            name = call.tool_name
            tool = name if name is not None and name in self._tools else "other"
        elif method not in KNOWN_METHODS:
            method = "other"
        if not answered:
            error = "cancelled"
        elif call.error_code is not None:
            error = str(call.error_code)
        elif call.tool_error:
            error = "tool_error"
        else:
            error = ""
        key = (method, tool, error)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = [0.0] * (len(BUCKETS) + 2)
        if not error and method != "other" and tool != "other":
            if method == "tools/call":
                self._ok_tools[tool] = row
            else:
                self._ok_methods[method] = row
        return row


def outcome(error_type: str) -> str:
    if not error_type:
        return "ok"
    if error_type in ("tool_error", "cancelled"):
        return error_type
    return "error"


class LoopLag:
    """The event loop's lag: a timer that asks to fire every ``interval`` seconds notes how much
    later than asked it fired (a loop busy with one long callback, or starved of CPU, fires it
    late). ``counts`` is the histogram over ``LAG_BUCKETS`` (+Inf, then the sum of seconds);
    ``maximum()`` the largest delay of the current and the previous ``window``.

    A stall of several intervals is one late firing; it is counted as the checks it held up
    would have seen it (the delay, the delay less one interval, ...), so a long stall weighs in
    the quantiles as much as the time it took (no coordinated omission)."""

    __slots__ = ("_clock", "_due", "_handle", "_slot_end", "counts", "interval", "maxima", "window")

    def __init__(
        self,
        interval: float = LAG_INTERVAL,
        window: float = LAG_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.window = window
        self._clock = clock
        self.counts = [0.0] * (len(LAG_BUCKETS) + 2)
        self.maxima = [0.0, 0.0]  # the previous window's largest delay, the current one's
        self._slot_end = 0.0
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start checking (on the running loop)."""
        now = self._clock()
        self._slot_end = now + self.window
        self._schedule(now)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None

    def _schedule(self, now: float) -> None:
        self._due = now + self.interval
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._check)

    def _check(self) -> None:
        now = self._clock()
        self.record(now - self._due, now)
        self._schedule(now)

    def record(self, delay: float, now: float) -> None:
        """One check that fired ``delay`` seconds late, at ``now``."""
        delay = max(delay, 0.0)  # the loop's timer resolution (1 ms) may fire it a bit early
        if now >= self._slot_end:
            # A new window; one with no check at all (a stall longer than a window) leaves the
            # previous one's largest in place, which this check's own delay exceeds.
            self.maxima = [self.maxima[1] if now < self._slot_end + self.window else 0.0, 0.0]
            self._slot_end = now + self.window
        if delay > self.maxima[1]:
            self.maxima[1] = delay
        counts = self.counts
        while True:
            counts[bisect_left(LAG_BUCKETS, delay)] += 1
            counts[-1] += delay
            delay -= self.interval
            if delay <= 0.0:
                return

    def maximum(self) -> float:
        return max(self.maxima)


@dataclass
class _Family:
    kind: str  # counter or gauge
    help: str
    labels: tuple[str, ...]
    read: Callable[[], Mapping[Labels, float]]
    # How --workers add up: "sum" (counts, open connections), or "max" (the loop's lag).
    aggregate: str = "sum"


@dataclass
class _Histogram:
    """A histogram without labels besides the request table (``LoopLag``'s)."""

    help: str
    buckets: tuple[float, ...]
    read: Callable[[], list[float]]  # counts per bucket, +Inf, then the sum


@dataclass
class Snapshot:
    """One process's numbers, JSON-able (what workers publish)."""

    counters: dict[str, list[tuple[Labels, float]]] = field(default_factory=dict)
    gauges: dict[str, list[tuple[Labels, float]]] = field(default_factory=dict)
    histogram: list[tuple[Labels, list[float]]] = field(default_factory=list)
    histograms: dict[str, list[float]] = field(default_factory=dict)  # the unlabelled ones

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "counters": self.counters,
                "gauges": self.gauges,
                "histogram": self.histogram,
                "histograms": self.histograms,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Snapshot:
        raw = json.loads(data)

        def series(part: Any) -> dict[str, list[tuple[Labels, float]]]:
            return {
                name: [(tuple(labels), float(value)) for labels, value in rows] for name, rows in part.items()
            }

        return cls(
            series(raw["counters"]),
            series(raw["gauges"]),
            [(tuple(labels), [float(v) for v in row]) for labels, row in raw["histogram"]],
            {name: [float(v) for v in row] for name, row in raw.get("histograms", {}).items()},
        )


class Metrics:
    """Every metric of one process, and the text a scrape gets."""

    def __init__(self, registry: Registry) -> None:
        self.requests = RequestMetrics(registry)
        self._families: dict[str, _Family] = {}
        self._histograms: dict[str, _Histogram] = {}
        self.share: MetricsShare | None = None

    def counter(
        self,
        name: str,
        help: str,
        read: Callable[[], Mapping[Labels, float] | float],
        labels: Iterable[str] = (),
    ) -> None:
        """A counter read at scrape time: a number, or numbers by label values."""
        self._add(name, "counter", help, tuple(labels), read)

    def gauge(
        self,
        name: str,
        help: str,
        read: Callable[[], Mapping[Labels, float] | float],
        labels: Iterable[str] = (),
        aggregate: str = "sum",
    ) -> None:
        """A gauge read at scrape time; ``aggregate="max"``: --workers show the largest value of
        any worker instead of the sum."""
        self._add(name, "gauge", help, tuple(labels), read, aggregate)

    def histogram(
        self, name: str, help: str, buckets: tuple[float, ...], read: Callable[[], list[float]]
    ) -> None:
        """A histogram without labels, read at scrape time: counts per bucket, +Inf, the sum."""
        self._histograms[name] = _Histogram(help, buckets, read)

    def loop_lag(self, lag: LoopLag) -> None:
        """The event loop's lag (``LoopLag``): its gauge and its histogram."""
        self.gauge(
            LAG,
            "The largest delay of the event loop over the last 5 to 10 seconds: how much later than "
            "asked a timer checking every 100 ms fired (--workers: the largest of any worker).",
            lag.maximum,
            aggregate="max",
        )
        self.histogram(
            DELAY,
            "How late each 100 ms check of the event loop fired, since start (a stall counts once "
            "per check it held up).",
            LAG_BUCKETS,
            lambda: list(lag.counts),
        )

    def _add(
        self,
        name: str,
        kind: str,
        help: str,
        labels: tuple[str, ...],
        read: Callable[[], Mapping[Labels, float] | float],
        aggregate: str = "sum",
    ) -> None:
        def rows() -> Mapping[Labels, float]:
            value = read()
            return value if isinstance(value, Mapping) else {(): float(value)}

        self._families[name] = _Family(kind, help, labels, rows, aggregate)

    def snapshot(self) -> Snapshot:
        snapshot = Snapshot()
        for name, family in self._families.items():
            try:
                rows = list(family.read().items())
            except Exception:  # a component's reader: never fail the scrape for it
                logger.exception("reading the metric %s failed", name)
                continue
            (snapshot.counters if family.kind == "counter" else snapshot.gauges)[name] = rows
        snapshot.histogram = [(labels, list(row)) for labels, row in self.requests.rows.items()]
        snapshot.histograms = {name: list(histogram.read()) for name, histogram in self._histograms.items()}
        return snapshot

    def render(self) -> bytes:
        """The exposition: this process's numbers, plus every other worker's (``--workers``)."""
        snapshots = [self.snapshot()]
        if self.share is not None:
            snapshots.extend(self.share.others())
        highest = frozenset(name for name, family in self._families.items() if family.aggregate == "max")
        return render(self._families, merge(snapshots, highest), self._histograms)

    def handle(self, request: HttpRequest) -> Response:
        return Response(200, self.render(), CONTENT_TYPE)


def merge(snapshots: list[Snapshot], highest: frozenset[str] = frozenset()) -> Snapshot:
    """Counters, gauges and histogram rows summed over processes; the gauges named in
    ``highest`` take the largest value instead."""
    total = Snapshot()
    for part, into in (("counters", total.counters), ("gauges", total.gauges)):
        for snapshot in snapshots:
            for name, rows in getattr(snapshot, part).items():
                summed = dict(into.get(name, []))
                for labels, value in rows:
                    before = summed.get(labels)
                    if before is None:
                        summed[labels] = value
                    elif name in highest:
                        summed[labels] = max(before, value)
                    else:
                        summed[labels] = before + value
                into[name] = list(summed.items())
    for snapshot in snapshots:
        for name, row in snapshot.histograms.items():
            kept = total.histograms.get(name)
            if kept is None or len(kept) != len(row):
                total.histograms[name] = list(row)
            else:
                for index, value in enumerate(row):
                    kept[index] += value
    histogram: dict[Labels, list[float]] = {}
    for snapshot in snapshots:
        for labels, row in snapshot.histogram:
            known = histogram.get(labels)
            if known is None:
                histogram[labels] = list(row)
            else:
                for index, value in enumerate(row):
                    known[index] += value
    total.histogram = list(histogram.items())
    return total


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Iterable[str], values: Iterable[str], extra: str = "") -> str:
    parts = [f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def render(
    families: Mapping[str, _Family],
    snapshot: Snapshot,
    histograms: Mapping[str, _Histogram] | None = None,
) -> bytes:
    lines: list[str] = []
    # The request histogram, and the request counter derived from it.
    rows = sorted(snapshot.histogram)
    lines.append(
        f"# HELP {DURATION} Duration of MCP requests as the server handled them "
        "(OpenTelemetry mcp.server.operation.duration)."
    )
    lines.append(f"# TYPE {DURATION} histogram")
    requests: dict[Labels, float] = {}
    for labels, row in rows:
        cumulative = 0.0
        for bound, count in zip(_BOUNDS, row, strict=False):
            cumulative += count
            lines.append(f"{DURATION}_bucket{_labels(_LABELS, labels, bound)} {_number(cumulative)}")
        lines.append(f"{DURATION}_sum{_labels(_LABELS, labels)} {row[-1]!r}")
        lines.append(f"{DURATION}_count{_labels(_LABELS, labels)} {_number(cumulative)}")
        key = (labels[0], labels[1], outcome(labels[2]))
        requests[key] = requests.get(key, 0.0) + cumulative
    lines.append(
        f"# HELP {REQUESTS} MCP requests answered, by method, tool and outcome "
        "(ok, error, tool_error, cancelled)."
    )
    lines.append(f"# TYPE {REQUESTS} counter")
    for labels, count in sorted(requests.items()):
        lines.append(f"{REQUESTS}{_labels(_REQUEST_LABELS, labels)} {_number(count)}")
    for kind, part in (("counter", snapshot.counters), ("gauge", snapshot.gauges)):
        for name, series in sorted(part.items()):
            family = families.get(name)
            if family is None:
                continue
            lines.append(f"# HELP {name} {family.help}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in sorted(series):
                lines.append(f"{name}{_labels(family.labels, labels)} {_number(value)}")
    for name, row in sorted(snapshot.histograms.items()):
        histogram = (histograms or {}).get(name)
        if histogram is None or len(row) != len(histogram.buckets) + 2:
            continue
        lines.append(f"# HELP {name} {histogram.help}")
        lines.append(f"# TYPE {name} histogram")
        cumulative = 0.0
        bounds = (*(f'le="{bound}"' for bound in histogram.buckets), 'le="+Inf"')
        for bound, count in zip(bounds, row, strict=False):
            cumulative += count
            lines.append(f"{name}_bucket{{{bound}}} {_number(cumulative)}")
        lines.append(f"{name}_sum {row[-1]!r}")
        lines.append(f"{name}_count {_number(cumulative)}")
    return ("\n".join(lines) + "\n").encode()


class MetricsShare:
    """``--workers N``: each worker publishes its snapshot to ``directory/<pid>.json`` every second;
    a scrape adds the other workers' latest ones (at most a second old). A worker that died
    keeps its counters in the sum (they never go down); its gauges are dropped."""

    def __init__(self, directory: Path, metrics: Metrics) -> None:
        self.directory = directory
        self.metrics = metrics
        self.pid = os.getpid()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.publish()

    def publish(self) -> None:
        path = self.directory / f"{self.pid}.json"
        temporary = self.directory / f".{self.pid}.tmp"
        try:
            temporary.write_bytes(self.metrics.snapshot().to_json())
            temporary.replace(path)
        except OSError as exc:
            logger.warning(
                "cannot publish this worker's metrics to %s: %s", self.directory, exc.strerror or exc
            )
        with contextlib.suppress(RuntimeError):  # no running loop: a last publish at exit
            self._handle = asyncio.get_running_loop().call_later(PUBLISH_SECONDS, self.publish)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self.publish_final()

    def publish_final(self) -> None:
        path = self.directory / f"{self.pid}.json"
        with contextlib.suppress(OSError):
            path.write_bytes(self.metrics.snapshot().to_json())

    def others(self) -> list[Snapshot]:
        found: list[Snapshot] = []
        try:
            entries = list(self.directory.glob("*.json"))
        except OSError:
            return found
        for path in entries:
            try:
                pid = int(path.stem)
            except ValueError:
                continue
            if pid == self.pid:
                continue
            try:
                snapshot = Snapshot.from_json(path.read_bytes())
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced, or not ours
            if not _alive(pid):
                snapshot.gauges = {}
            found.append(snapshot)
        return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
