"""``python -m mcp_fast [module:attr] [--host ...] [--port ...]`` (also the ``mcp-fast`` script)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mcp_fast.app import run
from mcp_fast.config import load_config


def main(argv: Sequence[str] | None = None) -> int:
    return run(load_config(argv))


if __name__ == "__main__":
    sys.exit(main())
