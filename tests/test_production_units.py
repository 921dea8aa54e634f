"""The production features' parts in-process: JWKS refresh pacing, bounded tables, log writing
that never fails a request, scopes through the in-process client and over stdio."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from conftest import ROOT
from cryptography.hazmat.primitives.asymmetric import rsa

from mcp_fast import McpError, MCPServer
from mcp_fast.call import Call, Principal
from mcp_fast.ops.auth import JWKS_REFRESH_INTERVAL, AuthSettings, BearerGate, JwksKeys
from mcp_fast.ops.idempotency import Idempotency
from mcp_fast.ops.logs import JsonLines
from mcp_fast.ops.ratelimit import TokenBuckets
from mcp_fast.pipeline import Pipeline, PipelineSettings
from mcp_fast.protocol.jsonrpc import HttpError
from mcp_fast.protocol.versions import POLICIES
from mcp_fast.registry import Rate, parse_rate
from mcp_fast.testing import connect

AUDIENCE = "https://mcp.example.com/mcp"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def jwks_of(*pairs: tuple[str, Any]) -> bytes:
    keys = [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": kid} for kid, key in pairs
    ]
    return json.dumps({"keys": keys}).encode()


def token(key: Any, kid: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "alice", "aud": AUDIENCE, "iat": now, "exp": now + 300, **claims}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


def test_an_unknown_kid_fetches_the_jwks_again_at_most_once_a_minute() -> None:
    old = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    new = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    published = {"document": jwks_of(("old", old))}
    fetches: list[str] = []

    def fetch(url: str) -> bytes:
        fetches.append(url)
        return published["document"]

    clock = Clock()
    keys = JwksKeys("https://issuer.example/jwks.json", fetch, clock)
    keys.load()
    gate = BearerGate(AuthSettings(AUDIENCE, AUDIENCE), keys, None)
    assert gate.admit(b"Bearer " + token(old, "old").encode()).subject == "alice"  # type: ignore[union-attr]
    published["document"] = jwks_of(("old", old), ("new", new))  # the issuer rotates
    rotated = b"Bearer " + token(new, "new").encode()
    with pytest.raises(HttpError) as refused:
        gate.admit(rotated)  # within a minute of the last fetch: no fetch, refused
    assert refused.value.status == 401 and len(fetches) == 1
    clock.now += JWKS_REFRESH_INTERVAL
    admitted = gate.admit(rotated + b" ")  # another header text: not the cached refusal
    assert not isinstance(admitted, Principal)

    async def resolve() -> Principal:
        return await admitted  # type: ignore[no-any-return]

    assert asyncio.run(resolve()).subject == "alice"
    assert len(fetches) == 2
    # Made-up kids right after: no further fetch.
    for number in range(5):
        with pytest.raises(HttpError):
            gate.admit(b"Bearer " + token(new, f"made-up-{number}").encode())
    assert len(fetches) == 2


def test_verified_tokens_are_cached_per_token_and_bounded() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = JwksKeys("unused", lambda url: jwks_of(("k", key)))
    keys.refresh_now()
    gate = BearerGate(AuthSettings(AUDIENCE, AUDIENCE, cache_size=3), keys, None)
    tokens = [b"Bearer " + token(key, "k", sub=f"user{n}").encode() for n in range(10)]
    for header in tokens:
        gate.admit(header)
    assert len(gate._verdicts) == 3
    first = gate.admit(tokens[-1])
    assert first is gate.admit(tokens[-1])  # the cached principal, not verified again


def test_token_buckets_and_idempotency_entries_stay_bounded() -> None:
    buckets = TokenBuckets(Rate(1, 60.0), max_callers=100)
    for caller in range(10_000):
        assert buckets.take(f"caller {caller}", 0.0) == 0.0
    assert len(buckets) == 100
    assert buckets.take("caller 9999", 0.0) > 0  # the recent ones are still limited
    assert parse_rate("100/60s") == Rate(100, 60.0) and parse_rate("10/m") == Rate(10, 60.0)
    with pytest.raises(ValueError, match="COUNT/WINDOW"):
        parse_rate("fast")

    async def flood() -> int:
        idempotency = Idempotency(600.0, max_entries=50)
        policy = POLICIES["2025-11-25"]

        async def handler(call: Call) -> Any:
            return {"content": [], "isError": False}

        for number in range(500):
            call = Call(
                "streamable-http", number, "tools/call", {"name": "t", "arguments": {}}, policy, None,
                {b"idempotency-key": str(number).encode()}, ("10.0.0.1", 1),
            )  # fmt: skip
            await idempotency(call, handler)
        return len(idempotency._entries)

    assert asyncio.run(flood()) == 50


def test_a_log_that_cannot_be_written_is_reported_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = JsonLines(str(tmp_path / "missing" / "audit.log"), "--audit-log")
    with caplog.at_level(logging.ERROR, "mcp_fast.logs"):
        lines.open()
        for number in range(5):
            lines.write({"n": number})  # no loop: written (or dropped) at once
    assert lines.dropped == 5
    assert len([record for record in caplog.records if "--audit-log" in record.getMessage()]) == 1
    full = JsonLines("/dev/full", "--access-log")  # ENOSPC on every write
    with caplog.at_level(logging.ERROR, "mcp_fast.logs"):
        for number in range(3):
            full.write({"n": number})
    assert full.dropped == 3
    assert len([record for record in caplog.records if "--access-log" in record.getMessage()]) == 1


def scoped_server() -> MCPServer:
    server = MCPServer("scoped")

    @server.tool(inline=True, scopes=["admin"])
    def reset() -> str:
        return "reset"

    @server.tool(inline=True)
    def echo(message: str) -> str:
        return message

    return server


def test_scopes_hold_in_the_test_client_with_a_principal_and_not_without_one() -> None:
    server = scoped_server()

    async def main() -> None:
        async with connect(server) as local:  # no HTTP, no principal: like stdio
            assert (await local.call_tool("reset", {}))["content"][0]["text"] == "reset"
        async with connect(server, principal=Principal("eve", frozenset({"user"}))) as eve:
            assert [tool["name"] for tool in await eve.list_tools()] == ["echo"]
            with pytest.raises(McpError) as refused:
                await eve.call_tool("reset", {})
            assert refused.value.code == -32003
        async with connect(server, principal=Principal("root", frozenset({"admin"}))) as root:
            assert [tool["name"] for tool in await root.list_tools()] == ["reset", "echo"]

    asyncio.run(main())


def test_stdio_is_unaffected_by_authorization(tmp_path: Path) -> None:
    """--auth-* flags make HTTP need tokens; a stdio client gets no challenge and calls a scoped
    tool (basic/authorization.mdx: stdio takes its credentials from the environment)."""
    jwks = tmp_path / "jwks.json"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.write_bytes(jwks_of(("k", key)))
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "write_file", "arguments": {"path": "p"}}},
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "mcp_fast", "tests.apps.production_app:server", "--transport", "stdio",
         "--auth-jwks", str(jwks), "--public-url", "https://mcp.example.com/mcp"],
        input="".join(json.dumps(message) + "\n" for message in messages),
        capture_output=True, text=True, cwd=ROOT, timeout=30,
    )  # fmt: skip
    answers = {answer["id"]: answer for answer in map(json.loads, done.stdout.splitlines())}
    assert answers[2]["result"]["content"][0]["text"] == "wrote p", done.stderr


def test_forwarded_addresses_are_believed_only_from_trusted_proxies() -> None:
    from mcp_fast.ops.forwarded import ForwardedAddresses

    proxies = ForwardedAddresses(["127.0.0.1", "10.0.0.0/8"])
    chain = {b"x-forwarded-for": b"203.0.113.9, 198.51.100.7, 10.1.2.3"}
    # The right-most hop that is not a trusted proxy: what the client claimed left of it is not believed.
    assert proxies.client(chain, ("127.0.0.1", 5000)) == ("198.51.100.7", 0)
    assert proxies.client({b"x-real-ip": b"198.51.100.8"}, ("10.0.0.5", 1)) == ("198.51.100.8", 0)
    assert proxies.client(chain, ("192.0.2.1", 5000)) == ("192.0.2.1", 5000)  # untrusted peer
    assert proxies.client({b"x-forwarded-for": b"garbage"}, ("127.0.0.1", 1)) == ("127.0.0.1", 1)
    anyone = ForwardedAddresses(["*"])
    assert anyone.client({b"x-forwarded-for": b"2001:db8::1"}, ("192.0.2.1", 1)) == ("2001:db8::1", 0)
    with pytest.raises(ValueError, match="--forwarded-allow-ips"):
        ForwardedAddresses(["proxy.example.com"])


def test_a_check_that_must_wait_holds_its_request_and_the_checks_after_it() -> None:
    """The pipeline waits for a check that returns an awaitable, then runs the checks after it;
    a refusal from it is the request's answer."""
    server = MCPServer("checks")

    @server.tool(inline=True)
    def echo(message: str) -> str:
        return message

    seen: list[str] = []

    async def slow(call: Call) -> None:
        await asyncio.sleep(0.01)
        seen.append("slow")
        if call.params and call.params.get("arguments", {}).get("message") == "no":
            raise HttpError(429, -32000, "Too many requests")

    def later(call: Call) -> None:
        seen.append("later")

    pipeline = Pipeline(server, PipelineSettings(checks=(slow, later)))
    policy = POLICIES["2025-11-25"]

    async def main(message: str) -> Any:
        call = Call("stdio", 1, "tools/call", {"name": "echo", "arguments": {"message": message}}, policy)
        answer = pipeline.request(call)
        assert not isinstance(answer, bytes)
        return json.loads(await answer)

    assert asyncio.run(main("yes"))["result"]["content"][0]["text"] == "yes"
    assert seen == ["slow", "later"]
    refused = asyncio.run(main("no"))
    assert refused["error"]["code"] == -32000 and seen == ["slow", "later", "slow"]
