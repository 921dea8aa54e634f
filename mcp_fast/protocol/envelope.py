"""The per-request envelope of MCP 2026-07-28 (sans-I/O: no asyncio, no sockets).

In 2026-07-28 there is no initialize handshake: every request carries its
protocol version, the client's capabilities and (optionally) its info in
``params._meta``, and on HTTP repeats version, method and name in headers.
The checks run in the order the spec and the conformance suite fix (first
failure wins): missing ``_meta`` fields (-32602), headers that disagree with
the body (-32020, HeaderMismatch), an unsupported version (-32022).
Spec: docs/specification/2026-07-28/basic/index.mdx ("Per-request protocol
fields", "Error Codes"), basic/transports/streamable-http.mdx.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Final

from mcp_fast.protocol.jsonrpc import INVALID_PARAMS, McpError
from mcp_fast.protocol.spec import LOG_LEVELS
from mcp_fast.protocol.versions import ADVERTISED_VERSIONS, POLICIES, VersionPolicy

PROTOCOL_VERSION_KEY: Final = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY: Final = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_KEY: Final = "io.modelcontextprotocol/clientInfo"
LOG_LEVEL_KEY: Final = "io.modelcontextprotocol/logLevel"
SERVER_INFO_KEY: Final = "io.modelcontextprotocol/serverInfo"

HEADER_MISMATCH: Final = -32020
MISSING_REQUIRED_CLIENT_CAPABILITY: Final = -32021
UNSUPPORTED_PROTOCOL_VERSION: Final = -32022

# Which params field the Mcp-Name header repeats, per method.
NAME_SOURCE: Final[dict[str, str]] = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    # The tasks extension routes on the task id.
    "tasks/get": "taskId",
    "tasks/update": "taskId",
    "tasks/cancel": "taskId",
}
TASKS_EXTENSION: Final = "io.modelcontextprotocol/tasks"

_SENTINEL = re.compile(r"^=\?base64\?(.*)\?=$", re.DOTALL)


# What a request's ``_meta`` says: (protocol version, client capabilities, client info or None,
# log level as a rank in LOG_LEVELS or None: send no log notifications). A plain tuple, unpacked
# where it is read: an object with named fields cost a Python __init__ call on every request.
Envelope = tuple[str, dict[str, Any], dict[str, Any] | None, int | None]


def carries_envelope(params: object) -> bool:
    """A request that speaks the per-request envelope (its ``_meta`` names a version)."""
    if type(params) is not dict:
        return False
    meta = params.get("_meta")
    return type(meta) is dict and PROTOCOL_VERSION_KEY in meta


def read_envelope(params: dict[str, Any] | None) -> Envelope:
    """Rung 1: the required ``_meta`` fields are there and well-typed, else -32602."""
    meta = params.get("_meta") if params is not None else None
    if type(meta) is not dict:
        raise McpError(
            INVALID_PARAMS,
            f"Invalid params: _meta with {PROTOCOL_VERSION_KEY} and {CLIENT_CAPABILITIES_KEY} is required",
        )
    version = meta.get(PROTOCOL_VERSION_KEY)
    capabilities = meta.get(CLIENT_CAPABILITIES_KEY)
    if type(version) is not str or type(capabilities) is not dict:
        raise _malformed(meta, version)
    client_info = meta.get(CLIENT_INFO_KEY)
    level = meta.get(LOG_LEVEL_KEY)
    rank: int | None = None
    if level is not None:
        rank = LOG_LEVELS.get(level) if type(level) is str else None
        if rank is None:
            raise McpError(INVALID_PARAMS, f"Invalid params: unknown log level {level!r}")
    return version, capabilities, client_info if type(client_info) is dict else None, rank


def _malformed(meta: dict[str, Any], version: Any) -> McpError:
    """What is wrong with the required ``_meta`` fields: missing ones first, then types."""
    missing = [key for key in (PROTOCOL_VERSION_KEY, CLIENT_CAPABILITIES_KEY) if key not in meta]
    if missing:
        return McpError(INVALID_PARAMS, "Invalid params: _meta is missing " + ", ".join(missing))
    if type(version) is not str:
        return McpError(INVALID_PARAMS, f"Invalid params: {PROTOCOL_VERSION_KEY} must be a string")
    return McpError(INVALID_PARAMS, f"Invalid params: {CLIENT_CAPABILITIES_KEY} must be an object")


def decode_header_value(raw: bytes) -> str | None:
    """A header value as text; ``=?base64?...?=`` sentinels are decoded strictly.

    None for a malformed sentinel (which then mismatches whatever the body says).
    """
    text = raw.decode("latin-1")
    if not text.startswith("=?"):
        return text  # most values are plain: no pattern to match
    match = _SENTINEL.match(text)
    if match is None:
        return text
    payload = match.group(1)
    try:
        decoded = base64.b64decode(payload, validate=True)
        if base64.b64encode(decoded).decode("ascii") != payload:
            return None
        return decoded.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def check_headers(
    method: str, params: dict[str, Any] | None, version: str, headers: dict[bytes, bytes]
) -> None:
    """Rung 2 (HTTP): MCP-Protocol-Version, Mcp-Method and Mcp-Name must repeat the body
    (``version``: its ``_meta`` protocol version), else -32020."""
    version_header = headers.get(b"mcp-protocol-version")
    if version_header is None or version_header.decode("latin-1").strip() != version:
        shown = "absent" if version_header is None else repr(version_header.decode("latin-1"))
        raise McpError(
            HEADER_MISMATCH,
            f"Header mismatch: MCP-Protocol-Version {shown} does not match _meta protocolVersion {version!r}",
        )
    method_header = headers.get(b"mcp-method")
    if method_header is None or method_header.decode("latin-1").strip() != method:
        raise McpError(HEADER_MISMATCH, f"Header mismatch: Mcp-Method must be {method!r}")
    source = NAME_SOURCE.get(method)
    if source is None:
        return
    body_name = params.get(source) if params is not None else None
    name_header = headers.get(b"mcp-name")
    if name_header is None or decode_header_value(name_header.strip()) != body_name:
        raise McpError(HEADER_MISMATCH, f"Header mismatch: Mcp-Name must repeat params.{source}")


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
HeaderParam = tuple[str, bytes, str]  # (argument name, lower-case header name, JSON type)


def header_params(input_schema: dict[str, Any]) -> tuple[HeaderParam, ...]:
    """Arguments a client mirrors into ``Mcp-Param-{Name}`` headers (``x-mcp-header``).

    Checked once, at registration: a token name, unique, on a string, integer or
    boolean property (streamable-http.mdx "Custom Headers from Tool Parameters").
    """
    found: list[HeaderParam] = []
    seen: set[str] = set()
    properties = input_schema.get("properties")
    for argument, schema in (properties or {}).items():
        if not isinstance(schema, dict) or "x-mcp-header" not in schema:
            continue
        name = schema["x-mcp-header"]
        kind = schema.get("type")
        if not isinstance(name, str) or not _TOKEN.match(name) or name.lower() in seen:
            raise ValueError(f"x-mcp-header {name!r} of {argument!r} must be a unique header token")
        if kind not in ("string", "integer", "boolean"):
            raise ValueError(
                f"x-mcp-header is allowed on string, integer and boolean properties, not {kind!r}"
            )
        seen.add(name.lower())
        found.append((argument, b"mcp-param-" + name.lower().encode("ascii"), kind))
    return tuple(found)


def _rendered(value: Any) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check_header_params(params: tuple[HeaderParam, ...], arguments: Any, headers: dict[bytes, bytes]) -> None:
    """Rung 4: each mirrored argument and its header agree (both absent, or equal), else -32020."""
    values = arguments if isinstance(arguments, dict) else {}
    for argument, header, _ in params:
        value = values.get(argument)
        raw = headers.get(header)
        shown = header.decode("ascii")
        if value is None:
            if raw is not None:
                raise McpError(
                    HEADER_MISMATCH, f"Header mismatch: {shown} is sent but arguments.{argument} is not"
                )
            continue
        if raw is None:
            raise McpError(HEADER_MISMATCH, f"Header mismatch: {shown} is required with arguments.{argument}")
        if decode_header_value(raw.strip()) != _rendered(value):
            raise McpError(HEADER_MISMATCH, f"Header mismatch: {shown} does not match arguments.{argument}")


def unsupported_version(requested: str) -> McpError:
    return McpError(
        UNSUPPORTED_PROTOCOL_VERSION,
        "Unsupported protocol version",
        {"supported": list(ADVERTISED_VERSIONS), "requested": requested},
    )


def check_version(version: str) -> VersionPolicy:
    """Rung 3: a version this server serves without a handshake, else -32022."""
    policy = POLICIES.get(version)
    if policy is None or policy.handshake:
        raise unsupported_version(version)
    return policy
