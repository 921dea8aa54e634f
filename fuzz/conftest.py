"""Hypothesis profiles for the fuzz suites.

``mcp-fast-ci`` (the default) is short, derandomized and database-less, so every CI run
explores exactly the same examples and a failure reproduces bit for bit.
``mcp-fast-long`` (``MCP_FAST_FUZZ=long``) runs many more random examples per property
and keeps failing examples in ``.hypothesis/`` so that the next run replays them first.
Example counts are set per test with ``fuzz._support.examples``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, Phase, settings

from fuzz._support import LONG

_COMMON: dict[str, Any] = {
    "deadline": None,
    "print_blob": True,
    # Generating structured HTTP requests and JSON trees makes some inputs large and some
    # generation slow; neither is a problem for a fuzz run.
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
}

# CI: no "explain" phase (it re-runs a failing example many times to annotate it).
settings.register_profile(
    "mcp-fast-ci",
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
    **_COMMON,
)
settings.register_profile("mcp-fast-long", derandomize=False, **_COMMON)
settings.load_profile("mcp-fast-long" if LONG else "mcp-fast-ci")

if not LONG:
    # Keep a failing CI run short too: stop shrinking a failure after 10 s (Hypothesis'
    # default is 300 s). An internal knob; if a Hypothesis release drops it, this line
    # only sets an unused attribute. The regression tests hold the minimal examples.
    from hypothesis.internal.conjecture import engine as _engine

    _engine.MAX_SHRINKING_SECONDS = 10
