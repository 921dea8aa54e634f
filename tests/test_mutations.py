"""scripts/mutations.py: its table of deliberate bugs still fits the code.

The full run (each bug applied to a copy, its tests run there) takes about half a minute and is
run by hand (README "Contributing"); here only ``--check``: every snippet is still in its file
exactly once and every listed test exists, so the table cannot rot silently.
"""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_every_mutation_still_applies() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "mutations.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stale" not in done.stdout, done.stdout
