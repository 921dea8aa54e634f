"""Streamable HTTP's header rules: the verdict on a request from its method and headers alone.

Spec: basic/transports.mdx "Streamable HTTP" (each version), and for 2026-07-28
basic/transports/streamable-http.mdx. Checked in the order the spec implies: Host and Origin
(DNS rebinding: 421/403), the method (405), Content-Type (415), Accept (406), the
``MCP-Protocol-Version`` header (absent: 2025-03-26; unknown: 400, or decided with the body
for a POST, where 2026-07-28 answers -32022).

A client sends the same header values on every request, so a verdict is remembered per set of
values (bounded): the checks run once per client, not once per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from mcp_fast.protocol import jsonrpc
from mcp_fast.protocol.jsonrpc import INVALID_REQUEST, McpError
from mcp_fast.protocol.versions import POLICIES, SUPPORTED_VERSIONS, VERSION_WHEN_HEADER_ABSENT, VersionPolicy
from mcp_fast.transport.origin import HostPolicy
from mcp_fast.wire.responder import Headers

JSON_HEADERS: Final[Headers] = ((b"content-type", b"application/json"),)
SSE_HEADERS: Final[Headers] = (
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    # nginx buffers proxied responses unless told not to; SSE must flow at once.
    (b"x-accel-buffering", b"no"),
)
TEXT_HEADERS: Final[Headers] = ((b"content-type", b"text/plain; charset=utf-8"),)
ALLOW_POST: Final[Headers] = ((b"allow", b"POST"),)
ALLOW_ALL: Final[Headers] = ((b"allow", b"GET, POST, DELETE"),)
NO_HEADERS: Final[Headers] = ()
_VERDICT_CACHE_SIZE: Final = 256


@dataclass(frozen=True, slots=True)
class Rejection:
    """An HTTP-level refusal, decided from the request's method and headers alone."""

    status: int
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class Accepted:
    """Headers that passed: the version the client says it speaks and what it accepts.

    ``policy`` is None when MCP-Protocol-Version names a version we don't know:
    whether that is -32022 or first a -32602/-32020 depends on the body (2026-07-28).
    """

    method: bytes
    policy: VersionPolicy | None
    json_ok: bool
    sse_ok: bool
    version_text: str = ""


Verdict = Rejection | Accepted
HeaderKey = tuple[bytes, bytes | None, bytes | None, bytes | None, bytes | None, bytes | None]


def plain_rejection(status: int, reason: str, extra: Headers | None = None) -> Rejection:
    return Rejection(status, (*TEXT_HEADERS, *(extra or ())), reason.encode() + b"\n")


def rpc_rejection(status: int, code: int, message: str, request_id: Any = None) -> Rejection:
    return Rejection(status, JSON_HEADERS, jsonrpc.encode_error(request_id, McpError(code, message)))


def accepts(accept: bytes) -> tuple[bool, bool]:
    """(JSON ok, SSE ok) from an Accept header; absent or */* accepts both (RFC 9110 12.5.1)."""
    if b"*/*" in accept:
        return True, True
    return (
        b"application/json" in accept or b"application/*" in accept,
        b"text/event-stream" in accept or b"text/*" in accept,
    )


def is_json_content_type(value: bytes | None) -> bool:
    if value is None:
        return False
    media_type = value.split(b";", 1)[0].strip().lower()
    return media_type == b"application/json"


class HeaderRules:
    """Every header rule of the endpoint, with the verdicts remembered."""

    def __init__(self, host_policy: HostPolicy, stateful: bool) -> None:
        self.host_policy = host_policy
        self.stateful = stateful  # sessions: GET and DELETE exist
        # Verdicts by header values; the endpoint looks here first (see its __call__).
        self.verdicts: dict[HeaderKey, Verdict] = {}

    def verdict_of(self, key: HeaderKey) -> Verdict:
        """The verdict on one set of header values, remembered (bounded: a client that varies
        them only pays for the checks themselves)."""
        verdict = self.judge(*key)
        if len(self.verdicts) < _VERDICT_CACHE_SIZE:
            self.verdicts[key] = verdict
        return verdict

    def judge(
        self,
        method: bytes,
        host: bytes | None,
        origin: bytes | None,
        content_type: bytes | None,
        accept: bytes | None,
        version: bytes | None,
    ) -> Verdict:
        """Every header rule of Streamable HTTP, in the order the spec implies."""
        problem = self.host_policy.check(host, origin)
        if problem is not None:
            return plain_rejection(*problem)
        header_policy = POLICIES.get(version.decode("latin-1").strip()) if version is not None else None
        if method in (b"GET", b"DELETE") and header_policy is not None and not header_policy.handshake:
            # 2026-07-28 has no GET stream and no session to DELETE.
            return plain_rejection(
                405, "Method not allowed: this protocol version takes POST only", ALLOW_POST
            )
        if method == b"POST":
            if not is_json_content_type(content_type):
                return plain_rejection(415, "Unsupported media type: the body must be application/json")
        elif method in (b"GET", b"DELETE") and self.stateful:
            pass
        elif self.stateful:
            return plain_rejection(
                405, "Method not allowed: this endpoint takes GET, POST and DELETE", ALLOW_ALL
            )
        else:
            # Without sessions there is no stream to GET and nothing to DELETE.
            return plain_rejection(405, "Method not allowed: this endpoint takes POST", ALLOW_POST)
        json_ok, sse_ok = accepts(accept if accept is not None else b"*/*")
        if method == b"GET" and not sse_ok:
            return plain_rejection(406, "Not acceptable: a GET stream is text/event-stream")
        if method == b"POST" and not (json_ok or sse_ok):
            return plain_rejection(406, "Not acceptable: accept application/json or text/event-stream")
        # 2025-06-18 "Protocol Version Header": absent means 2025-03-26.
        if version is None:
            return Accepted(method, POLICIES[VERSION_WHEN_HEADER_ABSENT], json_ok, sse_ok)
        text = version.decode("latin-1").strip()
        if header_policy is None and method != b"POST":
            supported = ", ".join(SUPPORTED_VERSIONS)
            reason = f"Unsupported MCP-Protocol-Version {text!r}; supported: {supported}"
            return rpc_rejection(400, INVALID_REQUEST, reason)
        return Accepted(method, header_policy, json_ok, sse_ok, text)
