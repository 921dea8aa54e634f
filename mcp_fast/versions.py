"""Protocol-version policy: every difference between MCP versions, in one table.

Code elsewhere never compares version strings; it asks the policy of the
version in force for a flag. A new version is a new row here.
Spec: modelcontextprotocol/modelcontextprotocol, docs/specification/<version>/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    version: str
    # Streamable HTTP exists (2025-03-26 on); 2024-11-05 only knows HTTP+SSE and stdio.
    streamable_http: bool
    # JSON-RPC batches (arrays) in one POST: only 2025-03-26 (removed in 2025-06-18).
    batches: bool
    # The client sends MCP-Protocol-Version on every request after initialize (2025-06-18 on).
    protocol_header: bool
    # Tools may declare outputSchema and return structuredContent (2025-06-18 on).
    structured_output: bool
    # Tool/prompt/resource `title` fields (2025-06-18 on); icons (2025-11-25 on).
    titles: bool
    icons: bool
    # Invalid tool arguments are reported as an isError result, not a JSON-RPC error (2025-11-25).
    input_errors_as_tool_errors: bool
    # SSE streams start with a priming event (id, empty data) and carry `retry` (2025-11-25).
    sse_priming: bool
    # Task-augmented tools/call, tasks/get|result|list|cancel (2025-11-25, experimental).
    tasks: bool


_POLICIES: Final[tuple[VersionPolicy, ...]] = (
    VersionPolicy("2024-11-05", False, False, False, False, False, False, False, False, False),
    VersionPolicy("2025-03-26", True, True, False, False, False, False, False, False, False),
    VersionPolicy("2025-06-18", True, False, True, True, True, False, False, False, False),
    VersionPolicy("2025-11-25", True, False, True, True, True, True, True, True, True),
)

POLICIES: Final[dict[str, VersionPolicy]] = {p.version: p for p in _POLICIES}
SUPPORTED_VERSIONS: Final[tuple[str, ...]] = tuple(p.version for p in _POLICIES)
LATEST_VERSION: Final[str] = _POLICIES[-1].version
# Streamable HTTP, 2025-06-18 "Protocol Version Header": a request without the
# header is assumed to speak 2025-03-26 (for backwards compatibility).
VERSION_WHEN_HEADER_ABSENT: Final[str] = "2025-03-26"


def negotiate(requested: object) -> str:
    """Answer an initialize request's protocolVersion (lifecycle, "Version Negotiation").

    The server answers with the requested version when it supports it, otherwise
    with the latest version it supports; the client then decides whether to go on.
    """
    if isinstance(requested, str) and requested in POLICIES:
        return requested
    return LATEST_VERSION
