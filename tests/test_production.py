"""Production features against real servers (issue 12): authorization as an OAuth 2.1 resource
server (RS256/ES256 JWTs signed by keys made here, a JWKS and an authorization server served
over HTTP by this test, opaque tokens through a token_verifier), RFC 9728 metadata, scopes, sessions
bound to their principal, rate limits, idempotency keys, CORS, forwarded addresses, probes,
Prometheus metrics (parsed by prometheus_client), access and audit logs, and the official `mcp`
client completing a session through its own OAuth support.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
from conftest import ROOT, RunningServer, free_port, stop_server, wait_for_port
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from prometheus_client.parser import text_string_to_metric_families

APP = "tests.apps.production_app:server"
SESSION_VERSION = "2025-11-25"


# -- keys, a JWKS and a small authorization server, served by the test ------------------------


@dataclass
class Keys:
    rsa: Any
    ec: Any
    other_rsa: Any  # a key the JWKS does not publish (unknown kid)


class AuthorizationServer:
    """The test's authorization server: its JWKS, RFC 8414 metadata, and a client_credentials
    token endpoint (for the official client), on a free port in a thread."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.jwks_fetches = 0
        self.token_requests: list[dict[str, list[str]]] = []
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys.rsa.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(keys.ec.public_key()))
        self.jwks = {
            "keys": [{**rsa_jwk, "kid": "rsa-1", "use": "sig"}, {**ec_jwk, "kid": "ec-1", "use": "sig"}]
        }
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/jwks.json":
                    outer.jwks_fetches += 1
                    self._json(200, outer.jwks)
                elif self.path == "/.well-known/oauth-authorization-server":
                    self._json(
                        200,
                        {
                            "issuer": outer.issuer,
                            "token_endpoint": f"{outer.issuer}/token",
                            "authorization_endpoint": f"{outer.issuer}/authorize",
                            "response_types_supported": ["code"],
                            "grant_types_supported": ["client_credentials"],
                            "token_endpoint_auth_methods_supported": [
                                "client_secret_basic",
                                "client_secret_post",
                            ],
                            "code_challenge_methods_supported": ["S256"],
                        },
                    )
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                outer.token_requests.append(form)
                basic = self.headers.get("Authorization", "")
                client = (
                    base64.b64decode(basic.split(" ", 1)[1]).decode() if basic.startswith("Basic ") else ""
                )
                if self.path != "/token" or client != "robot:s3cret":
                    self._json(401, {"error": "invalid_client"})
                    return
                resource = form.get("resource", [""])[0]
                token = outer.token(sub="robot", aud=resource, scope=form.get("scope", [""])[0])
                self._json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 300})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def token(
        self,
        *,
        sub: str = "alice",
        aud: str | list[str] = "",
        scope: str = "files:read",
        key: str = "rsa",
        issuer: str | None = None,
        expires_in: float = 300,
        kid: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        claims = {
            "sub": sub,
            "aud": aud,
            "iss": issuer or self.issuer,
            "iat": now,
            "exp": now + int(expires_in),
        }
        if scope:
            claims["scope"] = scope
        claims.update(extra or {})
        if key == "rsa":
            return jwt.encode(claims, self.keys.rsa, algorithm="RS256", headers={"kid": kid or "rsa-1"})
        if key == "ec":
            return jwt.encode(claims, self.keys.ec, algorithm="ES256", headers={"kid": kid or "ec-1"})
        if key == "other":
            return jwt.encode(claims, self.keys.other_rsa, algorithm="RS256", headers={"kid": kid or "rsa-9"})
        return jwt.encode(claims, "a-shared-secret-that-is-long-enough", algorithm="HS256")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP256R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@pytest.fixture(scope="module")
def issuer(keys: Keys) -> Iterator[AuthorizationServer]:
    server = AuthorizationServer(keys)
    try:
        yield server
    finally:
        server.close()


# -- servers ------------------------------------------------------------------------------------


Server = RunningServer


def launch(tmp: Path, *flags: str, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    log_path = tmp / f"server-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mcp_fast", APP, "--host", "127.0.0.1", "--port", str(port), *flags],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    wait_for_port("127.0.0.1", port, process)
    return Server(process, "127.0.0.1", port, log_path)


stop = stop_server


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory, issuer: AuthorizationServer) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("auth")
    port = free_port()
    flags = (
        "--port", str(port),
        "--auth-jwks", f"{issuer.issuer}/jwks.json",
        "--auth-issuer", issuer.issuer,
        "--public-url", f"http://127.0.0.1:{port}/mcp",
        "--auth-server", issuer.issuer,
        "--audit-log", str(tmp / "audit.log"),
        "--access-log", str(tmp / "access.log"),
    )  # fmt: skip
    log_path = tmp / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mcp_fast", APP, "--host", "127.0.0.1", *flags],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PRODUCTION_APP_OPAQUE": "1"},
        )
    wait_for_port("127.0.0.1", port, process)
    server = Server(process, "127.0.0.1", port, log_path)
    try:
        yield server
    finally:
        stop(server)
    assert "Traceback" not in server.log(), server.log()


# -- HTTP helpers --------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> Reply:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        all_headers = {"Accept": "application/json, text/event-stream"}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        connection.request(method, path, body=data, headers=all_headers)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def rpc(method: str, params: dict[str, Any] | None = None, request_id: int = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def initialize_params() -> dict[str, Any]:
    return {
        "protocolVersion": SESSION_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def open_session(port: int, token: str) -> str:
    reply = http_request(port, "POST", "/mcp", rpc("initialize", initialize_params()), bearer(token))
    assert reply.status == 200, reply.body
    session = reply.headers["Mcp-Session-Id"]
    assert session
    return session


def call_tool(
    port: int, token: str | None, name: str, arguments: dict[str, Any], *, session: str | None = None,
    extra: dict[str, str] | None = None, request_id: int = 2,
) -> Reply:  # fmt: skip
    headers = {"MCP-Protocol-Version": SESSION_VERSION, **(extra or {})}
    if token is not None:
        headers.update(bearer(token))
    if session is not None:
        headers["Mcp-Session-Id"] = session
    return http_request(
        port, "POST", "/mcp", rpc("tools/call", {"name": name, "arguments": arguments}, request_id), headers
    )


def stateless_call(port: int, token: str, name: str, arguments: dict[str, Any]) -> Reply:
    """A tools/call in a fresh session (the auth server issues JWT sessions)."""
    return call_tool(port, token, name, arguments, session=open_session(port, token))


# -- authorization ------------------------------------------------------------------------------


def test_the_rfc9728_metadata_is_served_at_both_well_known_paths(
    auth_server: Server, issuer: AuthorizationServer
) -> None:
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        reply = http_request(auth_server.port, "GET", path)
        assert reply.status == 200, (path, reply.body)
        assert reply.headers["Content-Type"] == "application/json"
        document = reply.json()
        assert document["resource"] == auth_server.url
        assert document["authorization_servers"] == [issuer.issuer]
        assert document["scopes_supported"] == ["files:write"]
        assert document["bearer_methods_supported"] == ["header"]


def test_a_request_without_a_token_is_401_naming_the_metadata(auth_server: Server) -> None:
    reply = http_request(auth_server.port, "POST", "/mcp", rpc("initialize", initialize_params()))
    assert reply.status == 401
    challenge = reply.headers["WWW-Authenticate"]
    metadata = f"http://127.0.0.1:{auth_server.port}/.well-known/oauth-protected-resource/mcp"
    assert challenge == f'Bearer resource_metadata="{metadata}"'
    assert "error=" not in challenge
    assert reply.json()["error"]["code"] == -32001
    # Every MCP request: GET, DELETE, the old HTTP+SSE transport too.
    assert (
        http_request(auth_server.port, "GET", "/mcp", headers={"Accept": "text/event-stream"}).status == 401
    )
    assert (
        http_request(auth_server.port, "GET", "/sse", headers={"Accept": "text/event-stream"}).status == 401
    )
    # A token in the query string is never read (RFC 6750 section 2.3 is not offered).
    token = "x"
    assert http_request(auth_server.port, "POST", f"/mcp?access_token={token}", rpc("ping")).status == 401
    # Probes and the metadata need no token.
    assert http_request(auth_server.port, "GET", "/health").status == 200


@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_rs256_and_es256_tokens_open_a_session_and_call_tools(
    auth_server: Server, issuer: AuthorizationServer, key: str
) -> None:
    token = issuer.token(sub=f"user-{key}", aud=auth_server.url, key=key, scope="files:read files:write")
    session = open_session(auth_server.port, token)
    reply = call_tool(auth_server.port, token, "whoami", {}, session=session)
    assert reply.status == 200, reply.body
    structured = reply.json()["result"]["structuredContent"]
    assert structured["subject"] == f"user-{key}"
    assert structured["scopes"] == ["files:read", "files:write"]


@pytest.mark.parametrize(
    ("case", "description"),
    [
        ("expired", "The access token expired"),
        ("audience", "The access token was not issued for this server"),
        ("issuer", "The access token comes from another issuer"),
        ("unknown_kid", "The token's signing key is not known"),
        ("hs256", "The token's signing algorithm is not accepted"),
        ("garbage", "The access token is not valid"),
        ("bad_signature", "The access token's signature is not valid"),
    ],
)
def test_invalid_tokens_are_401_invalid_token(
    auth_server: Server, issuer: AuthorizationServer, case: str, description: str
) -> None:
    audience = auth_server.url
    token = {
        "expired": lambda: issuer.token(aud=audience, expires_in=-120),
        "audience": lambda: issuer.token(aud="http://other.example/mcp"),
        "issuer": lambda: issuer.token(aud=audience, issuer="http://evil.example"),
        "unknown_kid": lambda: issuer.token(aud=audience, key="other"),
        "hs256": lambda: issuer.token(aud=audience, key="hs"),
        "garbage": lambda: "not-a-token-at-all",
        "bad_signature": lambda: issuer.token(aud=audience, key="other", kid="rsa-1"),
    }[case]()
    fetches = issuer.jwks_fetches
    reply = http_request(
        auth_server.port, "POST", "/mcp", rpc("initialize", initialize_params()), bearer(token)
    )
    assert reply.status == 401, reply.body
    challenge = reply.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token"')
    assert "resource_metadata=" in challenge
    assert f'error_description="{description}"' in challenge
    assert token not in reply.body.decode()
    # An unknown kid does not make the server fetch the JWKS again within a minute of the last fetch.
    assert issuer.jwks_fetches == fetches


def test_opaque_tokens_go_to_the_token_verifier(auth_server: Server) -> None:
    reply = stateless_call(auth_server.port, "opaque-alice", "whoami", {})
    assert reply.status == 200, reply.body
    assert reply.json()["result"]["structuredContent"]["subject"] == "alice"
    refused = http_request(auth_server.port, "POST", "/mcp", rpc("ping"), bearer("opaque-mallory"))
    assert refused.status == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


def test_a_tool_s_scopes_are_403_insufficient_scope_and_hide_it_from_tools_list(
    auth_server: Server, issuer: AuthorizationServer
) -> None:
    reader = issuer.token(sub="reader", aud=auth_server.url, scope="files:read")
    session = open_session(auth_server.port, reader)
    reply = call_tool(auth_server.port, reader, "write_file", {"path": "/tmp/x"}, session=session)
    assert reply.status == 403, reply.body
    challenge = reply.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope", scope="files:write"')
    assert "resource_metadata=" in challenge
    error = reply.json()["error"]
    assert error["code"] == -32003 and error["data"] == {"requiredScopes": ["files:write"]}
    headers = {"MCP-Protocol-Version": SESSION_VERSION, "Mcp-Session-Id": session, **bearer(reader)}
    listed = http_request(auth_server.port, "POST", "/mcp", rpc("tools/list", {}, 3), headers).json()
    names = {tool["name"] for tool in listed["result"]["tools"]}
    assert "write_file" not in names and "echo" in names
    writer = issuer.token(sub="writer", aud=auth_server.url, scope="files:read files:write")
    writer_session = open_session(auth_server.port, writer)
    ok = call_tool(auth_server.port, writer, "write_file", {"path": "/tmp/x"}, session=writer_session)
    assert ok.status == 200 and ok.json()["result"]["content"][0]["text"] == "wrote /tmp/x"
    headers = {"MCP-Protocol-Version": SESSION_VERSION, "Mcp-Session-Id": writer_session, **bearer(writer)}
    listed = http_request(auth_server.port, "POST", "/mcp", rpc("tools/list", {}, 3), headers).json()
    assert "write_file" in {tool["name"] for tool in listed["result"]["tools"]}


def test_a_session_is_bound_to_the_principal_that_created_it(
    auth_server: Server, issuer: AuthorizationServer
) -> None:
    alice = issuer.token(sub="alice", aud=auth_server.url)
    bob = issuer.token(sub="bob", aud=auth_server.url)
    session = open_session(auth_server.port, alice)
    assert call_tool(auth_server.port, alice, "echo", {"message": "hi"}, session=session).status == 200
    stolen = call_tool(auth_server.port, bob, "echo", {"message": "hi"}, session=session)
    assert stolen.status == 404
    assert "another principal" in stolen.json()["error"]["message"]
    # Another token of the same subject (a refreshed token) keeps the session.
    alice_again = issuer.token(sub="alice", aud=auth_server.url, extra={"jti": "2"})
    assert call_tool(auth_server.port, alice_again, "echo", {"message": "hi"}, session=session).status == 200


def test_tokens_are_never_logged(auth_server: Server, issuer: AuthorizationServer) -> None:
    token = issuer.token(sub="quiet", aud=auth_server.url)
    stateless_call(auth_server.port, token, "echo", {"message": "x"})
    http_request(auth_server.port, "POST", "/mcp", rpc("ping"), bearer(token + "tampered"))
    time.sleep(0.5)  # the logs are written in batches
    logs = [auth_server.log(), *(path.read_text() for path in auth_server.log_path.parent.glob("*.log"))]
    assert all(token not in text for text in logs)


def test_the_audit_and_access_logs_have_a_line_per_call_and_request(
    auth_server: Server, issuer: AuthorizationServer
) -> None:
    token = issuer.token(sub="auditor", aud=auth_server.url, scope="files:read")
    stateless_call(auth_server.port, token, "echo", {"message": "audited", "n": 1})
    stateless_call(auth_server.port, token, "fails", {})
    time.sleep(0.6)
    directory = auth_server.log_path.parent
    audit = [json.loads(line) for line in (directory / "audit.log").read_text().splitlines()]
    mine = [line for line in audit if line["principal"] == "auditor"]
    assert [line["tool"] for line in mine] == ["echo", "fails"]
    echo_line, fails_line = mine
    assert echo_line["outcome"] == "ok" and fails_line["outcome"] == "tool_error"
    assert echo_line["client"] == "127.0.0.1" and echo_line["session"]
    import hashlib

    canonical = json.dumps({"message": "audited", "n": 1}, sort_keys=True, separators=(",", ":")).encode()
    assert echo_line["arguments_sha256"] == hashlib.sha256(canonical).hexdigest()
    assert "arguments" not in echo_line  # only with --audit-arguments
    assert isinstance(echo_line["duration_ms"], float) and echo_line["time"].endswith("Z")
    access = [json.loads(line) for line in (directory / "access.log").read_text().splitlines()]
    calls = [line for line in access if line["mcp_method"] == "tools/call" and line["status"] == 200]
    assert calls, access[-5:]
    line = calls[-1]
    assert line["method"] == "POST" and line["path"] == "/mcp" and line["client"] == "127.0.0.1"
    assert line["bytes"] > 0 and line["duration_ms"] >= 0
    assert any(line["status"] == 401 for line in access)


def test_metrics_are_prometheus_text(auth_server: Server, issuer: AuthorizationServer) -> None:
    token = issuer.token(sub="metered", aud=auth_server.url)
    stateless_call(auth_server.port, token, "echo", {"message": "m"})
    http_request(auth_server.port, "POST", "/mcp", rpc("ping"))  # 401: an auth failure
    reply = http_request(auth_server.port, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {family.name: family for family in text_string_to_metric_families(reply.body.decode())}
    duration = families["mcp_server_operation_duration_seconds"]
    assert duration.type == "histogram"
    count = [
        sample
        for sample in duration.samples
        if sample.name.endswith("_count")
        and sample.labels == {"mcp_method_name": "tools/call", "gen_ai_tool_name": "echo", "error_type": ""}
    ]
    assert count and count[0].value >= 1
    requests = families["mcp_server_requests"]
    assert any(
        sample.labels.get("gen_ai_tool_name") == "echo"
        and sample.labels["outcome"] == "ok"
        and sample.value >= 1
        for sample in requests.samples
    )
    failures = {
        sample.labels["reason"]: sample.value for sample in families["mcp_server_auth_failures"].samples
    }
    assert failures.get("missing", 0) >= 1
    assert families["mcp_server_sessions_created"].samples[0].value >= 1
    assert families["mcp_server_open_connections"].samples[0].value >= 1
    for name in ("mcp_server_open_streams", "mcp_server_cache_hits", "mcp_server_cache_misses",
                 "mcp_server_cache_evictions", "mcp_server_rate_limited"):  # fmt: skip
        assert name in families, sorted(families)


# -- the official client, through its own OAuth support -------------------------------------------


def test_the_official_client_completes_a_session_through_its_oauth_support(
    auth_server: Server, issuer: AuthorizationServer
) -> None:
    """mcp's ClientCredentialsOAuthProvider: 401 -> our RFC 9728 metadata -> the authorization
    server's metadata -> a client_credentials token for our resource -> the session."""
    from mcp import ClientSession
    from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    class Memory:
        def __init__(self) -> None:
            self.tokens: Any = None
            self.client: Any = None

        async def get_tokens(self) -> Any:
            return self.tokens

        async def set_tokens(self, tokens: Any) -> None:
            self.tokens = tokens

        async def get_client_info(self) -> Any:
            return self.client

        async def set_client_info(self, info: Any) -> None:
            self.client = info

    async def main() -> tuple[str, Any]:
        provider = ClientCredentialsOAuthProvider(
            server_url=auth_server.url,
            storage=Memory(),
            client_id="robot",
            client_secret="s3cret",
            issuer=issuer.issuer,
        )
        async with (
            create_mcp_http_client(auth=provider) as http,
            streamable_http_client(auth_server.url, http_client=http) as (read, write, *_),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool("whoami", {})
            tools = await session.list_tools()
            return str(result.structured_content), [tool.name for tool in tools.tools]

    whoami, names = asyncio.run(main())
    assert "robot" in whoami
    # The client asked for the scopes our metadata lists (its scope selection), and sees the
    # tools its token allows.
    asked = [request for request in issuer.token_requests if request.get("resource") == [auth_server.url]]
    assert asked, issuer.token_requests  # for our resource (RFC 8707), found through our metadata
    granted = asked[-1].get("scope", [""])[0].split()
    assert "echo" in names
    assert ("write_file" in names) == ("files:write" in granted)


# -- rate limits, idempotency, CORS, forwarded addresses, probes -----------------------------------


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("open")
    server = launch(
        tmp,
        "--stateless",
        "--rate-limit", "8/60s",
        "--forwarded-allow-ips", "127.0.0.1",
        "--cors-origins", "https://app.example.com",
        "--audit-log", str(tmp / "audit.log"),
        "--audit-arguments",
        env={"PRODUCTION_APP_DOWN": str(tmp / "down")},
    )  # fmt: skip
    try:
        yield server
    finally:
        stop(server)
    assert "Traceback" not in server.log(), server.log()


def as_client(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def test_a_tool_s_rate_limit_is_429_with_retry_after(open_server: Server) -> None:
    who = as_client("10.1.0.1")
    for _ in range(2):
        assert call_tool(open_server.port, None, "limited", {}, extra=who).status == 200
    reply = call_tool(open_server.port, None, "limited", {}, extra=who)
    assert reply.status == 429, reply.body
    retry_after = int(reply.headers["Retry-After"])
    assert 1 <= retry_after <= 30
    error = reply.json()["error"]
    assert error["code"] == -32000 and error["data"]["retryAfter"] == retry_after
    assert "limited" in error["message"]
    # Another caller (another forwarded address) has its own bucket.
    assert call_tool(open_server.port, None, "limited", {}, extra=as_client("10.1.0.2")).status == 200


def test_the_server_wide_rate_limit_counts_each_caller(open_server: Server) -> None:
    who = as_client("10.2.0.1")
    statuses = [
        call_tool(open_server.port, None, "echo", {"message": "x"}, extra=who).status for _ in range(9)
    ]
    assert statuses[:8] == [200] * 8 and statuses[8] == 429
    assert (
        call_tool(open_server.port, None, "echo", {"message": "x"}, extra=as_client("10.2.0.2")).status == 200
    )
    # X-Forwarded-For from an untrusted peer would be ignored; here the peer is trusted, and the
    # tool sees the forwarded address as call.client.
    whoami = call_tool(open_server.port, None, "whoami", {}, extra=as_client("10.2.0.3")).json()
    assert whoami["result"]["structuredContent"]["client"] == "10.2.0.3"


def test_idempotent_retries_get_the_first_result_even_while_it_runs(open_server: Server) -> None:
    key = str(uuid.uuid4())
    who = {**as_client("10.3.0.1"), "Idempotency-Key": key}
    results: list[Reply] = []

    def call() -> None:
        results.append(call_tool(open_server.port, None, "slow_count", {"label": key}, extra=who))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    texts = [reply.json()["result"]["content"][0]["text"] for reply in results]
    assert texts[0] == texts[1], texts  # the second waited for the first: one run
    retry = call_tool(open_server.port, None, "slow_count", {"label": key}, extra=who, request_id=9)
    assert retry.json()["id"] == 9
    assert retry.json()["result"]["content"][0]["text"] == texts[0]
    other = call_tool(open_server.port, None, "slow_count", {"label": "other"}, extra=who)
    error = other.json()["error"]
    assert error["code"] == -32602 and key in error["message"]
    # Without the key, every call runs.
    fresh = call_tool(open_server.port, None, "slow_count", {"label": key}, extra=as_client("10.3.0.1"))
    assert fresh.json()["result"]["content"][0]["text"] != texts[0]


def test_cors_preflight_and_response_headers(open_server: Server) -> None:
    preflight = http_request(
        open_server.port,
        "OPTIONS",
        "/mcp",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization, mcp-param-region",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    allowed = {name.strip() for name in preflight.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "authorization", "mcp-protocol-version", "mcp-session-id", "last-event-id",
            "mcp-method", "mcp-name", "mcp-param-region"} <= allowed  # fmt: skip
    assert preflight.headers["Access-Control-Expose-Headers"] == "Mcp-Session-Id, WWW-Authenticate"
    assert int(preflight.headers["Access-Control-Max-Age"]) > 0
    refused = http_request(
        open_server.port,
        "OPTIONS",
        "/mcp",
        headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert refused.status == 403
    reply = call_tool(
        open_server.port, None, "echo", {"message": "c"},
        extra={"Origin": "https://app.example.com", **as_client("10.4.0.1")},
    )  # fmt: skip
    assert reply.status == 200
    assert reply.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert reply.headers["Access-Control-Expose-Headers"] == "Mcp-Session-Id, WWW-Authenticate"


def test_readiness_names_each_check_and_fails_while_a_dependency_is_down(open_server: Server) -> None:
    ready = http_request(open_server.port, "GET", "/ready")
    assert ready.status == 200 and ready.json()["checks"] == {"dependency": "ok"}
    marker = Path(open_server.log_path.parent / "down")
    marker.write_text("down")
    try:
        down = http_request(open_server.port, "GET", "/ready")
        assert down.status == 503 and down.json()["checks"] == {"dependency": "failing"}
    finally:
        marker.unlink()
    assert http_request(open_server.port, "GET", "/health").status == 200


def test_audit_arguments_are_written_only_when_asked(open_server: Server) -> None:
    call_tool(open_server.port, None, "echo", {"message": "raw"}, extra=as_client("10.5.0.1"))
    time.sleep(0.6)
    lines = [
        json.loads(line) for line in (open_server.log_path.parent / "audit.log").read_text().splitlines()
    ]
    mine = [line for line in lines if line["client"] == "10.5.0.1"]
    assert mine and mine[0]["arguments"] == {"message": "raw"} and mine[0]["principal"] is None


def test_readiness_is_503_while_draining(tmp_path: Path) -> None:
    server = launch(tmp_path, "--stateless", "--shutdown-timeout", "5")
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/ready")
        first = connection.getresponse()
        assert first.status == 200
        first.read()
        # A slow call keeps the server draining; the kept-alive connection still asks /ready.
        slow = threading.Thread(target=call_tool, args=(server.port, None, "slow_count", {"label": "d"}))
        slow.start()
        time.sleep(0.2)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        connection.request("GET", "/ready")
        draining = connection.getresponse()
        body = json.loads(draining.read())
        assert draining.status == 503
        assert body["checks"]["draining"] == "failing"
        slow.join()
    finally:
        stop(server)


def test_an_unwritable_audit_log_is_reported_once_and_fails_no_request(tmp_path: Path) -> None:
    server = launch(tmp_path, "--stateless", "--audit-log", str(tmp_path / "missing-dir" / "audit.log"))
    try:
        for _ in range(3):
            reply = call_tool(server.port, None, "echo", {"message": "x"})
            assert reply.status == 200
            time.sleep(0.3)
    finally:
        stop(server)
    log = server.log()
    assert log.count("--audit-log") == 1, log
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--auth-jwks", "/nonexistent/jwks.json", "--public-url", "http://127.0.0.1:1/mcp"], "--auth-jwks"),
        (["--auth-jwks", "x.json"], "--public-url"),
        (["--auth-issuer", "http://a"], "--auth-issuer needs --auth-jwks"),
        (["--rate-limit", "ten per minute"], "--rate-limit"),
        (["--cors-origins", "app.example.com"], "--cors-origins"),
        (["--forwarded-allow-ips", "not-an-ip"], "--forwarded-allow-ips"),
        (
            ["--auth-jwks", "x.json", "--public-url", "http://h/mcp", "--auth-algorithms", "HS256"],
            "--auth-algorithms",
        ),
    ],
)
def test_bad_settings_stop_start_up_naming_the_flag(flags: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcp_fast", APP, "--port", str(free_port()), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


# -- tracing ----------------------------------------------------------------------------------------


def test_a_server_span_per_request_continues_the_callers_trace(tmp_path: Path) -> None:
    spans_file = tmp_path / "spans.jsonl"
    server = launch(tmp_path, "--stateless", env={"PRODUCTION_APP_SPANS": str(spans_file)})
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        header = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
        assert call_tool(server.port, None, "echo", {"message": "t"}, extra=header).status == 200
        meta_trace = "0af7651916cd43dd8448eb211c80319c"
        params = {
            "name": "fails",
            "arguments": {},
            "_meta": {"traceparent": f"00-{meta_trace}-b7ad6b7169203331-01"},
        }
        headers = {"MCP-Protocol-Version": SESSION_VERSION}
        http_request(server.port, "POST", "/mcp", rpc("tools/call", params, 5), headers)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and spans_file.read_text().count("\n") < 2:
            time.sleep(0.05)
    finally:
        stop(server)
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    by_tool = {span["attributes"].get("gen_ai.tool.name"): span for span in spans}
    echo = by_tool["echo"]
    assert echo["name"] == "tools/call echo" and echo["kind"] == "SpanKind.SERVER"
    assert echo["context"]["trace_id"] == "0x" + trace_id
    assert echo["parent_id"] == "0x00f067aa0ba902b7"
    assert echo["attributes"]["mcp.method.name"] == "tools/call"
    assert echo["attributes"]["gen_ai.operation.name"] == "execute_tool"
    assert echo["attributes"]["jsonrpc.request.id"] == "2"
    assert echo["attributes"]["mcp.protocol.version"] == SESSION_VERSION
    assert "error.type" not in echo["attributes"]
    fails = by_tool["fails"]
    assert fails["context"]["trace_id"] == "0x" + meta_trace  # params._meta wins
    assert fails["attributes"]["error.type"] == "tool_error"
    assert fails["status"]["status_code"] == "ERROR"


def test_one_scrape_shows_every_worker(tmp_path: Path) -> None:
    server = launch(tmp_path, "--stateless", "--workers", "2")
    try:
        wait_for_port("127.0.0.1", server.port, server.process)
        time.sleep(1.0)  # both workers listen
        # A new connection each: the kernel spreads them over both workers (SO_REUSEPORT hashes
        # the addresses; all 40 on one worker has odds of 2**-39).
        for number in range(40):
            reply = call_tool(server.port, None, "echo", {"message": str(number)})
            assert reply.status == 200
        time.sleep(1.5)  # every worker has published its table since
        for _ in range(4):  # whichever worker answers the scrape, it shows all 40
            text = http_request(server.port, "GET", "/metrics").body.decode()
            families = {family.name: family for family in text_string_to_metric_families(text)}
            echo = [
                sample.value
                for sample in families["mcp_server_requests"].samples
                if sample.labels.get("gen_ai_tool_name") == "echo"
            ]
            assert echo == [40.0], text
    finally:
        stop(server)


def test_the_readme_authorization_example(tmp_path: Path, issuer: AuthorizationServer) -> None:
    import re

    readme = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if b.startswith("# secured.py")]
    (tmp_path / "secured.py").write_text(block)
    port = free_port()
    public = f"http://127.0.0.1:{port}/mcp"
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mcp_fast", "secured:server", "--port", str(port),
             "--public-url", public, "--auth-jwks", f"{issuer.issuer}/jwks.json",
             "--auth-issuer", issuer.issuer, "--auth-server", issuer.issuer],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"},
        )  # fmt: skip
    server = Server(process, "127.0.0.1", port, log_path)
    try:
        wait_for_port("127.0.0.1", port, process)
        reader = issuer.token(sub="reader", aud=public, scope="files:read")
        session = open_session(port, reader)
        assert call_tool(port, reader, "list_files", {}, session=session).status == 200
        assert call_tool(port, reader, "delete_file", {"path": "a"}, session=session).status == 403
        document = http_request(port, "GET", "/.well-known/oauth-protected-resource/mcp").json()
        assert document["scopes_supported"] == ["files:write"] and document["resource"] == public
    finally:
        stop(server)


def test_a_2026_sessionless_request_is_authorized_too(
    auth_server: Server, issuer: AuthorizationServer
) -> None:
    def sessionless(token: str | None, tool: str, arguments: dict[str, Any]) -> Reply:
        params = {
            "name": tool,
            "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
            },
        }
        headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": tool}
        if token is not None:
            headers.update(bearer(token))
        return http_request(auth_server.port, "POST", "/mcp", rpc("tools/call", params, 7), headers)

    assert sessionless(None, "echo", {"message": "x"}).status == 401
    reader = issuer.token(sub="reader2026", aud=auth_server.url, scope="files:read")
    ok = sessionless(reader, "whoami", {})
    assert ok.status == 200, ok.body
    assert ok.json()["result"]["structuredContent"]["subject"] == "reader2026"
    refused = sessionless(reader, "write_file", {"path": "p"})
    assert refused.status == 403
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]


def test_an_old_http_sse_session_is_bound_to_its_principal(
    auth_server: Server, issuer: AuthorizationServer
) -> None:
    alice = issuer.token(sub="sse-alice", aud=auth_server.url)
    bob = issuer.token(sub="sse-bob", aud=auth_server.url)
    stream = http.client.HTTPConnection("127.0.0.1", auth_server.port, timeout=10)
    try:
        stream.request("GET", "/sse", headers={"Accept": "text/event-stream", **bearer(alice)})
        response = stream.getresponse()
        assert response.status == 200
        endpoint = ""
        while not endpoint:
            line = response.readline().decode().strip()
            if line.startswith("data:"):
                endpoint = line[5:].strip()
        message = rpc("initialize", initialize_params())
        assert http_request(auth_server.port, "POST", endpoint, message, bearer(bob)).status == 404
        assert http_request(auth_server.port, "POST", endpoint, message).status == 401
        assert http_request(auth_server.port, "POST", endpoint, message, bearer(alice)).status == 202
    finally:
        stream.close()


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(auth_server: Server) -> None:
    reply = stateless_call(auth_server.port, "opaque-bob", "whoami", {})
    assert reply.json()["result"]["structuredContent"]["client"] == "127.0.0.1"
    spoofed = call_tool(
        auth_server.port, "opaque-bob", "whoami", {}, session=open_session(auth_server.port, "opaque-bob"),
        extra={"X-Forwarded-For": "203.0.113.66", "X-Real-IP": "203.0.113.67"},
    )  # fmt: skip
    assert spoofed.json()["result"]["structuredContent"]["client"] == "127.0.0.1"
