"""The in-process result cache: the LRU itself, and what the server keeps, answers and drops."""

from __future__ import annotations

from typing import Any

import pytest
from test_server_api import mcp_request, serve

from mcp_fast import Context, MCPServer, RpcError
from mcp_fast.dispatch.cache import NO_EXPIRY, CacheKey, ResultCache
from mcp_fast.pipeline import Pipeline, PipelineSettings
from mcp_fast.transport.streamable import StreamableHTTP

SESSIONLESS = "2026-07-28"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key(n: int | str) -> CacheKey:
    return ("2025-11-25", "tools/call", "t", str(n).encode(), "")


# -- the LRU ----------------------------------------------------------------------------------


def test_lru_evicts_the_least_recently_used_by_count() -> None:
    cache = ResultCache(max_entries=3, max_bytes=1 << 20)
    for n in range(3):
        cache.put(key(n), b"v%d" % n, NO_EXPIRY, "tool:t")
    assert cache.get(key(0)) == b"v0"  # 0 is now the most recently used
    cache.put(key(3), b"v3", NO_EXPIRY, "tool:t")
    assert cache.get(key(1)) is None  # 1 was the least recently used
    assert [cache.get(key(n)) for n in (0, 2, 3)] == [b"v0", b"v2", b"v3"]
    assert len(cache) == 3


def test_byte_budget_evicts_and_oversize_values_are_not_kept() -> None:
    cache = ResultCache(max_entries=100, max_bytes=800)
    cache.put(key("big"), b"x" * 101, NO_EXPIRY, "tool:t")  # over an eighth of the budget
    assert cache.get(key("big")) is None and len(cache) == 0
    for n in range(10):
        cache.put(key(n), b"y" * 100, NO_EXPIRY, "tool:t")
    stats = cache.stats()
    assert stats.bytes <= 800 and stats.entries == 8
    assert cache.get(key(0)) is None and cache.get(key(9)) == b"y" * 100


def test_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    cache = ResultCache(10, 1 << 20, clock=clock)
    cache.put(key(1), b"a", 5.0, "tool:t")
    clock.now += 4.9
    assert cache.get(key(1)) == b"a"
    clock.now += 0.2
    assert cache.get(key(1)) is None
    assert cache.stats().bytes == 0 and len(cache) == 0
    cache.put(key(2), b"b", 0, "tool:t")  # no TTL: not kept
    assert cache.get(key(2)) is None


def test_invalidation_by_tag_and_prefix_keeps_the_books_straight() -> None:
    cache = ResultCache(100, 1 << 20)
    cache.put(key(1), b"a", NO_EXPIRY, "tool:a")
    cache.put(key(2), b"bb", NO_EXPIRY, "tool:b")
    cache.put(key(3), b"ccc", NO_EXPIRY, "uri:x")
    assert cache.invalidate("tool:a") == 1 and cache.get(key(1)) is None
    cache.put(key(2), b"b2", NO_EXPIRY, "tool:b")  # replacing an entry counts its bytes once
    assert cache.stats().bytes == 5
    cache.invalidate_prefix("tool:")
    assert cache.get(key(2)) is None and cache.get(key(3)) == b"ccc"
    assert cache.stats().bytes == 3
    cache.clear()
    assert len(cache) == 0 and cache.stats().bytes == 0
    with pytest.raises(ValueError):
        ResultCache(0, 10)


def test_hits_and_misses_are_counted() -> None:
    cache = ResultCache(10, 1000)
    cache.get(key(1))
    cache.put(key(1), b"a", NO_EXPIRY, "tool:t")
    cache.get(key(1))
    assert (cache.stats().hits, cache.stats().misses) == (1, 1)


# -- through the transport ----------------------------------------------------------------------


class Harness:
    """A StreamableHTTP with a result cache on a fake clock; counts handler runs."""

    def __init__(self, cache: bool = True) -> None:
        self.clock = Clock()
        self.runs: dict[str, int] = {}
        self.server = server = MCPServer("cache-test")
        self.cache = ResultCache(1000, 1 << 20, clock=self.clock) if cache else None
        runs = self.runs

        @server.tool(inline=True, cache_ttl=30, cache_scope="public")
        def shared(word: str) -> str:
            """public"""
            runs["shared"] = runs.get("shared", 0) + 1
            return word.upper()

        @server.tool(cache_ttl=30)
        async def mine(word: str, ctx: Context) -> str:
            """private (the default scope), async, takes a Context"""
            runs["mine"] = runs.get("mine", 0) + 1
            return word * 2

        @server.tool(inline=True, cache_ttl=30, cache_scope="public")
        def picky(n: int) -> str:
            """fails for negative numbers"""
            runs["picky"] = runs.get("picky", 0) + 1
            if n < 0:
                raise ValueError("negative")
            if n == 0:
                raise RpcError(-32602, "zero")
            return str(n)

        @server.tool(inline=True)
        def uncached(word: str) -> str:
            """no cache_ttl"""
            runs["uncached"] = runs.get("uncached", 0) + 1
            return word

        @server.resource("test://weather/{city}", cache_ttl=60, cache_scope="public", inline=True)
        def weather(city: str) -> str:
            runs["weather"] = runs.get("weather", 0) + 1
            return f"sunny in {city}"

        self.transport = StreamableHTTP(Pipeline(server, PipelineSettings(cache=self.cache)))

    def post(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        request_id: int | str = 1,
        version: str = "2025-11-25",
        headers: dict[bytes, bytes] | None = None,
        accept: bytes = b"application/json, text/event-stream",
    ) -> Any:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        all_headers = {b"accept": accept, b"mcp-protocol-version": version.encode()}
        if version == SESSIONLESS:
            params = dict(params or {})
            params["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": SESSIONLESS,
                "io.modelcontextprotocol/clientCapabilities": {},
            }
            all_headers[b"mcp-method"] = method.encode()
            name = params.get("name", params.get("uri"))
            if name is not None:
                all_headers[b"mcp-name"] = str(name).encode()
        if params is not None:
            message["params"] = params
        all_headers.update(headers or {})
        answer = serve(self.transport, mcp_request(message, all_headers)).messages()[-1]
        assert answer["id"] == request_id
        return answer

    def call(self, tool: str, **arguments: Any) -> Any:
        headers = arguments.pop("headers", None)
        request_id = arguments.pop("request_id", 1)
        version = arguments.pop("version", "2025-11-25")
        answer = self.post(
            "tools/call", {"name": tool, "arguments": arguments},
            request_id=request_id, version=version, headers=headers,
        )  # fmt: skip
        return answer.get("result", answer.get("error"))


def test_a_public_tool_runs_once_per_arguments_and_every_caller_gets_its_own_id() -> None:
    h = Harness()
    first = h.call("shared", word="a", request_id=1)
    second = h.call("shared", word="a", request_id="two")  # answered from the cache
    assert first == second == {"content": [{"type": "text", "text": "A"}], "isError": False}
    assert h.runs["shared"] == 1
    h.call("shared", word="b")
    assert h.runs["shared"] == 2
    assert h.cache is not None and h.cache.stats().hits == 1


def test_arguments_are_keyed_canonically_and_versions_apart() -> None:
    h = Harness()
    h.post("tools/call", {"name": "picky", "arguments": {"n": 5}})
    h.post("tools/call", {"arguments": {"n": 5}, "name": "picky"})
    assert h.runs["picky"] == 1
    h.call("picky", n=5, version="2025-06-18")  # results are shaped per version: its own entry
    assert h.runs["picky"] == 2


def test_private_results_are_kept_per_caller_and_never_for_anonymous_ones() -> None:
    h = Harness()
    h.call("mine", word="x")
    h.call("mine", word="x")
    assert h.runs["mine"] == 2  # anonymous: nothing private is shared
    alice = {b"authorization": b"Bearer alice"}
    bob = {b"authorization": b"Bearer bob"}
    assert h.call("mine", word="x", headers=alice)["content"][0]["text"] == "xx"
    h.call("mine", word="x", headers=alice)
    assert h.runs["mine"] == 3
    h.call("mine", word="x", headers=bob)
    assert h.runs["mine"] == 4
    assert h.cache is not None
    assert not any(b"alice" in repr(k).encode() for k in h.cache._entries)  # a digest, not the token


def test_errors_and_failures_are_not_kept() -> None:
    h = Harness()
    for _ in range(2):
        assert h.call("picky", n=-1)["isError"] is True
        assert h.call("picky", n=0)["code"] == -32602
        assert h.call("picky", n="x")["isError"] is True  # invalid arguments
    assert h.runs["picky"] == 4  # -1 and 0 ran twice each; "x" never reached the tool


def test_ttl_expiry_and_explicit_invalidation() -> None:
    h = Harness()
    h.call("shared", word="a")
    h.clock.now += 29
    h.call("shared", word="a")
    assert h.runs["shared"] == 1
    h.clock.now += 2  # past the 30 s
    h.call("shared", word="a")
    assert h.runs["shared"] == 2
    h.server.invalidate_cache(tool="shared")
    h.call("shared", word="a")
    assert h.runs["shared"] == 3
    h.server.invalidate_cache()
    h.call("shared", word="a")
    assert h.runs["shared"] == 4


def test_resource_reads_are_kept_until_updated_and_2026_clients_see_the_hints() -> None:
    h = Harness()
    read = {"uri": "test://weather/oslo"}
    legacy = h.post("resources/read", read)["result"]
    assert legacy["contents"][0]["text"] == "sunny in oslo" and "ttlMs" not in legacy
    h.post("resources/read", read)
    assert h.runs["weather"] == 1
    h.server.notify_resource_updated("test://weather/oslo")
    h.post("resources/read", read)
    assert h.runs["weather"] == 2
    modern = h.post("resources/read", read, version=SESSIONLESS)["result"]
    assert (modern["ttlMs"], modern["cacheScope"], modern["resultType"]) == (60000, "public", "complete")
    assert h.post("resources/read", read, version=SESSIONLESS)["result"] == modern
    assert h.runs["weather"] == 3


def test_lists_are_kept_until_the_registry_changes() -> None:
    h = Harness()
    names = {tool["name"] for tool in h.post("tools/list")["result"]["tools"]}
    assert "late" not in names
    assert h.cache is not None
    hits = h.cache.stats().hits
    h.post("tools/list")
    assert h.cache.stats().hits == hits + 1

    @h.server.tool(inline=True)
    def late() -> str:
        """added after the first list"""
        return "late"

    names = {tool["name"] for tool in h.post("tools/list")["result"]["tools"]}
    assert "late" in names


def test_a_changed_tool_does_not_answer_with_its_predecessors_results() -> None:
    h = Harness()
    assert h.call("shared", word="a")["content"][0]["text"] == "A"
    h.server.remove_tool("shared")

    @h.server.tool(name="shared", inline=True, cache_ttl=30, cache_scope="public")
    def shared_v2(word: str) -> str:
        """v2"""
        return word + "!"

    assert h.call("shared", word="a")["content"][0]["text"] == "a!"


def test_input_required_retries_are_not_answered_from_the_cache() -> None:
    h = Harness()
    h.call("shared", word="a", version=SESSIONLESS)
    h.call("shared", word="a", version=SESSIONLESS)
    assert h.runs["shared"] == 1
    params = {"name": "shared", "arguments": {"word": "a"}, "inputResponses": {}}
    h.post("tools/call", params, version=SESSIONLESS)
    assert h.runs["shared"] == 2


def test_sse_only_clients_get_the_cached_answer_as_an_event() -> None:
    h = Harness()
    h.call("shared", word="a")
    answer = h.post(
        "tools/call", {"name": "shared", "arguments": {"word": "a"}}, request_id=9, accept=b"text/event-stream"
    )
    assert answer["result"]["content"][0]["text"] == "A" and h.runs["shared"] == 1


def test_without_a_cache_everything_runs() -> None:
    h = Harness(cache=False)
    for _ in range(2):
        h.call("shared", word="a")
        h.post("resources/read", {"uri": "test://weather/oslo"})
    assert (h.runs["shared"], h.runs["weather"]) == (2, 2)


def test_declarations_are_checked() -> None:
    server = MCPServer("t")
    with pytest.raises(ValueError):
        server.add_tool(lambda: "x", name="a", cache_ttl=0)
    with pytest.raises(ValueError):
        server.add_tool(lambda: "x", name="b", cache_ttl=5, task_support="optional")
    with pytest.raises(ValueError):
        server.resource("test://r", cache_ttl=-1)
