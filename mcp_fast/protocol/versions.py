"""Protocol-version policy: every difference between MCP versions, in one table.

Code elsewhere never compares version strings; it asks the policy of the
version in force for a flag. A new version is a new row here.
Spec: modelcontextprotocol/modelcontextprotocol, docs/specification/<version>/.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

# Methods of each era (2026-07-28: basic/index.mdx and the changelog's removals).
HANDSHAKE_METHODS: Final = frozenset(
    {
        "initialize",
        "ping",
        "logging/setLevel",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
    }
)
TASKS_V1_METHODS: Final = frozenset({"tasks/get", "tasks/result", "tasks/list", "tasks/cancel"})
SESSIONLESS_METHODS: Final = frozenset(
    {
        "server/discover",
        "subscriptions/listen",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        # The io.modelcontextprotocol/tasks extension (no tasks/result, no tasks/list).
        "tasks/get",
        "tasks/update",
        "tasks/cancel",
    }
)
# 2026-07-28 basic/transports/streamable-http.mdx: HTTP status of a JSON-RPC error
# answered as application/json (unknown method: 404; envelope and header errors: 400).
SESSIONLESS_ERROR_STATUS: Final[Mapping[int, int]] = {
    -32700: 400,
    -32600: 400,
    -32602: 400,
    -32020: 400,
    -32021: 400,
    -32022: 400,
    -32601: 404,
}


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
    # initialize + sessions + GET/DELETE (through 2025-11-25); 2026-07-28 has none of them.
    handshake: bool = True
    # 2026-07-28: version and client capabilities in every request's _meta (-32602 without).
    request_envelope: bool = False
    # 2026-07-28: Mcp-Method / Mcp-Name / MCP-Protocol-Version must repeat the body (-32020).
    routing_headers: bool = False
    # HTTP status per JSON-RPC error code for a JSON answer (empty: 200 for every error).
    error_status: Mapping[int, int] = field(default_factory=dict)
    # Every result says `resultType` (2026-07-28).
    result_type: bool = False
    # ttlMs/cacheScope on discover, list and read results (2026-07-28).
    cache_hints: bool = False
    # _meta serverInfo on every result (2026-07-28).
    server_info_meta: bool = False
    # resources/read of an unknown URI: -32002 until 2025-11-25, -32602 with data.uri after.
    resource_not_found: int = -32002
    # A handler needs a capability the client lacks: -32600 before 2026, -32021 with data after.
    missing_capability: int = -32600
    # notifications/message only for requests that ask with _meta logLevel (2026-07-28).
    per_request_log_level: bool = False
    # elicitation/create has a "mode" (form/url) from 2025-11-25; URL mode carried an
    # elicitationId only in 2025-11-25.
    elicitation_modes: bool = False
    url_elicitation_ids: bool = False
    # Tasks as the io.modelcontextprotocol/tasks extension: server-directed (2026-07-28).
    tasks_extension: bool = False
    methods: frozenset[str] = HANDSHAKE_METHODS


_POLICIES: Final[tuple[VersionPolicy, ...]] = (
    VersionPolicy(
        "2024-11-05",
        streamable_http=False,
        batches=False,
        protocol_header=False,
        structured_output=False,
        titles=False,
        icons=False,
        input_errors_as_tool_errors=False,
        sse_priming=False,
        tasks=False,
    ),
    VersionPolicy(
        "2025-03-26",
        streamable_http=True,
        batches=True,
        protocol_header=False,
        structured_output=False,
        titles=False,
        icons=False,
        input_errors_as_tool_errors=False,
        sse_priming=False,
        tasks=False,
    ),
    VersionPolicy(
        "2025-06-18",
        streamable_http=True,
        batches=False,
        protocol_header=True,
        structured_output=True,
        titles=True,
        icons=False,
        input_errors_as_tool_errors=False,
        sse_priming=False,
        tasks=False,
    ),
    VersionPolicy(
        "2025-11-25",
        streamable_http=True,
        batches=False,
        protocol_header=True,
        structured_output=True,
        titles=True,
        icons=True,
        input_errors_as_tool_errors=True,
        sse_priming=True,
        tasks=True,
        elicitation_modes=True,
        url_elicitation_ids=True,
        methods=HANDSHAKE_METHODS | TASKS_V1_METHODS,
    ),
    VersionPolicy(
        "2026-07-28",
        streamable_http=True,
        batches=False,
        protocol_header=True,
        structured_output=True,
        titles=True,
        icons=True,
        input_errors_as_tool_errors=True,
        sse_priming=False,
        tasks=False,
        handshake=False,
        request_envelope=True,
        routing_headers=True,
        error_status=SESSIONLESS_ERROR_STATUS,
        result_type=True,
        cache_hints=True,
        server_info_meta=True,
        resource_not_found=-32602,
        missing_capability=-32021,
        per_request_log_level=True,
        elicitation_modes=True,
        tasks_extension=True,
        methods=SESSIONLESS_METHODS,
    ),
)

POLICIES: Final[dict[str, VersionPolicy]] = {p.version: p for p in _POLICIES}
SUPPORTED_VERSIONS: Final[tuple[str, ...]] = tuple(p.version for p in _POLICIES)
# Newest first: server/discover's supportedVersions and -32022's data.supported.
ADVERTISED_VERSIONS: Final[tuple[str, ...]] = tuple(reversed(SUPPORTED_VERSIONS))
HANDSHAKE_VERSIONS: Final[tuple[str, ...]] = tuple(p.version for p in _POLICIES if p.handshake)
LATEST_VERSION: Final[str] = HANDSHAKE_VERSIONS[-1]
# Streamable HTTP, 2025-06-18 "Protocol Version Header": a request without the
# header is assumed to speak 2025-03-26 (for backwards compatibility).
VERSION_WHEN_HEADER_ABSENT: Final[str] = "2025-03-26"


def negotiate(requested: object) -> str:
    """Answer an initialize request's protocolVersion (lifecycle, "Version Negotiation").

    The server answers with the requested version when it supports it over a
    handshake, otherwise with the latest such version; the client then decides
    whether to go on. (2026-07-28 has no initialize, so it is never the answer.)
    """
    if isinstance(requested, str) and requested in HANDSHAKE_VERSIONS:
        return requested
    return LATEST_VERSION
