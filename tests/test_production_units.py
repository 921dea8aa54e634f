"""The production features' parts in-process: JWKS refresh pacing, bounded tables, log writing
that never fails a request, scopes through the in-process client and over stdio."""

from __future__ import annotations

import asyncio
import hashlib
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
from mcp_fast.fleet.base import FleetUnavailable, Grant, LocalFleet
from mcp_fast.ops.auth import JWKS_REFRESH_INTERVAL, AuthSettings, BearerGate, JwksKeys
from mcp_fast.ops.idempotency import Idempotency
from mcp_fast.ops.logs import JsonLines
from mcp_fast.ops.ratelimit import RateLimits, SharedTokenBuckets, TokenBuckets, _Outage, lease_size
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


# -- rate limits shared by a fleet (--redis), with an in-process stand-in for Redis ----------------


class SharedStore:
    """What RedisFleet.take_up_to does, in process: one bucket per key for every 'instance',
    counted, and unavailable on demand (a Redis outage)."""

    def __init__(self, clock: Clock) -> None:
        self.buckets = LocalFleet()._buckets
        self.clock = clock
        self.calls = 0
        self.available = True
        self.shared = True

    async def take_up_to(self, key: str, rate: float, burst: float, most: int) -> Grant:
        await asyncio.sleep(0)  # a round trip: the request waits
        if not self.available:
            raise FleetUnavailable()
        self.calls += 1
        return self.buckets.take_up_to(key, rate, burst, most, now=self.clock())


async def take(buckets: SharedTokenBuckets, caller: str, clock: Clock) -> tuple[float, bool]:
    """(the wait, whether the request had to wait for the store)."""
    wait = buckets.take(caller, clock())
    if type(wait) is float:
        return wait, False
    return await wait, True  # type: ignore[misc]


def two_instances(rate: Rate) -> tuple[SharedStore, list[SharedTokenBuckets], Clock]:
    clock = Clock()
    store = SharedStore(clock)
    instances = [
        SharedTokenBuckets(rate, store, "limit::", _Outage(), clock)  # type: ignore[arg-type]
        for _ in range(2)
    ]
    return store, instances, clock


def test_a_caller_is_limited_across_instances_within_the_lease_slack() -> None:
    """100/60s, a lease of 5: a caller whose requests alternate between two instances gets its
    first refusal after 95 to 100 requests, and exactly 100 pass in all (no clock moves: no
    refill); the store is asked about once per half lease, and most requests do not wait."""
    rate = Rate(100, 60.0)
    assert lease_size(rate) == 5
    store, instances, clock = two_instances(rate)

    async def main() -> list[tuple[float, bool]]:
        results = []
        for number in range(300):
            results.append(await take(instances[number % 2], "session s1", clock))
            await asyncio.sleep(0)  # let a background top-up land
            await asyncio.sleep(0)
        return results

    results = asyncio.run(main())
    passed = [wait == 0.0 for wait, _ in results]
    assert passed.count(True) == 100, passed.count(True)
    first_refusal = passed.index(False)
    assert 95 <= first_refusal <= 100, first_refusal
    assert all(0 < wait <= 0.61 for wait, _ in results if wait)  # a token every 0.6 s
    waited = sum(1 for _, waited in results if waited)
    assert waited <= 4, waited  # each instance's first request, and its first refusal
    assert store.calls <= 2 * (100 // 5 * 2 + 3), store.calls
    # Another caller has its own shared bucket.
    assert asyncio.run(take(instances[0], "session s2", clock))[0] == 0.0


def test_a_refused_caller_is_refused_without_asking_until_a_token_is_due() -> None:
    store, [one, _], clock = two_instances(Rate(2, 60.0))  # a lease of 1, a token every 30 s

    async def main() -> None:
        assert (await take(one, "c", clock))[0] == 0.0
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert (await take(one, "c", clock))[0] == 0.0
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        calls = store.calls
        wait, _ = await take(one, "c", clock)
        assert 29 < wait <= 30
        for _ in range(20):
            assert 0 < (await take(one, "c", clock))[0] <= 30
        assert store.calls <= calls + 1  # known empty: refused here
        clock.now += 31
        assert (await take(one, "c", clock))[0] == 0.0

    asyncio.run(main())


def test_while_the_store_is_unavailable_each_instance_limits_with_its_own_buckets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, [one, _], clock = two_instances(Rate(4, 3600.0))  # a lease of 1

    async def main() -> None:
        for _ in range(4):
            assert (await take(one, "c", clock))[0] == 0.0
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        assert (await take(one, "c", clock))[0] > 0  # the shared bucket is empty
        store.available = False  # Redis goes away: this process's bucket (4) applies
        for _ in range(4):
            assert (await take(one, "c", clock))[0] == 0.0
        assert (await take(one, "c", clock))[0] > 0
        store.available = True
        clock.now += 3600  # the shared bucket refilled: taken from it again
        assert (await take(one, "c", clock))[0] == 0.0

    with caplog.at_level(logging.INFO, logger="mcp_fast.ratelimit"):
        asyncio.run(main())
    messages = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert [level for level, _ in messages] == ["WARNING", "INFO"], messages
    assert "own buckets" in messages[0][1] and "shared" in messages[1][1]


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


def test_shared_limits_check_the_server_wide_limit_then_the_tool_s() -> None:
    """RateLimits.share: both limits take from the shared store; a request refused by the
    server-wide limit takes nothing of the tool's, and the tool's refusal names the tool."""
    server = MCPServer("limits")

    @server.tool(inline=True, rate_limit="2/60s")
    def limited() -> str:
        return "ok"

    clock = Clock()
    store = SharedStore(clock)
    limits = RateLimits(server.registry, Rate(3, 60.0), clock=clock)
    limits.share(store)  # type: ignore[arg-type]
    policy = POLICIES["2025-11-25"]

    async def check(tool: str) -> str:
        call = Call(
            "stdio", 1, "tools/call", {"name": tool, "arguments": {}}, policy, None, None, ("10.0.0.9", 1)
        )
        try:
            pending = limits(call)
            if pending is not None:
                await pending
        except HttpError as refusal:
            return f"{refusal.status} {refusal.message}"
        finally:
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        return "ok"

    async def main() -> list[str]:
        return [await check(tool) for tool in ("limited", "limited", "limited", "other", "limited")]

    outcomes = asyncio.run(main())
    assert outcomes[:2] == ["ok", "ok"], outcomes
    assert outcomes[2].startswith("429") and "'limited'" in outcomes[2], outcomes  # the tool's 2
    assert outcomes[3].startswith("429") and "this server's" in outcomes[3], outcomes  # its 3 are taken
    assert "this server's" in outcomes[4], outcomes
    assert set(store.buckets._buckets) == {"limit::address 10.0.0.9", "limit:limited:address 10.0.0.9"}
    assert limits.refusals == {"limited": 1, "": 2}


def _audited_call(number: int, principal: Principal | None = None) -> Call:
    call = Call(
        "streamable-http", number, "tools/call", {"name": "echo", "arguments": {"b": number, "a": "x"}},
        POLICIES["2025-11-25"], None, {}, ("10.0.0.7", 1),
    )  # fmt: skip
    call.principal = principal
    call.started = time.perf_counter() - 0.002
    return call


def test_audit_records_are_encoded_after_the_loop_turn_that_served_them(tmp_path: Path) -> None:
    """A request leaves a tuple; the lines come after its loop turn, in a batch past AUDIT_BATCH,
    and at a flush (shutdown) whatever is still waiting."""
    from mcp_fast.ops import logs

    path = tmp_path / "audit.log"
    lines = JsonLines(str(path), "--audit-log")
    lines.open()
    audit = logs.AuditLog(lines)
    alice = Principal("alice", frozenset({"s"}))

    async def serve() -> tuple[int, int, int]:
        audit.end(_audited_call(1, alice), True)
        waiting = lines._pending_lines  # not encoded on the request's way
        await asyncio.sleep(0)  # the loop turn ends
        after_turn = lines._pending_lines
        for number in range(logs.AUDIT_BATCH + 5):  # one turn serving more than a batch
            audit.end(_audited_call(100 + number), number % 2 == 0)
        in_turn = lines._pending_lines
        lines.flush()  # as at shutdown: the records still waiting are encoded first
        return waiting, after_turn, in_turn

    waiting, after_turn, in_turn = asyncio.run(serve())
    assert (waiting, after_turn) == (0, 1)
    assert in_turn == 1 + logs.AUDIT_BATCH  # the batch bound wrote them without waiting for the turn
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 1 + logs.AUDIT_BATCH + 5
    first = records[0]
    digest = hashlib.sha256(b'{"a":"x","b":1}').hexdigest()
    assert first["principal"] == "alice" and first["client"] == "10.0.0.7" and first["tool"] == "echo"
    assert first["arguments_sha256"] == digest and first["outcome"] == "ok"
    assert 1.5 <= first["duration_ms"] < 1000 and first["time"].endswith("Z")
    assert [record["outcome"] for record in records[1:5]] == ["ok", "cancelled", "ok", "cancelled"]
    assert all(record["principal"] is None for record in records[1:])
