"""The soak's summary table and chart (bench/soak.py): a hand-written SVG, no plotting
dependency, four panels over time: throughput, p99 latency, the server's RSS and the event
loop's lag, with the warm-up and each fault's events marked."""

from __future__ import annotations

import html
import math
from typing import Any


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 1000:.1f}" if value < 1 else f"{value * 1000:,.0f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def operations_table(summary: dict[str, Any]) -> str:
    rows = []
    for kind, figures in summary["operations"].items():
        rows.append(
            [
                kind,
                f"{figures['done']:,}",
                f"{figures['errors']:,}",
                f"{figures['lost']:,}",
                ms(figures["p50"]),
                ms(figures["p99"]),
                ms(figures["max"]),
            ]
        )
    return table(rows, ["operation", "done", "errors", "lost", "p50 ms", "p99 ms", "max ms"])


def _polyline(points: list[tuple[float, float]], color: str, width: float = 1.5) -> str:
    if not points:
        return ""
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return f'<polyline fill="none" stroke="{color}" stroke-width="{width}" points="{path}"/>'


def _nice_top(value: float) -> float:
    if value <= 0:
        return 1.0
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exponent:
            return step * exponent
    return 10 * exponent


def render_svg(summary: dict[str, Any]) -> str:
    """Throughput, p99, RSS and lag over the run's seconds."""
    seconds = summary["seconds"]
    series = summary["series"]
    samples = summary["samples"]
    width, left, right = 900, 70, 20
    panel, gap, top = 150, 40, 60
    plot_width = width - left - right
    panels = [
        ("throughput (per second)", "ops/s", [("operations done", "#1f77b4", [(p["t"], p["done"]) for p in series]),
                                              ("requests answered", "#aec7e8", [(p["t"], p["answered"]) for p in series])]),
        ("p99 latency of short operations (per second)", "ms", [("p99", "#d62728", [(p["t"], p["p99"] * 1000) for p in series if p["p99"] is not None])]),
        ("server RSS", "MiB", [("RSS", "#2ca02c", [(s["t"], s["rss_mib"]) for s in samples])]),
        ("event loop lag (largest of the last 5-10 s)", "ms", [("lag", "#9467bd", [(s["t"], s["lag"] * 1000) for s in samples if s["lag"] is not None])]),
    ]  # fmt: skip
    height = top + len(panels) * (panel + gap) + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-size="14" font-weight="bold">{html.escape(summary["title"])}</text>',
        f'<text x="{left}" y="38">{html.escape(summary["subtitle"])}</text>',
    ]
    span = max(seconds, 1.0)

    def x_of(t: float) -> float:
        return left + plot_width * min(max(t, 0.0), span) / span

    for index, (title, unit, lines) in enumerate(panels):
        y0 = top + index * (panel + gap)
        values = [value for _, _, points in lines for _, value in points]
        top_value = _nice_top(max(values) * 1.1 if values else 1.0)

        def y_of(value: float, y0: float = y0, top_value: float = top_value) -> float:
            return y0 + panel - panel * min(value, top_value) / top_value

        out.append(
            f'<rect x="{left}" y="{y0}" width="{plot_width}" height="{panel}" fill="none" stroke="#ccc"/>'
        )
        out.append(f'<text x="{left}" y="{y0 - 6}" font-weight="bold">{html.escape(title)}</text>')
        for fraction in (0, 0.5, 1):
            value = top_value * fraction
            y = y_of(value)
            out.append(
                f'<line x1="{left - 4}" x2="{left + plot_width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            )
            label = f"{value:,.0f}" if top_value >= 10 else f"{value:g}"
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
        out.append(
            f'<text x="12" y="{y0 + panel / 2}" transform="rotate(-90 12 {y0 + panel / 2})">{unit}</text>'
        )
        for marker in summary["markers"]:
            x = x_of(marker["t"])
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0}" y2="{y0 + panel}" stroke="{marker["color"]}" stroke-dasharray="4 3"/>'
            )
            if index == 0:
                out.append(
                    f'<text x="{x + 3:.1f}" y="{y0 + 12}" fill="{marker["color"]}">{html.escape(marker["label"])}</text>'
                )
        legend_x = left + plot_width - 10
        for name, color, points in lines:
            out.append(_polyline([(x_of(t), y_of(value)) for t, value in points], color))
            out.append(
                f'<text x="{legend_x}" y="{y0 + 14}" text-anchor="end" fill="{color}">{html.escape(name)}</text>'
            )
            legend_x -= 8 * len(name) + 20
    axis_y = top + len(panels) * (panel + gap) - gap + 14
    for tick in range(0, int(span) + 1, max(1, int(_nice_top(span / 10)))):
        x = x_of(tick)
        out.append(f'<text x="{x:.1f}" y="{axis_y}" text-anchor="middle">{tick} s</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
