"""Shared helpers of the fuzz suites: profile scaling and the test-suite helpers.

``tests/`` is not a package, so its helper modules (``conftest.py`` with
``start_server``/``stop_server``, ``httpclient.py``) are loaded here by file path
under private names: importing ``conftest`` by name from ``fuzz/`` would pick the
wrong module (or replace the one ``tests/`` uses).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent

_MODE = os.environ.get("MCP_FAST_FUZZ", "ci").strip().lower()
if _MODE not in ("", "ci", "long"):
    raise RuntimeError(f"MCP_FAST_FUZZ must be 'ci' or 'long', not {_MODE!r}")
LONG = _MODE == "long"
# How many times more examples the long profile runs than CI (override: MCP_FAST_FUZZ_SCALE).
LONG_SCALE = int(os.environ.get("MCP_FAST_FUZZ_SCALE", "25"))


def examples(ci: int) -> int:
    """Examples of one property: ``ci`` in the CI profile, ``ci * LONG_SCALE`` in the long one."""
    return ci * LONG_SCALE if LONG else ci


def _load(name: str, path: Path) -> ModuleType:
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_tests_conftest() -> ModuleType:
    """``tests/conftest.py``: ``start_server``, ``stop_server``, ``RunningServer``."""
    return _load("_mcp_fast_tests_conftest", ROOT / "tests" / "conftest.py")


def load_tests_h2client() -> ModuleType:
    """``tests/h2client.py``: ``H2Socket``, ``H2Peer``, ``MCP_HEADERS``."""
    return _load("_mcp_fast_tests_h2client", ROOT / "tests" / "h2client.py")


def load_tests_httpclient() -> ModuleType:
    """``tests/httpclient.py``: ``RawClient``, ``client_request_bytes``, ``rpc_bytes``."""
    return _load("_mcp_fast_tests_httpclient", ROOT / "tests" / "httpclient.py")


def load_tests_tlscerts() -> ModuleType:
    """``tests/tlscerts.py``: ``CertAuthority`` (throw-away certificates)."""
    return _load("_mcp_fast_tests_tlscerts", ROOT / "tests" / "tlscerts.py")
