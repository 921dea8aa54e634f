#!/usr/bin/env python3
"""mcp_fast benchmark harness: the project and its peers, side by side, in one run.

    python bench/run.py            # everything: workloads, concurrency sweep, --workers scaling,
                                   # idle streams; 10 s runs, 3 interleaved repetitions
    python bench/run.py --quick    # the same in about 2 minutes (2 s runs, 1 repetition)

Each server runs as its own process pinned to one core (``taskset -c 0``); the load generator runs
pinned to the other (``taskset -c 1``). Every (workload, server) pair is checked for a correct
answer before any load and again after it; then warmed up and measured in interleaved repetitions
(A B C A B C ...), medians reported with ratios against the peers. Results go to
``bench/results/latest.json`` and a chart to ``bench/results/latest.svg``.

Peers and workloads are rows in the ``SERVERS`` and ``WORKLOADS`` tables below; ``RATIOS`` pairs
server families. Only the standard library is used here, so any Python >= 3.10 can run it; the
peers run from the virtualenv ``.bench-venv/`` which this script creates from
``bench/peers/requirements.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import html
import http.client
import json
import math
import os
import platform
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS_DIR = BENCH / "peers"
WRK_DIR = BENCH / "wrk"
WRK_SCRIPT = WRK_DIR / "post.lua"
RESULTS_DIR = BENCH / "results"  # git-ignored
LOG_DIR = RESULTS_DIR / "logs"
REQUEST_DIR = RESULTS_DIR / "requests"
VENV = ROOT / ".bench-venv"  # already in the repo's .gitignore
PEER_REQUIREMENTS = PEERS_DIR / "requirements.txt"
VENV_STAMP = VENV / ".bench-requirements.sha256"

HOST = "127.0.0.1"  # load only ever targets loopback
MCP_PATH = "/mcp"
PROTOCOL_VERSION = "2025-06-18"
SESSIONLESS_VERSION = "2026-07-28"
SESSION_SECRET = "bench-only-not-a-secret"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
HEADLINE = "tools_call_echo"
H2_STREAMS = 10  # HTTP/2 streams per connection (DESIGN.md "Measuring performance")
TLS_DIR = RESULTS_DIR / "tls"  # the throw-away certificate of the TLS rows (made by bench_certificate)
ID_MARK = "__BENCH_ID__"  # in a session workload's load request: wrk numbers each request (post.lua)


class SetupError(RuntimeError):
    """The harness could not prepare its tools (wrk, the peers' virtualenv, CPUs)."""


# --------------------------------------------------------------------------------------------
# Tables: servers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pythons:
    project: str  # runs mcp_fast (the interpreter running this script unless --project-python)
    peers: str  # .bench-venv/bin/python


def _mcp_fast(*extra: str, app: str = "server") -> Callable[[Pythons, int], list[str]]:
    # A bench app (peers/mcp_fast_app.py: echo and lookup, like every peer; ``app`` says how echo
    # is written) on the PYTHONPATH that ServerSpec.env sets.
    return lambda py, port: [
        py.project, "-m", "mcp_fast", f"mcp_fast_app:{app}",
        "--host", HOST, "--port", str(port), "--log-level", "warning", *extra,
    ]  # fmt: skip


def bench_certificate() -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made once, with ``cryptography`` from the test
    extra); the load generators do not verify it, the checks do not either."""
    cert, key = TLS_DIR / "server.crt", TLS_DIR / "server.key"
    if cert.exists() and key.exists():
        return cert, key
    import datetime
    from ipaddress import IPv4Address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcp_fast bench")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address(HOST))]), critical=False)
        .sign(private, hashes.SHA256())
    )  # fmt: skip
    TLS_DIR.mkdir(parents=True, exist_ok=True)
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert, key


def _mcp_fast_tls(*extra: str) -> Callable[[Pythons, int], list[str]]:
    def command(py: Pythons, port: int) -> list[str]:
        cert, key = bench_certificate()
        return _mcp_fast(*extra, "--certfile", str(cert), "--keyfile", str(key))(py, port)

    return command


def _peer(script: str, *extra: str) -> Callable[[Pythons, int], list[str]]:
    return lambda py, port: [
        py.peers, str(PEERS_DIR / script), "--host", HOST, "--port", str(port), *extra,
    ]  # fmt: skip


@dataclass(frozen=True)
class ServerSpec:
    name: str
    family: str  # mcp_fast, official_sdk, fastmcp, raw_ceiling: what RATIOS compare
    description: str
    command: Callable[[Pythons, int], list[str]]
    workloads: tuple[str, ...]  # the workloads this server serves
    env: dict[str, str] = field(default_factory=dict)
    # Per workload, headers that differ from the workload's request for this server (see the
    # SSE workload: mcp_fast streams when the client accepts only text/event-stream).
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    startup_timeout: float = 30.0
    # Workloads this server serves in a session of its own (initialize once, Mcp-Session-Id on
    # every request) though the workload itself does not ask for one: mcp_fast with default flags.
    session_workloads: tuple[str, ...] = ()
    # Needs a redis-server: the harness starts one (on the load generator's core) and puts its URL
    # where the command says REDIS_URL.
    redis: bool = False


REDIS_URL = "{redis-url}"  # in a ServerSpec's command: the harness's redis-server
redis_url = "redis://127.0.0.1:1/0"  # set when the harness starts it (Bench.start_servers)


def uses_session(workload: Workload, spec: ServerSpec) -> bool:
    return workload.session or workload.name in spec.session_workloads


MCP_FAST_ENV = {"PYTHONPATH": str(PEERS_DIR)}
# The production rows (README "Benchmarks"): the headline with an RS256 bearer token (a key and
# its JWKS made here), with the audit log, and without the default metrics, each beside it.
AUTH_AUDIENCE = "mcp-fast-bench"
AUTH_DIR = RESULTS_DIR / "auth"
AUDIT_LOG = RESULTS_DIR / "audit.log"


def _bearer_token() -> str:
    """An RS256 access token for the bench server, and the JWKS that verifies it (in AUTH_DIR)."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    AUTH_DIR.mkdir(parents=True, exist_ok=True)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    (AUTH_DIR / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "bench"}]}))
    now = int(time.time())
    claims = {"sub": "bench", "aud": AUTH_AUDIENCE, "iat": now, "exp": now + 7 * 86400, "scope": "bench"}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})


BENCH_TOKEN = _bearer_token()
AUTH_FLAGS = (
    "--stateless",
    "--auth-jwks", str(AUTH_DIR / "jwks.json"),
    "--auth-audience", AUTH_AUDIENCE,
    "--public-url", "http://127.0.0.1/mcp",
)  # fmt: skip
STATELESS_WORKLOADS = (
    "tools_call_echo",
    "tools_call_echo_2026",
    "tools_list",
    "tools_call_echo_64k",
    "tools_call_cache_hit",
)

SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(
            name="mcp_fast",
            family="mcp_fast",
            description=(
                "python -m mcp_fast, default flags (a JWT session per client); the bench app as the "
                "README teaches it: echo a plain @server.tool() def"
            ),
            command=_mcp_fast(),
            workloads=(*STATELESS_WORKLOADS, "tools_call_echo_sse", "tools_call_echo_session"),
            env=MCP_FAST_ENV,
            headers={"tools_call_echo_sse": {"Accept": "text/event-stream"}},
            session_workloads=tuple(
                w for w in (*STATELESS_WORKLOADS, "tools_call_echo_sse") if w != "tools_call_echo_2026"
            ),
        ),
        ServerSpec(
            name="mcp_fast_tls",
            family="mcp_fast",
            description=(
                "the --stateless row with --certfile/--keyfile: TLS on the port, ALPN h2 and http/1.1 "
                "(against mcp_fast_stateless, the same flags in cleartext)"
            ),
            command=_mcp_fast_tls("--stateless"),
            workloads=("tools_call_echo_tls", "tools_call_echo_h2_tls"),
            env=MCP_FAST_ENV,
        ),
        ServerSpec(
            name="mcp_fast_bearer",
            family="mcp_fast_bearer",
            description="the --stateless row with authorization: an RS256 bearer token on every request (--auth-jwks)",
            command=_mcp_fast(*AUTH_FLAGS),
            workloads=("tools_call_echo",),
            env=MCP_FAST_ENV,
            headers={"tools_call_echo": {"Authorization": f"Bearer {BENCH_TOKEN}"}},
        ),
        ServerSpec(
            name="mcp_fast_audit",
            family="mcp_fast_audit",
            description="the --stateless row with --audit-log FILE (a JSON line per tools/call)",
            command=_mcp_fast("--stateless", "--audit-log", str(AUDIT_LOG)),
            workloads=("tools_call_echo",),
            env=MCP_FAST_ENV,
        ),
        ServerSpec(
            name="mcp_fast_no_metrics",
            family="mcp_fast_no_metrics",
            description="the --stateless row with --no-metrics (metrics are on by default)",
            command=_mcp_fast("--stateless", "--no-metrics"),
            workloads=("tools_call_echo",),
            env=MCP_FAST_ENV,
        ),
        ServerSpec(
            name="mcp_fast_async",
            family="mcp_fast",
            description="the headline with echo an async def (default flags, a JWT session)",
            command=_mcp_fast(app="async_server"),
            workloads=("tools_call_echo",),
            env=MCP_FAST_ENV,
            session_workloads=("tools_call_echo",),
        ),
        ServerSpec(
            name="mcp_fast_inline",
            family="mcp_fast",
            description="the headline with echo declared inline=True (always on the event loop)",
            command=_mcp_fast(app="inline_server"),
            workloads=("tools_call_echo",),
            env=MCP_FAST_ENV,
            session_workloads=("tools_call_echo",),
        ),
        ServerSpec(
            name="mcp_fast_offload",
            family="mcp_fast",
            description="the headline with echo declared offload=True (always the thread pool: every def before)",
            command=_mcp_fast(app="offload_server"),
            workloads=("tools_call_echo",),
            env=MCP_FAST_ENV,
            session_workloads=("tools_call_echo",),
        ),
        ServerSpec(
            name="mcp_fast_redis",
            family="mcp_fast",
            description="the headline with --redis (a fleet's shared state in Redis; a tools/call needs none of it)",
            command=_mcp_fast("--redis", REDIS_URL),
            workloads=("tools_call_echo",),
            env=MCP_FAST_ENV,
            session_workloads=("tools_call_echo",),
            redis=True,
        ),
        ServerSpec(
            name="mcp_fast_stateless",
            family="mcp_fast",
            description="the headline with --stateless (no session); HTTP/2 (h2load cannot number requests)",
            command=_mcp_fast("--stateless"),
            # HTTP/2 only here, in mcp_fast_tls and in the ceiling: uvicorn, under the SDK and
            # FastMCP, has none.
            workloads=("tools_call_echo", "tools_call_echo_h2", "tools_call_echo_h2_c1"),
            env=MCP_FAST_ENV,
        ),
        ServerSpec(
            name="official_sdk",
            family="official_sdk",
            description="official mcp SDK MCPServer, stateless_http + json_response, uvicorn uvloop/httptools",
            command=_peer("official_sdk_server.py"),
            workloads=STATELESS_WORKLOADS,
        ),
        ServerSpec(
            name="official_sdk_sse",
            family="official_sdk",
            description="official mcp SDK, stateless_http, SSE responses (json_response=False)",
            command=_peer("official_sdk_server.py", "--sse"),
            workloads=("tools_call_echo_sse",),
        ),
        ServerSpec(
            name="official_sdk_stateful",
            family="official_sdk",
            description="official mcp SDK, sessions (stateless_http=False) + json_response",
            command=_peer("official_sdk_server.py", "--stateful"),
            workloads=("tools_call_echo_session",),
        ),
        ServerSpec(
            name="fastmcp",
            family="fastmcp",
            description="FastMCP http_app(stateless_http=True, json_response=True), uvicorn uvloop/httptools",
            command=_peer("fastmcp_server.py"),
            workloads=STATELESS_WORKLOADS,
        ),
        ServerSpec(
            name="fastmcp_sse",
            family="fastmcp",
            description="FastMCP, stateless_http, SSE responses (json_response=False)",
            command=_peer("fastmcp_server.py", "--sse"),
            workloads=("tools_call_echo_sse",),
        ),
        ServerSpec(
            name="fastmcp_stateful",
            family="fastmcp",
            description="FastMCP, sessions (stateless_http=False) + json_response",
            command=_peer("fastmcp_server.py", "--stateful"),
            workloads=("tools_call_echo_session",),
        ),
        ServerSpec(
            name="raw_ceiling",
            family="raw_ceiling",
            description="bare uvloop asyncio.Protocol + orjson, answers from the request id",
            command=_peer("raw_ceiling.py"),
            workloads=("tools_call_echo", "tools_call_echo_64k", "tools_call_echo_h2", "tools_call_echo_h2_c1"),
        ),
    )
}

# (numerator, denominator) server families; each workload reports the pairs it has (every server
# of the numerator's family against the denominator's first).
RATIOS: tuple[tuple[str, str], ...] = (
    ("mcp_fast", "official_sdk"),
    ("mcp_fast", "fastmcp"),
    ("mcp_fast", "raw_ceiling"),
)
# (numerator, denominator) servers: how the tools users write compare with the inline=True path,
# and what production features cost.
SERVER_RATIOS: tuple[tuple[str, str], ...] = (
    ("mcp_fast_redis", "mcp_fast"),  # the issue-13 goal: within 5 %
    ("mcp_fast", "mcp_fast_inline"),
    ("mcp_fast_async", "mcp_fast_inline"),
    # What production features cost, each against the same flags without it (metrics are on by default).
    ("mcp_fast_bearer", "mcp_fast_stateless"),
    ("mcp_fast_audit", "mcp_fast_stateless"),
    ("mcp_fast_stateless", "mcp_fast_no_metrics"),
)


# --------------------------------------------------------------------------------------------
# Tables: workloads
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str
    response_bytes: int = 0  # body of the load-test request's answer, for comparing servers


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    method: str = "tools/call"  # tools/call of ``tool``, or tools/list
    tool: str = "echo"  # echo (answers its message) or lookup (answers lookup_answer(message))
    message: str = "hello"  # the tool's argument in the load test
    check_message: Callable[[], str] = lambda: f"check-{uuid.uuid4().hex}"
    expect: str = "json"  # content type of the answer: json (application/json) or sse
    session: bool = False  # initialize once, then Mcp-Session-Id on every request
    sessionless: bool = False  # a 2026-07-28 request: _meta envelope, Mcp-Method/Mcp-Name, no session
    loadgen: str = "wrk"  # wrk (HTTP/1.1) or h2load (HTTP/2, h2_streams streams per connection)
    h2_streams: int = H2_STREAMS
    tls: bool = False  # https (the server has a certificate; ALPN picks the protocol)
    skip: str | None = None  # skipped for every server, with this reason
    # Servers that may not serve this yet: a failed check then skips the pair with this reason
    # (and the check's answer) instead of failing the run. It runs as soon as the check passes.
    pending: dict[str, str] = field(default_factory=dict)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            name="tools_call_echo",
            description='tools/call echo {"message":"hello"}, JSON response, HTTP/1.1 keep-alive (the headline)',
        ),
        Workload(
            name="tools_call_echo_sse",
            description="the headline request answered as text/event-stream (one SSE event)",
            expect="sse",
        ),
        Workload(
            name="tools_call_echo_session",
            description="the headline request in an initialized session (Mcp-Session-Id on every request)",
            session=True,
        ),
        Workload(
            name="tools_call_echo_2026",
            description=f"the headline as a {SESSIONLESS_VERSION} request: _meta envelope, Mcp-Method/Mcp-Name, no session",
            sessionless=True,
        ),
        Workload(
            name="tools_list",
            description="tools/list (each server has the same two tools, echo and lookup)",
            method="tools/list",
        ),
        Workload(
            name="tools_call_echo_64k",
            description="echo of a 64 KiB message: 64 KiB request body, 64 KiB text in the result",
            message="x" * 65536,
            check_message=lambda: (uuid.uuid4().hex * 2048)[:65536],
        ),
        Workload(
            name="tools_call_cache_hit",
            description=(
                'tools/call lookup {"key":"hello"} (~0.1 ms of PBKDF2 per call), the same key again and '
                "again: mcp_fast declares it cache_ttl and answers from its result cache; the peers "
                "have no result cache and compute it each time"
            ),
            tool="lookup",
        ),
        Workload(
            name="tools_call_echo_h2",
            description=f"the headline over HTTP/2 cleartext (h2load, {H2_STREAMS} streams per connection)",
            loadgen="h2load",
        ),
        Workload(
            name="tools_call_echo_h2_c1",
            description=(
                "the headline over HTTP/2 cleartext, 1 stream per connection: as many requests in flight "
                "as the HTTP/1.1 run (latency)"
            ),
            loadgen="h2load",
            h2_streams=1,
        ),
        Workload(
            name="tools_call_echo_tls",
            description="the headline over HTTPS: HTTP/1.1 over TLS (wrk; ALPN http/1.1)",
            tls=True,
        ),
        Workload(
            name="tools_call_echo_h2_tls",
            description=f"the headline over HTTP/2 over TLS (h2load, ALPN h2, {H2_STREAMS} streams per connection)",
            loadgen="h2load",
            tls=True,
        ),
    )
}

# mcp_fast's HTTP/2 and TLS rows (all --stateless: h2load cannot number a session's requests)
# against the same flags over cleartext HTTP/1.1, in the same run.
TRANSPORT_BASE = "mcp_fast_stateless"
TRANSPORT_SERVERS = ("mcp_fast_stateless", "mcp_fast_tls")
TRANSPORT_RATIOS: tuple[str, ...] = (
    "tools_call_echo_h2", "tools_call_echo_h2_c1", "tools_call_echo_tls", "tools_call_echo_h2_tls",
)  # fmt: skip


def request_for(
    workload: Workload,
    spec: ServerSpec,
    *,
    message: str,
    request_id: int | str,
    session_id: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """The exact headers and body a workload sends to a server (check and load alike)."""
    params: dict[str, Any] = {}
    if workload.method == "tools/call":
        argument = "key" if workload.tool == "lookup" else "message"
        params = {"name": workload.tool, "arguments": {argument: message}}
    version = SESSIONLESS_VERSION if workload.sessionless else PROTOCOL_VERSION
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": version,
    }
    if workload.sessionless:
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": SESSIONLESS_VERSION,
            "io.modelcontextprotocol/clientInfo": {"name": "mcp-fast-bench", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        headers["Mcp-Method"] = workload.method
        if workload.method == "tools/call":
            headers["Mcp-Name"] = "echo"
    if uses_session(workload, spec):
        assert session_id is not None
        headers["Mcp-Session-Id"] = session_id
    headers.update(spec.headers.get(workload.name, {}))
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": workload.method}
    if params:
        msg["params"] = params
    return headers, json.dumps(msg, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------------
# Correctness checks
# --------------------------------------------------------------------------------------------


def _unverified_tls(alpn: str) -> ssl.SSLContext:
    """The bench's own self-signed certificate is not verified (nor by wrk and h2load)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols([alpn])
    return context


def _post(
    port: int, body: bytes, headers: dict[str, str], *, tls: bool = False
) -> tuple[int, dict[str, str], bytes]:
    conn = (
        http.client.HTTPSConnection(HOST, port, timeout=10, context=_unverified_tls("http/1.1"))
        if tls
        else http.client.HTTPConnection(HOST, port, timeout=10)
    )
    try:
        conn.request("POST", MCP_PATH, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def sse_messages(data: bytes) -> list[Any]:
    """JSON values of the ``data`` of each event of a text/event-stream body (WHATWG parsing:
    CRLF/LF/CR line ends, one optional space after the colon, data lines joined by LF; events with
    empty data, such as a priming event, are skipped)."""
    text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    out: list[Any] = []
    lines: list[str] = []
    for line in [*text.split("\n"), ""]:
        if line == "":
            payload = "\n".join(lines)
            lines = []
            if payload:
                out.append(json.loads(payload))
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            lines.append(value[1:] if value.startswith(" ") else value)
    return out


def open_session(port: int) -> str:
    """initialize + notifications/initialized; returns the Mcp-Session-Id (raises on failure)."""
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcp-fast-bench", "version": "1"},
        },
    }
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    status, resp_headers, data = _post(port, json.dumps(init).encode(), headers)
    session_id = resp_headers.get("mcp-session-id")
    if status != 200 or not session_id:
        raise RuntimeError(f"initialize: HTTP {status}, no Mcp-Session-Id: {data[:200]!r}")
    note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
    headers |= {"MCP-Protocol-Version": PROTOCOL_VERSION, "Mcp-Session-Id": session_id}
    status, _, data = _post(port, note, headers)
    if status != 202:
        raise RuntimeError(f"notifications/initialized: HTTP {status} (expected 202): {data[:200]!r}")
    return session_id


def check_once(
    workload: Workload,
    spec: ServerSpec,
    port: int,
    message: str,
    request_id: int | str,
    session_id: str | None,
) -> CheckResult:
    """One request; the answer must be HTTP 200 of the expected content type, a JSON-RPC 2.0
    result with the same id, not isError, with the right content (echoed text, the echo tool)."""
    headers, body = request_for(workload, spec, message=message, request_id=request_id, session_id=session_id)
    try:
        if workload.loadgen == "h2load":
            status, resp_headers, data = _post_h2(port, body, headers, tls=workload.tls)
        else:
            status, resp_headers, data = _post(port, body, headers, tls=workload.tls)
    except OSError as exc:
        return CheckResult(False, f"request failed: {exc!r}")
    snippet = data[:300].decode("utf-8", "replace")
    if status != 200:
        return CheckResult(False, f"HTTP {status}: {snippet}")
    ctype = resp_headers.get("content-type", "")
    if workload.expect == "sse":
        if not ctype.startswith("text/event-stream"):
            return CheckResult(False, f"content-type {ctype!r} (expected text/event-stream): {snippet}")
        try:
            messages = sse_messages(data)
        except ValueError as exc:
            return CheckResult(False, f"an SSE event's data is not JSON ({exc}): {snippet}")
        answers = [m for m in messages if isinstance(m, dict) and "method" not in m]
        if len(answers) != 1:
            return CheckResult(
                False, f"{len(answers)} JSON-RPC responses in the stream (expected 1): {snippet}"
            )
        msg = answers[0]
    else:
        if not ctype.startswith("application/json"):
            return CheckResult(
                False,
                f"content-type {ctype!r} (expected application/json; SSE means JSON mode is off): {snippet}",
            )
        try:
            msg = json.loads(data)
        except ValueError as exc:
            return CheckResult(False, f"body is not JSON ({exc}): {snippet}")
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
        return CheckResult(False, f"not a JSON-RPC 2.0 object: {snippet}")
    if msg.get("id") != request_id:
        return CheckResult(False, f"id {msg.get('id')!r} != request id {request_id!r}")
    if "error" in msg or not isinstance(msg.get("result"), dict):
        return CheckResult(False, f"no result: {snippet}")
    result = msg["result"]
    if workload.method == "tools/list":
        tools = result.get("tools")
        names = [t.get("name") for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []
        if sorted(names) != ["echo", "lookup"]:
            return CheckResult(False, f"tools {names!r} (expected echo and lookup)")
        return CheckResult(True, "ok", len(data))
    if workload.method == "ping":
        return CheckResult(result == {}, "ok" if result == {} else f"ping answered {snippet}", len(data))
    if result.get("isError") is True:
        return CheckResult(False, f"isError true: {snippet}")
    if workload.sessionless and result.get("resultType") != "complete":
        return CheckResult(
            False, f"resultType {result.get('resultType')!r} (a {SESSIONLESS_VERSION} result says 'complete')"
        )
    content = result.get("content")
    texts = (
        [c.get("text") for c in content if isinstance(c, dict) and c.get("type") == "text"]
        if isinstance(content, list)
        else []
    )
    expected = lookup_answer(message) if workload.tool == "lookup" else message
    if expected not in texts:
        shown = [t[:40] + "..." if isinstance(t, str) and len(t) > 40 else t for t in texts]
        return CheckResult(False, f"text {shown!r} != the expected {len(expected)}-character answer")
    return CheckResult(True, "ok", len(data))


# The blocking figure: while this many calls of a plain def that sleeps (time.sleep) run at once,
# a ping on another connection must stay quick (issue 11: p99 under 5 ms).
BLOCKING_CALLS = 10
BLOCK_SECONDS = 0.05
PING = Workload(
    name="ping_while_blocked", description="ping, while 10 plain-def calls sleep 50 ms each", method="ping"
)


def run_blocking(bench: Bench) -> dict[str, Any] | None:
    """A ping's latency on one connection while BLOCKING_CALLS calls of a blocking plain ``def``
    run on others (mcp_fast, default flags, app ``blocking_server``)."""
    if not bench.args.blocking or "mcp_fast" not in bench.args.servers:
        return None
    spec = ServerSpec(
        name="mcp_fast_blocking",
        family="mcp_fast",
        description="default flags; the app's tool `block` is a plain def that calls time.sleep",
        command=_mcp_fast(app="blocking_server"),
        workloads=(PING.name,),
        env=MCP_FAST_ENV,
        session_workloads=(PING.name,),
    )
    server = launch_server(spec, bench.pythons, (bench.args.server_cpu,))
    log(
        f"\n[blocking] ping on 1 connection while {BLOCKING_CALLS} calls sleep {BLOCK_SECONDS * 1000:g} ms each"
    )
    stop = threading.Event()
    finished: list[int] = []
    errors: list[str] = []

    def blocker(index: int) -> None:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "MCP-Protocol-Version": PROTOCOL_VERSION,
            "Mcp-Session-Id": server.session_id or "",
        }
        conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
        n = 0
        while not stop.is_set():
            n += 1
            body = json.dumps(
                {"jsonrpc": "2.0", "id": f"block-{index}-{n}", "method": "tools/call",
                 "params": {"name": "block", "arguments": {"seconds": BLOCK_SECONDS}}}
            )  # fmt: skip
            try:
                conn.request("POST", MCP_PATH, body, headers)
                data = conn.getresponse().read()
            except OSError as exc:
                errors.append(repr(exc))
                return
            if b"slept" not in data:
                errors.append(data[:200].decode("utf-8", "replace"))
                return
            finished.append(1)

    threads = [threading.Thread(target=blocker, args=(i,), daemon=True) for i in range(BLOCKING_CALLS)]
    try:
        wait_listening(server)
        if server.failure is None:
            check_server(server, [PING])
            if not server.checks.get(PING.name, CheckResult(False, "no check")).ok:
                server.failure = f"check: {server.checks[PING.name].detail}"
        if server.failure:
            bench.failures.append(f"blocking: {server.failure}")
            return {"failure": server.failure}
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # the sleepers run
        started = len(finished)
        bench.measure([(PING, server, 1)], phase="blocking", warmup=0.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        runs = [r for r in bench.runs if r.phase == "blocking"]
        out = summarize(runs)
        out["blocking_calls_done"] = len(finished) - started
        out["blocking_errors"] = errors[:5]
        if errors or not out.get("all_ok", False):
            bench.failures.append(f"blocking: errors {errors[:2]} or no successful ping run")
        lat = out.get("latency_ms", {})
        log(
            f"[blocking] ping p99 {lat.get('p99', float('nan')):.2f} ms; {out['blocking_calls_done']} sleeping calls done meanwhile"
        )
        return out
    finally:
        stop.set()
        stop_server(server)


def lookup_answer(key: str) -> str:
    """What every server's ``lookup`` tool answers (bench/peers/*: the same PBKDF2)."""
    return hashlib.pbkdf2_hmac("sha256", key.encode(), b"mcp-fast-bench", 400).hex()


def check_pair(workload: Workload, spec: ServerSpec, port: int, session_id: str | None) -> CheckResult:
    # Once with the exact load-test request, once with a random message and a string id, so a server
    # that answers a canned "hello" (a fast wrong answer) fails.
    first = check_once(workload, spec, port, workload.message, 1, session_id)
    if not first.ok:
        return first
    token = uuid.uuid4().hex
    second = check_once(workload, spec, port, workload.check_message(), f"req-{token[:8]}", session_id)
    if not second.ok:
        return second
    return CheckResult(True, f"ok (2 requests, answer {first.response_bytes:,} bytes)", first.response_bytes)


def _post_h2(
    port: int, body: bytes, headers: dict[str, str], *, tls: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """The same POST over HTTP/2 with prior knowledge, or over TLS with ALPN h2 (what h2load
    sends), on the h2 library."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    request_headers = [
        (":method", "POST"), (":scheme", "https" if tls else "http"), (":authority", f"{HOST}:{port}"),
        (":path", MCP_PATH),
        *((name.lower(), value) for name, value in headers.items()),
        ("content-length", str(len(body))),
    ]  # fmt: skip
    conn.send_headers(1, request_headers)
    conn.send_data(1, body, end_stream=True)
    status, response_headers, data = 0, {}, bytearray()
    raw = socket.create_connection((HOST, port), timeout=10)
    sock = _unverified_tls("h2").wrap_socket(raw) if tls else raw
    with sock:
        sock.sendall(conn.data_to_send())
        ended = False
        while not ended:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the HTTP/2 connection")
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    response_headers = {str(k): str(v) for k, v in event.headers}
                    status = int(response_headers.pop(":status"))
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    ended = True
            sock.sendall(conn.data_to_send())
    return status, response_headers, bytes(data)


# --------------------------------------------------------------------------------------------
# Setup: load generators and the peers' virtualenv
# --------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, flush=True)


def ensure_tool(binary: str, package: str) -> str:
    found = shutil.which(binary)
    if found:
        return found
    log(f"{binary} not found: apt-get install -y {package}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(["apt-get", "install", "-y", package], env=env).returncode != 0:
        log("install failed: apt-get update, then retry")
        subprocess.run(["apt-get", "update"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", package], env=env, check=False)
    found = shutil.which(binary)
    if not found:
        raise SetupError(f"could not install {binary} (apt-get install -y {package})")
    return found


def ensure_peers_venv() -> str:
    py = VENV / "bin" / "python"
    if not py.exists():
        log(f"creating peers virtualenv {VENV.relative_to(ROOT)}/")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    wanted = hashlib.sha256(PEER_REQUIREMENTS.read_bytes()).hexdigest()
    have = VENV_STAMP.read_text().strip() if VENV_STAMP.exists() else ""
    if have != wanted:
        log(f"installing peers from {PEER_REQUIREMENTS.relative_to(ROOT)}")
        subprocess.run(
            [
                str(py),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "-r",
                str(PEER_REQUIREMENTS),
            ],
            check=True,
        )
        VENV_STAMP.write_text(wanted + "\n")
    return str(py)


def package_versions(python: str, names: Sequence[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for d in sys.argv[1:]:\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    out = subprocess.run([python, "-c", code, *names], capture_output=True, text=True, check=False)
    try:
        return dict(json.loads(out.stdout))
    except ValueError:
        return {}


def tool_version(binary: str, flag: str) -> str:
    out = subprocess.run([binary, flag], capture_output=True, text=True, check=False)
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0] if text else "?"


# --------------------------------------------------------------------------------------------
# /proc readers (psutil is not available)
# --------------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (a server may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_ticks(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        total += int(f[11]) + int(f[12])  # utime, stime (fields 14, 15 of /proc/PID/stat)
    return total


def rss_kb(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            # statm field 2 is resident pages; cheaper to parse than /proc/PID/status.
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
        except (OSError, IndexError, ValueError):
            continue
    return total


def core_ticks(cpus: Sequence[int]) -> dict[str, int]:
    """user+nice+system, irq+softirq, steal and total, summed over some cores, from /proc/stat."""
    wanted = {f"cpu{c}" for c in cpus}
    out = {"task": 0, "irq": 0, "steal": 0, "total": 0}
    for line in Path("/proc/stat").read_text().splitlines():
        name, _, rest = line.partition(" ")
        if name not in wanted:
            continue
        v = [int(x) for x in rest.split()]
        user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
        out["task"] += user + nice + system
        out["irq"] += irq + softirq
        out["steal"] += steal
        out["total"] += user + nice + system + idle + iowait + irq + softirq + steal
    return out


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def cpu_list(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in cpus)


@dataclass
class RunningServer:
    spec: ServerSpec
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    cpus: tuple[int, ...]
    command: list[str]
    started: float = 0.0
    startup_s: float = 0.0
    idle_rss_kb: int = 0
    failure: str | None = None  # did not start: no workload runs
    session_id: str | None = None
    checks: dict[str, CheckResult] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def launch_server(
    spec: ServerSpec, pythons: Pythons, cpus: Sequence[int], label: str | None = None
) -> RunningServer:
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{label or spec.name}.log"
    command = [redis_url if arg == REDIS_URL else arg for arg in spec.command(pythons, port)]
    argv = ["taskset", "-c", cpu_list(cpus), *command]
    env = dict(os.environ, PYTHONUNBUFFERED="1", **spec.env)
    if str(AUDIT_LOG) in command:
        # One server's lines at a time: the file would otherwise grow by about 1 GB per full run.
        AUDIT_LOG.unlink(missing_ok=True)
    with log_path.open("wb") as log_file:
        log_file.write(("$ " + " ".join(argv) + "\n").encode())
        log_file.flush()
        # taskset execs the command, so the Popen pid is the server's pid.
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return RunningServer(
        spec=spec, port=port, process=proc, log_path=log_path, cpus=tuple(cpus), command=command,
        started=time.monotonic(),
    )  # fmt: skip


def wait_listening(server: RunningServer) -> None:
    deadline = server.started + server.spec.startup_timeout
    while time.monotonic() < deadline:
        if not server.alive():
            server.failure = f"exited with code {server.process.returncode} during startup"
            return
        try:
            with socket.create_connection((HOST, server.port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.05)
    else:
        server.failure = f"not listening after {server.spec.startup_timeout:.0f}s"
        return
    server.startup_s = time.monotonic() - server.started
    time.sleep(0.2)  # let lifespan/startup hooks settle after bind
    server.idle_rss_kb = rss_kb(process_tree(server.pid))


def stop_server(server: RunningServer) -> None:
    proc = server.process
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # own session: the server and anything it forked
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def check_server(server: RunningServer, workloads: Sequence[Workload]) -> None:
    """Check every workload the server serves; a session workload opens its session first."""
    for workload in workloads:
        if workload.name not in server.spec.workloads or workload.skip:
            continue
        if uses_session(workload, server.spec) and server.session_id is None:
            try:
                server.session_id = open_session(server.port)
            except (OSError, RuntimeError) as exc:
                server.checks[workload.name] = CheckResult(False, f"opening a session: {exc}")
                continue
        server.checks[workload.name] = check_pair(workload, server.spec, server.port, server.session_id)


def write_request_file(workload: Workload, server: RunningServer) -> Path:
    # In a session, ids must not repeat (the server routes answers by id: 50 connections sending
    # id 1 at once get each other's answers, or none), so wrk numbers those requests itself.
    request_id: int | str = ID_MARK if uses_session(workload, server.spec) else 1
    headers, body = request_for(
        workload, server.spec, message=workload.message, request_id=request_id, session_id=server.session_id
    )
    REQUEST_DIR.mkdir(parents=True, exist_ok=True)
    path = REQUEST_DIR / f"{workload.name}.{server.name}.http"
    path.write_bytes("".join(f"{k}: {v}\n" for k, v in headers.items()).encode() + b"\n" + body)
    return path


# --------------------------------------------------------------------------------------------
# One load run (wrk or h2load)
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    server: str
    workload: str
    phase: str  # main, sweep, workers
    repetition: int  # 0 = warm-up
    connections: int
    duration_s: float
    requests: int = 0
    rps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    non200: int = 0
    non200_by_status: dict[str, int] = field(default_factory=dict)
    server_cpu_pct: float = 0.0
    server_rss_mb: float = 0.0
    loadgen_cpu_pct: float = 0.0
    other_load_pct: dict[str, float] = field(default_factory=dict)  # noise on the server / load cores
    core_busy_pct: dict[str, float] = field(default_factory=dict)  # incl. irq/softirq and steal
    # irq + softirq share of the server's / load cores (informational: this kernel accounts CPU
    # by ticks, without IRQ_TIME_ACCOUNTING, so softirq work a process does in its own syscalls
    # -- loopback TCP -- is in both its stime and the core's softirq column).
    core_irq_pct: dict[str, float] = field(default_factory=dict)
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and self.non200 == 0 and not any(self.errors.values())


@dataclass(frozen=True)
class LoadSettings:
    connections: int
    threads: int
    timeout_s: float
    load_cpus: tuple[int, ...]


def _wrk_argv(wrk: str, url: str, duration: float, load: LoadSettings) -> list[str]:
    return [
        wrk, "-t", str(load.threads), "-c", str(load.connections), "-d", f"{max(1, round(duration))}s",
        "--timeout", f"{load.timeout_s:g}s", "-s", str(WRK_SCRIPT), url,
    ]  # fmt: skip


def _h2load_argv(
    h2load: str, url: str, duration: float, load: LoadSettings, request: Path, log_file: Path, streams: int
) -> list[str]:
    raw = request.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    body_file = request.with_suffix(".body")
    body_file.write_bytes(body)
    argv = [
        h2load, "-D", f"{max(1, round(duration))}", "-c", str(load.connections), "-t", str(load.threads),
        "-m", str(streams), "-d", str(body_file), "--log-file", str(log_file),
    ]  # fmt: skip
    for line in head.decode().splitlines():
        argv += ["-H", line]
    return [*argv, url + MCP_PATH]


def parse_h2load(output: str, log_file: Path) -> dict[str, Any]:
    """h2load's summary lines and its per-request log (start µs, status, duration µs) -> BENCH_JSON shape."""
    data: dict[str, Any] = {"errors": {}, "non200_by_status": {}}
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("finished in "):
            # finished in 10.00s, 12345.60 req/s, 1.23MB/s
            data["duration_us"] = float(line.split()[2].rstrip("s,")) * 1e6
        elif line.startswith("requests: "):
            # requests: 1000 total, 1000 started, 1000 done, 998 succeeded, 2 failed, 2 errored, 0 timeout
            fields = {
                w.rstrip(","): int(n) for n, w in zip(line.split()[1::2], line.split()[2::2], strict=False)
            }
            data["requests"] = fields.get("done", 0)
            data["errors"] = {"failed": fields.get("failed", 0), "errored": fields.get("errored", 0),
                              "timeout": fields.get("timeout", 0)}  # fmt: skip
    durations: list[int] = []
    statuses: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for row in log_file.read_text().splitlines():
            parts = row.split("\t")
            if len(parts) >= 3:
                durations.append(int(parts[2]))
                if parts[1] != "200":
                    statuses[parts[1]] = statuses.get(parts[1], 0) + 1
    durations.sort()

    def pct(p: float) -> float:
        return float(durations[min(len(durations) - 1, int(p / 100 * len(durations)))]) if durations else 0.0

    data["latency_us"] = {
        "min": float(durations[0]) if durations else 0.0,
        "mean": statistics.fmean(durations) if durations else 0.0,
        "max": float(durations[-1]) if durations else 0.0,
        "p50": pct(50), "p90": pct(90), "p99": pct(99), "p999": pct(99.9),
    }  # fmt: skip
    data["non200_by_status"] = statuses
    data["non200"] = sum(statuses.values())
    if "duration_us" not in data or "requests" not in data:
        raise ValueError("no 'finished in' / 'requests:' line in h2load's output")
    return data


def run_load(
    tools: dict[str, str],
    server: RunningServer,
    workload: Workload,
    request: Path,
    *,
    phase: str,
    repetition: int,
    duration: float,
    load: LoadSettings,
) -> RunResult:
    result = RunResult(server.name, workload.name, phase, repetition, load.connections, duration)
    if not server.alive():
        result.failure = f"server died (exit {server.process.returncode})"
        return result
    url = f"{'https' if workload.tls else 'http'}://{HOST}:{server.port}"
    h2_log = request.with_suffix(".h2load.log")
    h2_log.unlink(missing_ok=True)  # (h2load appends to its log file)
    if workload.loadgen == "h2load":
        argv = _h2load_argv(tools["h2load"], url, duration, load, request, h2_log, workload.h2_streams)
    else:
        argv = _wrk_argv(tools["wrk"], url, duration, load)
    argv = ["taskset", "-c", cpu_list(load.load_cpus), *argv]
    env = dict(os.environ, BENCH_REQUEST=str(request), BENCH_PATH=MCP_PATH)
    if uses_session(workload, server.spec):
        if workload.loadgen != "wrk":
            raise SetupError("only wrk can number the requests of a session workload")
        env["BENCH_ID_MARK"] = json.dumps(ID_MARK)
    server_cpus, load_cpus = server.cpus, load.load_cpus
    shared = bool(set(server_cpus) & set(load_cpus))
    tree = process_tree(server.pid)
    cores0 = {"server": core_ticks(server_cpus), "load": core_ticks(load_cpus)}
    srv0 = cpu_ticks(tree)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    try:
        output = proc.stdout.read().decode("utf-8", "replace")
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of the load generator itself
    except BaseException:  # interrupted: leave no load generator behind
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    srv1 = cpu_ticks(tree)
    cores1 = {"server": core_ticks(server_cpus), "load": core_ticks(load_cpus)}
    result.server_rss_mb = rss_kb(process_tree(server.pid)) / 1024
    if proc.returncode != 0:
        result.failure = f"{Path(argv[3]).name} exit {proc.returncode}: {output.strip()[-300:]}"
        return result
    try:
        if workload.loadgen == "h2load":
            data = parse_h2load(output, h2_log)
        else:
            line = next((ln for ln in output.splitlines() if ln.startswith("BENCH_JSON ")), None)
            if line is None:
                raise ValueError("no BENCH_JSON line from wrk")
            data = json.loads(line[len("BENCH_JSON ") :])
    except ValueError as exc:
        result.failure = f"{exc}: {output.strip()[-300:]}"
        return result
    measured_s = data["duration_us"] / 1e6
    result.duration_s = measured_s
    result.requests = int(data["requests"])
    result.rps = result.requests / measured_s if measured_s > 0 else 0.0
    result.latency_ms = {k: v / 1000 for k, v in data["latency_us"].items()}
    result.errors = {k: int(v) for k, v in data["errors"].items()}
    result.non200 = int(data["non200"])
    result.non200_by_status = {str(k): int(v) for k, v in data["non200_by_status"].items()}
    # CPU: ticks over wall time of the load generator process (includes its ~ms of start/stop).
    srv_s = (srv1 - srv0) / CLK_TCK
    result.server_cpu_pct = 100.0 * srv_s / wall
    load_s = usage.ru_utime + usage.ru_stime
    result.loadgen_cpu_pct = 100.0 * load_s / wall
    # Noise: task time on the pinned cores that is neither the server nor the load generator (other
    # sessions, daemons), plus steal. Kernel softirq work for loopback TCP is not counted as noise.
    # /proc/stat is tick-sampled while rusage is exact, so on a core that is mostly idle but wakes
    # often (the load core under a slow server) "other" reads high spuriously; on a saturated core
    # (the server's) it is reliable. When server and load share cores, one figure covers them all.
    for role, ours in (("server", srv_s), ("load", load_s)):
        d = {k: cores1[role][k] - cores0[role][k] for k in cores0[role]}
        if shared:
            d = {k: cores1["server"][k] - cores0["server"][k] for k in cores0["server"]}
            ours = srv_s + load_s
        other = max(0.0, d["task"] / CLK_TCK - ours) + d["steal"] / CLK_TCK
        ncores = len(server_cpus if shared or role == "server" else load_cpus)
        result.other_load_pct[role] = 100.0 * other / wall / ncores
        busy = d["task"] + d["irq"] + d["steal"]
        result.core_busy_pct[role] = 100.0 * busy / d["total"] if d["total"] else 0.0
        result.core_irq_pct[role] = 100.0 * d["irq"] / d["total"] * ncores if d["total"] else 0.0
    return result


def progress(n: int, total: int, r: RunResult, label: str) -> None:
    if r.failure:
        log(f"[{n}/{total}] {r.server:<21} {label}: FAILED {r.failure}")
        return
    lat = r.latency_ms
    bad = r.non200 + sum(v for k, v in r.errors.items() if k != "status")
    log(
        f"[{n}/{total}] {r.server:<21} {label}: "
        f"{fmt_int(r.rps):>8} req/s  p50 {lat['p50']:.2f} ms  p99 {lat['p99']:.2f} ms  "
        f"max {lat['max']:.1f} ms  cpu {r.server_cpu_pct:.0f}%  rss {r.server_rss_mb:.1f} MB  "
        f"load {r.loadgen_cpu_pct:.0f}%  "
        f"noise {r.other_load_pct.get('server', 0):.0f}/{r.other_load_pct.get('load', 0):.0f}%"
        + (
            f"  ERRORS non200={r.non200} {r.non200_by_status} socket={r.errors}"
            if bad or r.errors.get("status")
            else ""
        )
    )


# --------------------------------------------------------------------------------------------
# Summary and output
# --------------------------------------------------------------------------------------------


def summarize(runs: Sequence[RunResult]) -> dict[str, Any]:
    measured = [r for r in runs if r.repetition > 0 and r.failure is None]
    if not measured:
        return {"repetitions": 0}
    rps = [r.rps for r in measured]
    med_rps = statistics.median(rps)

    def med(get: Callable[[RunResult], float]) -> float:
        return float(statistics.median(get(r) for r in measured))

    return {
        "repetitions": len(measured),
        "connections": measured[0].connections,
        "rps": med_rps,
        "rps_all": rps,
        "rps_spread_pct": 100.0 * (max(rps) - min(rps)) / med_rps if med_rps else 0.0,
        "latency_ms": {
            k: float(statistics.median(r.latency_ms.get(k, 0.0) for r in measured))
            for k in ("p50", "p90", "p99", "max")
        },
        "server_cpu_pct": med(lambda r: r.server_cpu_pct),
        "server_core_irq_pct": med(lambda r: r.core_irq_pct.get("server", 0.0)),
        "server_rss_mb": med(lambda r: r.server_rss_mb),
        "loadgen_cpu_pct": med(lambda r: r.loadgen_cpu_pct),
        # Worst run's share of each pinned core taken by other processes (or steal).
        "noise_pct_max": {
            "server_core": max(r.other_load_pct.get("server", 0.0) for r in measured),
            "load_core": max(r.other_load_pct.get("load", 0.0) for r in measured),
        },
        "core_busy_pct_max": {
            "server_core": max(r.core_busy_pct.get("server", 0.0) for r in measured),
            "load_core": max(r.core_busy_pct.get("load", 0.0) for r in measured),
        },
        "core_busy_pct": {
            "server_core": med(lambda r: r.core_busy_pct.get("server", 0.0)),
            "load_core": med(lambda r: r.core_busy_pct.get("load", 0.0)),
        },
        "non200": sum(r.non200 for r in runs if r.repetition > 0),
        "socket_errors": sum(
            sum(v for k, v in r.errors.items() if k != "status") for r in runs if r.repetition > 0
        ),
        "all_ok": all(r.ok for r in runs if r.repetition > 0),
    }


def _status(s: dict[str, Any], *, expect_saturation: bool = True) -> str:
    if not s["all_ok"]:
        return "ERRORS"
    notes = []
    if s["loadgen_cpu_pct"] > 85:
        notes.append("load generator near its core's limit")
    elif s["core_busy_pct_max"]["load_core"] > 90:
        # The load generator has headroom but others took the rest of its core: the server was
        # starved of load.
        notes.append("load core saturated by others")
    if s["noise_pct_max"]["server_core"] > 10:
        notes.append("noisy server core")
    if expect_saturation and s["core_busy_pct"]["server_core"] < 85 and not notes:
        # The server's core idled: the load did not keep it busy (load generator bound, or
        # contention this VM does not report).
        notes.append("server core not saturated")
    return "ok" + (f" ({'; '.join(notes)})" if notes else "")


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def print_rows(rows: list[list[str]], right: Callable[[int], bool]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        cells = [
            c.rjust(w) if right(j) else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        log(("  " + "  ".join(cells)).rstrip())
        if i == 0:
            log("  " + "  ".join("-" * w for w in widths))


SUMMARY_COLS = [
    "server", "req/s", "spread", "p50 ms", "p99 ms", "max ms", "cpu%", "core%", "rss MB",
    "load cpu%", "errors", "noise% s/l", "status",
]  # fmt: skip


def summary_row(name: str, s: dict[str, Any], *, expect_saturation: bool = True) -> list[str]:
    lat = s["latency_ms"]
    return [
        name,
        fmt_int(s["rps"]),
        f"±{s['rps_spread_pct'] / 2:.0f}%",
        f"{lat['p50']:.2f}",
        f"{lat['p99']:.2f}",
        f"{lat['max']:.1f}",
        f"{s['server_cpu_pct']:.0f}",
        f"{s['core_busy_pct']['server_core']:.0f}",
        f"{s['server_rss_mb']:.1f}",
        f"{s['loadgen_cpu_pct']:.0f}",
        str(s["non200"] + s["socket_errors"]),
        f"{s['noise_pct_max']['server_core']:.0f}/{s['noise_pct_max']['load_core']:.0f}",
        _status(s, expect_saturation=expect_saturation),
    ]


def print_main_tables(report: dict[str, Any]) -> None:
    for wname, per_server in report["summary"].items():
        workload = WORKLOADS[wname]
        log(f"\n== {wname}: {workload.description}")
        if workload.skip:
            log(f"  SKIPPED for every server: {workload.skip}")
            continue
        if not per_server:
            log("  no selected server serves it (--servers)")
            continue
        rows = [SUMMARY_COLS]
        for name, s in per_server.items():
            if "skipped" in s:
                rows.append([name, *["-"] * 11, f"SKIPPED: {s['skipped']}"[:110]])
            elif "failure" in s or not s.get("repetitions"):
                rows.append([name, *["-"] * 11, f"FAILED: {s.get('failure', 'no successful run')}"[:110]])
            else:
                rows.append(summary_row(name, s))
        print_rows(rows, lambda j: 0 < j < len(SUMMARY_COLS) - 1)
        for label, value in report["ratios"].get(wname, {}).items():
            log(f"  {label}: " + (f"{value:.2f}x" if value is not None else "n/a"))


def print_sweep(sweep: dict[str, Any]) -> None:
    levels = sweep["connections"]
    log(f"\n== concurrency sweep ({HEADLINE}): req/s and p99 ms by keep-alive connections")
    rows = [["server", *[f"c={c} req/s" for c in levels], *[f"c={c} p99" for c in levels]]]
    for name, per_level in sweep["servers"].items():
        rps, p99 = [], []
        for c in levels:
            s = per_level.get(str(c), {})
            rps.append(fmt_int(s["rps"]) if s.get("repetitions") else "-")
            p99.append(f"{s['latency_ms']['p99']:.2f}" if s.get("repetitions") else "-")
        rows.append([name, *rps, *p99])
    print_rows(rows, lambda j: j > 0)
    log("  (one connection measures latency, not capacity: the server idles between requests)")


def print_workers(workers: dict[str, Any]) -> None:
    log(f"\n== --workers scaling ({HEADLINE}, {workers['connections']} connections): {workers['layout']}")
    rows = [[*SUMMARY_COLS[:-1], "scaling", "status"]]
    base = None
    for n, s in workers["results"].items():
        if not s.get("repetitions"):
            rows.append(
                [f"workers={n}", *["-"] * 12, f"FAILED: {s.get('failure', 'no successful run')}"[:90]]
            )
            continue
        base = base or s["rps"]
        row = summary_row(f"workers={n}", s, expect_saturation=False)
        rows.append([*row[:-1], f"{s['rps'] / base:.2f}x", row[-1]])
    print_rows(rows, lambda j: 0 < j < len(SUMMARY_COLS))


def print_idle(idle: dict[str, Any]) -> None:
    log("\n== idle SSE streams (mcp_fast, JWT sessions, one GET stream per session; bench/idle_streams.py)")
    if idle.get("failure"):
        log(f"  FAILED: {idle['failure']}")
        return
    rows = [["streams", "RSS before MiB", "RSS after MiB", "KiB per stream"]]
    for r in idle["results"]:
        rows.append([
            fmt_int(r["streams"]), f"{r['rss_before_kib'] / 1024:.1f}", f"{r['rss_after_kib'] / 1024:.1f}",
            f"{r['kib_per_stream']:.2f}",
        ])  # fmt: skip
    print_rows(rows, lambda j: True)


def print_blocking(blocking: dict[str, Any]) -> None:
    log(
        f"\n== blocking: a ping on 1 connection while {BLOCKING_CALLS} plain-def calls sleep "
        f"{BLOCK_SECONDS * 1000:g} ms each (mcp_fast, default flags; goal p99 < 5 ms)"
    )
    if blocking.get("failure"):
        log(f"  FAILED: {blocking['failure']}")
        return
    lat = blocking.get("latency_ms", {})
    rows = [["ping req/s", "p50 ms", "p99 ms", "max ms", "sleeping calls done"]]
    rows.append([
        fmt_int(blocking.get("rps", 0)), f"{lat.get('p50', float('nan')):.2f}", f"{lat.get('p99', float('nan')):.2f}",
        f"{lat.get('max', float('nan')):.1f}", fmt_int(blocking.get("blocking_calls_done", 0)),
    ])  # fmt: skip
    print_rows(rows, lambda j: True)


def print_legend() -> None:
    log("\n  cpu%: the server's processes (utime+stime, which here includes the softirq work of its own")
    log("  sends); core%: its core(s) busy in all (any process, irq, steal): near 100 means saturated.")
    log("  spread: half the max-min range of req/s over repetitions. errors: non-200 responses")
    log("  plus socket errors. noise% s/l: worst run's share of the server / load core taken by other")
    log("  processes or steal. Server-core noise above ~10% makes a row suspect; load-core noise matters")
    log("  only when that core is saturated (flagged), and reads high spuriously when it is mostly idle.")


# --------------------------------------------------------------------------------------------
# Chart (hand-written SVG: no plotting dependency)
# --------------------------------------------------------------------------------------------

FAMILY_COLORS = {
    "mcp_fast": "#d9480f",
    "official_sdk": "#1971c2",
    "fastmcp": "#2f9e44",
    "raw_ceiling": "#868e96",
}


def _log_x(value: float, lo: float, hi: float, x0: float, width: float) -> float:
    value = max(value, lo)
    return x0 + width * (math.log10(value) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))


def render_svg(report: dict[str, Any]) -> str:
    """req/s per server per workload (horizontal bars, log scale), and the sweep if it ran."""
    esc = html.escape
    rows: list[tuple[str, list[tuple[str, str, float | None, str]]]] = []
    for wname, per_server in report["summary"].items():
        workload = WORKLOADS[wname]
        if workload.skip:
            rows.append((wname, [("", "", None, f"skipped: {workload.skip}")]))
            continue
        bars = []
        for name, s in per_server.items():
            family = SERVERS[name].family
            if "skipped" in s:
                bars.append((name, family, None, f"skipped: {s['skipped']}"))
            elif not s.get("repetitions"):
                bars.append((name, family, None, f"FAILED: {s.get('failure', 'no successful run')}"))
            else:
                lat = s["latency_ms"]
                bars.append((name, family, s["rps"], f"{fmt_int(s['rps'])}/s  p99 {lat['p99']:.1f} ms"))
        rows.append((wname, bars))
    values = [v for _, bars in rows for _, _, v, _ in bars if v]
    lo = 10 ** math.floor(math.log10(min(values))) if values else 100.0
    hi = 10 ** math.ceil(math.log10(max(values) * 1.05)) if values else 100000.0
    label_w, chart_w, bar_h, gap = 330, 560, 16, 14
    x0 = label_w
    width = label_w + chart_w + 230
    y = 70
    parts: list[str] = []
    for wname, bars in rows:
        parts.append(f'<text x="10" y="{y + 12}" class="w">{esc(wname)}</text>')
        y += 20
        for name, family, value, text in bars:
            parts.append(f'<text x="{x0 - 8}" y="{y + 12}" class="s" text-anchor="end">{esc(name)}</text>')
            if value:
                x1 = _log_x(value, lo, hi, x0, chart_w)
                color = FAMILY_COLORS.get(family, "#495057")
                parts.append(
                    f'<rect x="{x0}" y="{y}" width="{x1 - x0:.1f}" height="{bar_h}" fill="{color}"/>'
                )
                parts.append(f'<text x="{x1 + 6:.1f}" y="{y + 12}" class="v">{esc(text)}</text>')
            else:
                parts.append(f'<text x="{x0 + 6}" y="{y + 12}" class="n">{esc(text[:120])}</text>')
            y += bar_h + 4
        y += gap
    grid = []
    decade = lo
    while decade <= hi * 1.0001:
        for mult in (1, 2, 5):
            v = decade * mult
            if v > hi * 1.0001:
                break
            x = _log_x(v, lo, hi, x0, chart_w)
            strong = mult == 1
            grid.append(
                f'<line x1="{x:.1f}" y1="60" x2="{x:.1f}" y2="{y - gap}" '
                f'stroke="{"#adb5bd" if strong else "#e9ecef"}" stroke-width="1"/>'
            )
            if strong or mult == 5:
                grid.append(
                    f'<text x="{x:.1f}" y="{y - gap + 14}" class="a" text-anchor="middle">{fmt_int(v)}</text>'
                )
        decade *= 10
    meta = report["meta"]
    title = (
        f"mcp_fast vs peers: requests/s (log scale), {meta['args']['connections']} connections, "
        f"server on cpu{cpu_list(meta['server_cpus'])}, load on cpu{cpu_list(meta['load_cpus'])}"
    )
    sub = (
        f"{meta['started']}  {meta['host']['cpu_model']}  git {meta.get('git') or '?'}  "
        f"{meta['args']['duration']:g} s x {meta['args']['repetitions']} reps (median)"
    )
    notes = _footer_lines(report)
    for line in notes:
        parts.append(f'<text x="10" y="{y + 16}" class="m">{esc(line)}</text>')
        y += 16
    height = y + 30
    sweep_svg = ""
    if report.get("sweep"):
        sweep_svg, sweep_h = _sweep_svg(report["sweep"], y + 30, width)
        height = y + 30 + sweep_h
    legend = []
    lx = x0
    for family, color in FAMILY_COLORS.items():
        legend.append(f'<rect x="{lx}" y="44" width="12" height="12" fill="{color}"/>')
        legend.append(f'<text x="{lx + 16}" y="54" class="s">{family}</text>')
        lx += 130
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
            "<style>.t{font-size:15px;font-weight:bold}.m{font-size:11px;fill:#495057}"
            ".w{font-size:13px;font-weight:bold}.s{font-size:12px}.v{font-size:11px}"
            ".n{font-size:11px;fill:#868e96;font-style:italic}.a{font-size:10px;fill:#495057}</style>",
            f'<rect width="{width}" height="{height}" fill="white"/>',
            f'<text x="10" y="20" class="t">{esc(title)}</text>',
            f'<text x="10" y="36" class="m">{esc(sub)}</text>',
            *legend,
            *grid,
            *parts,
            sweep_svg,
            "</svg>",
        ]
    )


def _footer_lines(report: dict[str, Any]) -> list[str]:
    """The workers scaling and idle-stream figures, as text under the bars."""
    lines = []
    workers = report.get("workers") or {}
    if workers.get("results"):
        cells = [
            f"workers={n}: {fmt_int(s['rps'])}/s"
            for n, s in workers["results"].items()
            if s.get("repetitions")
        ]
        lines.append(f"mcp_fast --workers ({HEADLINE}; server and wrk share all cores): " + ", ".join(cells))
    idle = report.get("idle_streams") or {}
    if idle.get("results"):
        cells = [
            f"{fmt_int(r['streams'])} streams: {r['kib_per_stream']:.2f} KiB each" for r in idle["results"]
        ]
        lines.append("mcp_fast idle SSE streams, RSS per stream: " + ", ".join(cells))
    blocking = report.get("blocking") or {}
    if blocking.get("latency_ms"):
        lines.append(
            f"ping p99 while {BLOCKING_CALLS} plain-def calls sleep {BLOCK_SECONDS * 1000:g} ms: "
            f"{blocking['latency_ms']['p99']:.2f} ms"
        )
    return lines


def _sweep_svg(sweep: dict[str, Any], top: float, width: float) -> tuple[str, float]:
    """req/s against connections (log-log), one line per server."""
    levels = sweep["connections"]
    series = {
        name: [(c, per[str(c)]["rps"]) for c in levels if per.get(str(c), {}).get("repetitions")]
        for name, per in sweep["servers"].items()
    }
    values = [v for pts in series.values() for _, v in pts]
    if not values or len(levels) < 2:
        return "", 0
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values) * 1.05))
    x0, w, h = 110.0, width - 330.0, 240.0
    y0 = top + 30
    cmin, cmax = min(levels), max(levels)

    def px(c: float) -> float:
        return x0 + w * (math.log10(c) - math.log10(cmin)) / (math.log10(cmax) - math.log10(cmin) or 1)

    def py(v: float) -> float:
        return y0 + h - h * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    out = [
        f'<text x="10" y="{top + 14}" class="w">concurrency sweep ({HEADLINE}): req/s (log) by connections</text>'
    ]
    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#adb5bd"/>')
    decade = lo
    while decade <= hi * 1.0001:
        yy = py(decade)
        out.append(f'<line x1="{x0}" y1="{yy:.1f}" x2="{x0 + w}" y2="{yy:.1f}" stroke="#e9ecef"/>')
        out.append(
            f'<text x="{x0 - 6}" y="{yy + 4:.1f}" class="a" text-anchor="end">{fmt_int(decade)}</text>'
        )
        decade *= 10
    for c in levels:
        out.append(f'<text x="{px(c):.1f}" y="{y0 + h + 14}" class="a" text-anchor="middle">{c}</text>')
    ly = y0
    for name, pts in series.items():
        color = FAMILY_COLORS.get(SERVERS[name].family, "#495057")
        if pts:
            path = " ".join(
                f"{'M' if i == 0 else 'L'}{px(c):.1f},{py(v):.1f}" for i, (c, v) in enumerate(pts)
            )
            out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
            for c, v in pts:
                out.append(f'<circle cx="{px(c):.1f}" cy="{py(v):.1f}" r="3" fill="{color}"/>')
        out.append(f'<rect x="{x0 + w + 20}" y="{ly}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{x0 + w + 36}" y="{ly + 10}" class="s">{html.escape(name)}</text>')
        ly += 18
    return "\n".join(out), h + 70


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


def parse_list(text: str | None, default: Sequence[int]) -> list[int]:
    if text is None:
        return list(default)
    if text.strip().lower() in ("", "none", "off", "0"):
        return []
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark mcp_fast against its peers (see bench/README.md).")
    p.add_argument("--duration", type=int, default=10, help="seconds per measured run (default 10)")
    p.add_argument("--connections", type=int, default=50, help="keep-alive connections (default 50)")
    p.add_argument(
        "--repetitions", type=int, default=3, help="interleaved repetitions; medians reported (default 3)"
    )
    p.add_argument(
        "--warmup", type=int, default=3, help="warm-up seconds per server and workload (default 3)"
    )
    p.add_argument(
        "--threads", type=int, default=1, help="load generator threads (default 1: it has one core)"
    )
    p.add_argument(
        "--timeout", type=float, default=5.0, help="wrk per-request timeout in seconds (default 5)"
    )
    p.add_argument(
        "--quick", action="store_true", help="everything in ~2 minutes: 2 s runs, 1 repetition, 1 s warm-up"
    )
    p.add_argument("--servers", default=",".join(SERVERS), help=f"comma list from {','.join(SERVERS)}")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list from {','.join(WORKLOADS)}")
    p.add_argument(
        "--sweep",
        nargs="?",
        const="1,10,50,200",
        default="1,10,50,200",
        help=f"connection counts for the {HEADLINE} sweep (default 1,10,50,200; 'none' skips it)",
    )
    p.add_argument(
        "--workers",
        default="1,2",
        help="mcp_fast --workers counts for the scaling figure (default 1,2; 'none' skips it). "
        "These runs give the server and the load generator all cores (see README)",
    )
    p.add_argument(
        "--no-blocking",
        dest="blocking",
        action="store_false",
        help="skip the blocking figure (a ping's p99 while plain-def calls sleep)",
    )
    p.add_argument(
        "--idle-streams",
        default="1000,10000",
        help="open idle SSE streams counts for the memory test (default 1000,10000; 'none' skips it)",
    )
    p.add_argument(
        "--resumption",
        type=int,
        default=50,
        help="rounds of the resumption figure (bench/resumption.py: a stream resumed with "
        "Last-Event-ID on the instance that wrote it and on another of a --redis fleet; default 50, 0 skips it)",
    )
    p.add_argument("--server-cpu", type=int, default=0, help="core the servers are pinned to (default 0)")
    p.add_argument("--load-cpu", type=int, default=1, help="core the load generator is pinned to (default 1)")
    p.add_argument("--project-python", default=sys.executable, help="interpreter for python -m mcp_fast")
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json")
    p.add_argument("--chart", type=Path, default=RESULTS_DIR / "latest.svg", help="SVG chart path")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.repetitions, args.warmup = 2, 1, 1
    args.servers = [s for s in args.servers.split(",") if s]
    args.workloads = [w for w in args.workloads.split(",") if w]
    for s in args.servers:
        if s not in SERVERS:
            p.error(f"unknown server {s!r}; known: {', '.join(SERVERS)}")
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; known: {', '.join(WORKLOADS)}")
    try:
        args.sweep = parse_list(args.sweep, [])
        args.workers = parse_list(args.workers, [])
        args.idle_streams = parse_list(args.idle_streams, [])
    except ValueError as exc:
        p.error(f"not a comma list of integers: {exc}")
    if args.connections < args.threads or any(c < args.threads for c in args.sweep):
        p.error("connections must be >= --threads")
    return args


def check_cpus(server_cpu: int, load_cpu: int) -> None:
    available = os.sched_getaffinity(0)
    missing = {server_cpu, load_cpu} - available
    if missing:
        raise SetupError(f"CPU(s) {sorted(missing)} not available (have {sorted(available)})")
    if server_cpu == load_cpu:
        log("WARNING: server and load generator share a core; figures are not comparable")
    if shutil.which("taskset") is None:
        raise SetupError("taskset not found (Debian package util-linux)")


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # same clean-up path as Ctrl-C: stop the servers, write partial results


class Bench:
    """One benchmark run: its settings, tools, started servers and every run's result."""

    def __init__(self, args: argparse.Namespace, pythons: Pythons, tools: dict[str, str]) -> None:
        self.args = args
        self.pythons = pythons
        self.tools = tools
        self.servers: dict[str, RunningServer] = {}
        self.runs: list[RunResult] = []
        self.failures: list[str] = []
        self.load = LoadSettings(args.connections, args.threads, args.timeout, (args.load_cpu,))
        self.redis: contextlib.ExitStack | None = None  # the redis-server of --redis servers

    def need_tool(self, loadgen: str) -> None:
        if loadgen not in self.tools:
            self.tools[loadgen] = ensure_tool(loadgen, "wrk" if loadgen == "wrk" else "nghttp2-client")

    def start_servers(self, names: Sequence[str], workloads: Sequence[Workload]) -> None:
        global redis_url
        if any(SERVERS[n].redis for n in names) and self.redis is None:
            sys.path.insert(0, str(BENCH))
            import resumption  # bench/resumption.py: a throw-away redis-server

            self.redis = contextlib.ExitStack()
            redis_url = self.redis.enter_context(resumption.running_redis(str(self.args.load_cpu)))
            log(f"[setup] redis-server for --redis servers at {redis_url} on cpu{self.args.load_cpu}")
        # Launched together (their imports overlap), then waited for and checked one by one.
        launched = [launch_server(SERVERS[n], self.pythons, (self.args.server_cpu,)) for n in names]
        for server in launched:
            self.servers[server.name] = server
            wait_listening(server)
            if server.failure is None:
                check_server(server, workloads)
            if server.failure:
                log(f"[setup] {server.name}: FAILED {server.failure}")
                tail = server.log_tail()
                if tail:
                    log("        " + tail.replace("\n", "\n        "))
                stop_server(server)
                continue
            checks = ", ".join(
                f"{w} {c.detail if c.ok else 'FAILED: ' + c.detail}" for w, c in server.checks.items()
            )
            log(
                f"[setup] {server.name}: up on port {server.port} in {server.startup_s:.2f}s, "
                f"idle RSS {server.idle_rss_kb / 1024:.1f} MB; checks: {checks or '-'}"
            )

    def pair_state(self, workload: Workload, server: RunningServer) -> tuple[str, str]:
        """('run', '') or ('skip', reason) or ('fail', reason) for one (workload, server)."""
        if server.failure:
            return "fail", server.failure
        if workload.skip:
            return "skip", workload.skip
        check = server.checks.get(workload.name)
        if check is None:
            return "fail", "not checked"
        if check.ok:
            return "run", ""
        if server.name in workload.pending:
            return "skip", f"{workload.pending[server.name]} (check: {check.detail[:120]})"
        return "fail", f"check: {check.detail}"

    def measure(
        self,
        pairs: Sequence[tuple[Workload, RunningServer, int]],
        *,
        phase: str,
        warmup: float,
        load_cpus: tuple[int, ...] | None = None,
    ) -> None:
        """Warm up each (workload, server, connections), then interleaved repetitions."""
        requests = {(w.name, s.name): write_request_file(w, s) for w, s, _ in pairs}
        base = self.load if load_cpus is None else LoadSettings(
            self.load.connections, self.load.threads, self.load.timeout_s, load_cpus
        )  # fmt: skip

        def one(w: Workload, s: RunningServer, conns: int, rep: int, duration: float) -> RunResult:
            load = LoadSettings(conns, base.threads, base.timeout_s, base.load_cpus)
            r = run_load(
                self.tools, s, w, requests[(w.name, s.name)], phase=phase, repetition=rep,
                duration=duration, load=load,
            )  # fmt: skip
            self.runs.append(r)
            return r

        if warmup > 0:
            for w, s, conns in pairs:
                r = one(w, s, conns, 0, warmup)
                log(
                    f"[warm-up] {s.name:<21} {w.name} c={conns}: {fmt_int(r.rps)} req/s"
                    + (f"  FAILED {r.failure}" if r.failure else "")
                )
        total = len(pairs) * self.args.repetitions
        n = 0
        for rep in range(1, self.args.repetitions + 1):
            for w, s, conns in pairs:
                n += 1
                r = one(w, s, conns, rep, self.args.duration)
                progress(n, total, r, f"{w.name} c={conns} rep {rep}")

    def post_check(self, pairs: Sequence[tuple[Workload, RunningServer, int]]) -> None:
        """The same correctness check after the load: a server that broke under load fails."""
        for w, s, _ in {(w.name, s.name): (w, s, c) for w, s, c in pairs}.values():
            if not s.alive():
                s.checks[w.name] = CheckResult(False, f"died under load (exit {s.process.returncode})")
                continue
            after = check_pair(w, s.spec, s.port, s.session_id)
            if not after.ok:
                s.checks[w.name] = CheckResult(False, f"after the load: {after.detail}")
                log(f"[check] {s.name} {w.name}: FAILED after the load: {after.detail}")


def run_main(bench: Bench, workloads: Sequence[Workload]) -> dict[str, dict[str, dict[str, Any]]]:
    args = bench.args
    pairs: list[tuple[Workload, RunningServer, int]] = []
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for w in workloads:
        summary[w.name] = {}
        for name in args.servers:
            if w.name not in SERVERS[name].workloads:
                continue
            server = bench.servers[name]
            state, reason = bench.pair_state(w, server)
            if state == "run":
                try:
                    bench.need_tool(w.loadgen)
                except SetupError as exc:
                    state, reason = "fail", str(exc)
            if state == "run":
                pairs.append((w, server, args.connections))
            elif state == "skip":
                summary[w.name][name] = {"skipped": reason}
                log(f"[skip] {name} {w.name}: {reason}")
            else:
                summary[w.name][name] = {"failure": reason}
                bench.failures.append(f"{name} {w.name}: {reason}")
    bench.measure(pairs, phase="main", warmup=args.warmup)
    bench.post_check(pairs)
    for w, server, _ in pairs:
        runs = [
            r for r in bench.runs if r.phase == "main" and r.server == server.name and r.workload == w.name
        ]
        s = summarize(runs)
        check = server.checks[w.name]
        s["response_bytes"] = check.response_bytes
        if not check.ok:
            s["failure"] = check.detail
            bench.failures.append(f"{server.name} {w.name}: {check.detail}")
        summary[w.name][server.name] = s
    return summary


def compute_ratios(summary: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    ratios: dict[str, dict[str, float | None]] = {}
    for wname, per_server in summary.items():
        measured = {n: s for n, s in per_server.items() if s.get("repetitions")}
        first_of: dict[str, tuple[str, dict[str, Any]]] = {}
        for n, s in measured.items():
            first_of.setdefault(SERVERS[n].family, (n, s))
        ratios[wname] = {}
        for num, den in RATIOS:
            if den not in first_of:
                continue
            b_name, b = first_of[den]
            for a_name, a in measured.items():
                if SERVERS[a_name].family == num:
                    ratios[wname][f"{a_name} / {b_name}"] = a["rps"] / b["rps"] if b["rps"] else None
        for a_name, b_name in SERVER_RATIOS:
            if a_name in measured and b_name in measured:
                a, b = measured[a_name], measured[b_name]
                ratios[wname][f"{a_name} / {b_name}"] = a["rps"] / b["rps"] if b["rps"] else None
    return ratios


def compute_transport_ratios(summary: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """mcp_fast over HTTP/2 and TLS against the same flags over cleartext HTTP/1.1 (the headline
    workload on TRANSPORT_BASE), same run."""
    base = summary.get(HEADLINE, {}).get(TRANSPORT_BASE, {})
    if not base.get("repetitions") or not base.get("rps"):
        return {}
    out: dict[str, dict[str, float]] = {}
    for wname in TRANSPORT_RATIOS:
        for name, s in summary.get(wname, {}).items():
            if name in TRANSPORT_SERVERS and s.get("repetitions"):
                out[wname] = {"server": name, "rps": s["rps"], "ratio": s["rps"] / base["rps"],  # type: ignore[dict-item]
                              "p99_ms": s["latency_ms"]["p99"]}  # fmt: skip
    return out


def print_transport_ratios(ratios: dict[str, dict[str, float]]) -> None:
    if not ratios:
        return
    log(f"\n== mcp_fast over HTTP/2 and TLS, against {TRANSPORT_BASE} over cleartext HTTP/1.1 (same run)")
    rows = [["workload", "server", "req/s", "x HTTP/1.1", "p99 ms"]]
    for wname, r in ratios.items():
        rows.append([wname, str(r["server"]), fmt_int(r["rps"]), f"{r['ratio']:.2f}x", f"{r['p99_ms']:.2f}"])
    print_rows(rows, lambda j: j > 1)


def run_sweep(bench: Bench, main_summary: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any] | None:
    args = bench.args
    headline = WORKLOADS[HEADLINE]
    ran = [
        n for n, s in main_summary.get(HEADLINE, {}).items() if s.get("repetitions") and "failure" not in s
    ]
    if not args.sweep or not ran:
        return None
    # Every level runs here, the main phase's one too: a sweep is read across its levels, so they
    # share the same stretch of the machine's (noisy) time. Servers are already warm.
    pairs = [(headline, bench.servers[n], c) for c in args.sweep for n in ran]
    log(f"\n[sweep] {HEADLINE}: connections {args.sweep} x {ran}")
    bench.measure(pairs, phase="sweep", warmup=0.0)
    out: dict[str, Any] = {"connections": args.sweep, "servers": {}}
    for n in ran:
        out["servers"][n] = {}
        for c in args.sweep:
            runs = [r for r in bench.runs if r.phase == "sweep" and r.server == n and r.connections == c]
            out["servers"][n][str(c)] = summarize(runs)
            if not out["servers"][n][str(c)].get("all_ok", False):
                bench.failures.append(f"sweep {n} c={c}: errors or no successful run")
    return out


def run_workers(bench: Bench) -> dict[str, Any] | None:
    args = bench.args
    counts = args.workers
    all_cpus = tuple(sorted(os.sched_getaffinity(0)))
    if not counts or "mcp_fast" not in args.servers or HEADLINE not in args.workloads:
        return None
    if len(all_cpus) < 2:
        log("[workers] skipped: one CPU")
        return {"skipped": "one CPU"}
    layout = (
        f"server (all its processes) and wrk both on cpus {cpu_list(all_cpus)}, unpinned between them: "
        "two workers cannot have a core to themselves while wrk has another. Compare rows with each "
        "other, not with the pinned tables"
    )
    log(f"\n[workers] {counts}: {layout}")
    base = SERVERS["mcp_fast"]
    results: dict[str, Any] = {}
    started: list[RunningServer] = []
    try:
        pairs = []
        for n in counts:
            spec = ServerSpec(
                name=f"mcp_fast_workers{n}",
                family="mcp_fast",
                description=f"{base.description} --workers {n}",
                command=lambda py, port, n=n: [*base.command(py, port), "--workers", str(n)],
                workloads=(HEADLINE,),
                env=base.env,
                session_workloads=base.session_workloads,  # the headline's session: any worker checks it
            )
            server = launch_server(spec, bench.pythons, all_cpus)
            started.append(server)
            wait_listening(server)
            if server.failure is None:
                check_server(server, [WORKLOADS[HEADLINE]])
                check = server.checks.get(HEADLINE)
                if check is None or not check.ok:
                    server.failure = f"check: {check.detail if check else '-'}"
            if server.failure:
                log(f"[workers] {spec.name}: FAILED {server.failure}")
                results[str(n)] = {"failure": server.failure}
                bench.failures.append(f"{spec.name}: {server.failure}")
                continue
            time.sleep(0.5)  # the forked workers bind after the parent
            pairs.append((WORKLOADS[HEADLINE], server, args.connections))
        bench.measure(pairs, phase="workers", warmup=args.warmup, load_cpus=all_cpus)
        for _, server, _ in pairs:
            n = server.name.removeprefix("mcp_fast_workers")
            runs = [r for r in bench.runs if r.phase == "workers" and r.server == server.name]
            results[n] = summarize(runs)
            results[n]["processes"] = len(process_tree(server.pid))
            if not results[n].get("all_ok", False):
                bench.failures.append(f"{server.name}: errors or no successful run")
    finally:
        for server in started:
            stop_server(server)
    ordered = {str(n): results[str(n)] for n in counts if str(n) in results}
    return {"layout": layout, "cpus": list(all_cpus), "connections": args.connections, "results": ordered}


def run_resumption(bench: Bench) -> dict[str, Any] | None:
    if not bench.args.resumption or "mcp_fast" not in bench.args.servers:
        return None
    sys.path.insert(0, str(BENCH))
    import resumption  # bench/resumption.py

    log(
        f"\n[resumption] {bench.args.resumption} rounds, two --redis instances pinned to cpu{bench.args.server_cpu}"
    )
    try:
        result: dict[str, Any] = resumption.measure(
            bench.args.resumption, python=bench.pythons.project, cpus=str(bench.args.server_cpu)
        )
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        bench.failures.append(f"resumption: {exc!r}")
        return {"failure": repr(exc)}
    return result


def print_resumption(result: dict[str, Any]) -> None:
    log(
        "\n== resumption: GET with Last-Event-ID until the missed events are in "
        "(bench/resumption.py; 9 missed progress notifications)"
    )
    if result.get("failure"):
        log(f"  FAILED: {result['failure']}")
        return
    rows = [["resumed on", "median ms", "p90 ms", "min ms"]]
    for key, label in (
        ("same_instance", "the instance that wrote it (memory)"),
        ("other_instance", "another instance (Redis)"),
    ):
        r = result[key]
        rows.append([label, f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['min_ms']:.2f}"])
    print_rows(rows, lambda j: j > 0)


def run_idle_streams(bench: Bench) -> dict[str, Any] | None:
    counts = bench.args.idle_streams
    if not counts or "mcp_fast" not in bench.args.servers:
        return None
    sys.path.insert(0, str(BENCH))
    import idle_streams  # bench/idle_streams.py

    log(
        f"\n[idle streams] {counts} idle SSE streams on a fresh mcp_fast pinned to cpu{bench.args.server_cpu}"
    )
    results = []
    try:
        for count in counts:
            r = asyncio.run(
                idle_streams.measure(count, python=bench.pythons.project, cpus=str(bench.args.server_cpu))
            )
            log(
                f"[idle streams] {count:,}: RSS {r['rss_before_kib'] / 1024:.1f} -> "
                f"{r['rss_after_kib'] / 1024:.1f} MiB, {r['kib_per_stream']:.2f} KiB per stream"
            )
            results.append(r)
    except (OSError, RuntimeError, asyncio.IncompleteReadError) as exc:
        bench.failures.append(f"idle streams: {exc!r}")
        return {"failure": repr(exc), "results": results}
    return {"results": results}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    t_start = time.monotonic()
    try:
        check_cpus(args.server_cpu, args.load_cpu)
        tools = {"wrk": ensure_tool("wrk", "wrk")}
        peers_python = ensure_peers_venv()
    except (SetupError, subprocess.CalledProcessError) as exc:
        log(f"setup failed: {exc}")
        return 2
    pythons = Pythons(project=args.project_python, peers=peers_python)
    plan_workloads = [WORKLOADS[w] for w in args.workloads]
    # Only the servers some selected workload needs.
    args.servers = [n for n in args.servers if any(w.name in SERVERS[n].workloads for w in plan_workloads)]

    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "server_cpus": [args.server_cpu],
        "load_cpus": [args.load_cpu],
        "host": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "project_python": pythons.project,
            "cpu_count": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "loadavg_at_start": os.getloadavg(),
        },
        "wrk": tool_version(tools["wrk"], "-v"),
        "peer_versions": package_versions(
            peers_python,
            ["mcp", "fastmcp", "uvicorn", "uvloop", "httptools", "starlette", "pydantic", "orjson"],
        ),
        "project_versions": package_versions(pythons.project, ["uvloop", "orjson", "pydantic"]),
        "protocol_version": PROTOCOL_VERSION,
        "git": _git_describe(),
    }
    log(f"wrk: {meta['wrk']}; peers: {meta['peer_versions']}")
    log(
        f"plan: {len(args.servers)} servers, {len(plan_workloads)} workloads x {args.repetitions} reps, "
        f"{args.duration:g}s each, {args.connections} connections, warm-up {args.warmup:g}s; "
        f"servers on cpu{args.server_cpu}, load on cpu{args.load_cpu}; sweep {args.sweep or 'off'}; "
        f"workers {args.workers or 'off'}; idle streams {args.idle_streams or 'off'}"
    )

    bench = Bench(args, pythons, tools)
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    sweep = workers = idle = blocking = resumed = None
    interrupted = False
    try:
        bench.start_servers(args.servers, plan_workloads)
        summary = run_main(bench, plan_workloads)
        sweep = run_sweep(bench, summary) if HEADLINE in args.workloads else None
        for server in bench.servers.values():
            stop_server(server)
        workers = run_workers(bench)
        blocking = run_blocking(bench)
        resumed = run_resumption(bench)
        idle = run_idle_streams(bench)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping servers, writing partial results")
    finally:
        for server in bench.servers.values():
            stop_server(server)
        if bench.redis is not None:
            bench.redis.close()

    ratios = compute_ratios(summary)
    transport_ratios = compute_transport_ratios(summary)
    report: dict[str, Any] = {
        "meta": meta | {"elapsed_s": round(time.monotonic() - t_start, 1)},
        "ok": False,
        "interrupted": interrupted,
        "servers": {
            name: {
                "description": s.spec.description,
                "family": s.spec.family,
                "command": s.command,
                "port": s.port,
                "startup_s": round(s.startup_s, 3),
                "idle_rss_mb": round(s.idle_rss_kb / 1024, 2),
                "checks": {w: asdict(c) for w, c in s.checks.items()},
                "failure": s.failure,
                "log": str(s.log_path.relative_to(ROOT)),
            }
            for name, s in bench.servers.items()
        },
        "workloads": {
            w.name: {"description": w.description, "loadgen": w.loadgen, "skip": w.skip}
            for w in plan_workloads
        },
        "summary": summary,
        "ratios": ratios,
        "transport_ratios": transport_ratios,
        "sweep": sweep,
        "workers": workers,
        "blocking": blocking,
        "idle_streams": idle,
        "resumption": resumed,
        "runs": [asdict(r) | {"ok": r.ok} for r in bench.runs],
    }
    print_main_tables(report)
    print_transport_ratios(transport_ratios)
    if sweep:
        print_sweep(sweep)
    if workers and "results" in workers:
        print_workers(workers)
    if blocking:
        print_blocking(blocking)
    if resumed:
        print_resumption(resumed)
    if idle:
        print_idle(idle)
    print_legend()
    measured = [r for r in bench.runs if r.repetition > 0 and r.failure is None]
    noisy = [r for r in measured if r.other_load_pct.get("server", 0.0) > 10.0]
    if noisy:
        log(
            f"\n  WARNING: {len(noisy)} of {len(measured)} runs had >10% of the server core taken by other "
            "processes; the figures are unreliable, rerun on a quieter machine."
        )
    bad_runs = [r for r in bench.runs if r.repetition > 0 and not r.ok]
    ok = not interrupted and not bench.failures and not bad_runs
    report["ok"] = ok
    report["failures"] = bench.failures
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    args.chart.parent.mkdir(parents=True, exist_ok=True)
    args.chart.write_text(render_svg(report) + "\n")
    for failure in bench.failures:
        log(f"  FAILED: {failure}")
    log(
        f"\nwrote {_rel(args.output)} and {_rel(args.chart)} in {report['meta']['elapsed_s']:.0f}s"
        f"{'' if ok else '  (FAILURES: see above)'}"
    )
    return 0 if ok else 1


def _rel(path: Path) -> str:
    resolved = path.resolve()  # --output may be relative to the current directory
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _git_describe() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except OSError:
        return None
    head = out.stdout.strip()
    return (head + ("+dirty" if dirty.stdout.strip() else "")) or None


if __name__ == "__main__":
    sys.exit(main())
