"""The fleet on Redis (`--redis`): three real `python -m mcp_fast` instances on one real
`redis-server` (tests/redis_server.py: Debian's package, installed when missing, on a free port),
and every item the instances share crossing from one instance to another.

Requests go to each instance directly here, so a test chooses which instance takes what;
tests/test_fleet_nginx.py does the same behind nginx's round-robin. Waits are bounded (the fleet
tells the other instances through pub/sub, a few milliseconds later), never timed.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import RunningServer, start_server, stop_server
from httpclient import MCP_HEADERS, OpenStream, RawClient, Response, client_request_bytes, rpc_bytes
from redis_server import RedisServer, running_redis

from mcp_fast.app import build_fleet
from mcp_fast.config import parse_config
from mcp_fast.fleet.base import FleetUnavailable, Grant, LocalFleet
from mcp_fast.fleet.redis_fleet import RedisFleet, RedisSettings

SECRET = "fleet-redis-secret-0123456789abcdef0123456789abcdef"
LATEST = "2025-11-25"
SESSIONLESS = "2026-07-28"
TIMEOUT_S = 15.0


# -- the fleet ------------------------------------------------------------------------------------


@dataclass
class Fleet:
    redis: RedisServer
    instances: dict[str, RunningServer]

    def port(self, name: str) -> int:
        return self.instances[name].port


def start_instance(tmp: Path, redis: RedisServer, *extra: str) -> RunningServer:
    return start_server(
        tmp, "--redis", redis.url, "--session-secret", SECRET, "--sse-keepalive", "0.5", *extra
    )  # fmt: skip


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    with running_redis(tmp / "redis") as redis:
        instances: dict[str, RunningServer] = {}
        try:
            for name in ("a", "b", "c"):
                instances[name] = start_instance(tmp, redis)
            for server in instances.values():
                wait_ready(server.port)
            yield Fleet(redis, instances)
        finally:
            for server in instances.values():
                stop_server(server)
        for server in instances.values():
            log = server.log()
            assert "Traceback" not in log and " ERROR " not in log, log


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def get_path(port: int, path: str) -> Response:
    with RawClient(port, timeout=TIMEOUT_S) as client:
        client.send(client_request_bytes("GET", path))
        return client.read_response()


def wait_ready(port: int) -> None:
    wait_until(lambda: get_path(port, "/ready").status == 200, f"/ready on port {port}")


# -- requests --------------------------------------------------------------------------------------


def initialize(port: int, capabilities: dict[str, Any] | None = None) -> str:
    params = {
        "protocolVersion": LATEST,
        "capabilities": capabilities or {},
        "clientInfo": {"name": "t", "version": "1"},
    }
    with RawClient(port, timeout=TIMEOUT_S) as client:
        client.send(rpc_bytes("initialize", params, 1, **{"MCP-Protocol-Version": LATEST}))
        response = client.read_response()
    assert response.status == 200, response
    return response.headers["mcp-session-id"]


def session_headers(session: str) -> dict[str, str]:
    return {"Mcp-Session-Id": session, "MCP-Protocol-Version": LATEST}


def rpc(
    port: int, method: str, params: dict[str, Any] | None, session: str | None, request_id: Any = 1
) -> Response:
    headers = session_headers(session) if session else {"MCP-Protocol-Version": LATEST}
    with RawClient(port, timeout=TIMEOUT_S) as client:
        client.send(rpc_bytes(method, params, request_id, **headers))
        return client.read_response()


def result_of(response: Response) -> Any:
    assert response.status == 200, response
    message = (
        response.json()
        if response.headers.get("content-type", "").startswith("application/json")
        else response.sse_messages()[-1]
    )
    assert "result" in message, message
    return message["result"]


def delete(port: int, session: str) -> Response:
    with RawClient(port, timeout=TIMEOUT_S) as client:
        client.send(client_request_bytes("DELETE", "/mcp", b"", session_headers(session)))
        return client.read_response()


def open_stream(port: int, method: str, body: bytes, headers: dict[str, str]) -> tuple[RawClient, OpenStream]:
    client = RawClient(port, timeout=TIMEOUT_S)
    client.send(client_request_bytes(method, "/mcp", body, headers))
    return client, OpenStream(client, timeout=TIMEOUT_S)


def post_stream(
    port: int, session: str, method: str, params: dict[str, Any], request_id: Any = 1
) -> tuple[RawClient, OpenStream]:
    body = orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream", **session_headers(session)}
    return open_stream(port, "POST", body, headers)


def get_stream(port: int, session: str, last_event_id: str | None = None) -> tuple[RawClient, OpenStream]:
    headers = {"Accept": "text/event-stream", **session_headers(session)}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return open_stream(port, "GET", b"", headers)


@dataclass
class Event:
    id: str | None
    data: Any  # the JSON message; None for a priming event


class Events:
    """The SSE events of an OpenStream with their ids (OpenStream.next_message drops the ids)."""

    def __init__(self, stream: OpenStream) -> None:
        self.stream = stream
        self._text = ""

    def next(self, timeout: float = TIMEOUT_S) -> Event | None:
        deadline = time.monotonic() + timeout
        while True:
            while "\n\n" in self._text:
                block, self._text = self._text.split("\n\n", 1)
                lines = block.splitlines()
                if all(line.startswith(":") for line in lines):
                    continue  # a keep-alive comment
                ids = [line[3:].strip() for line in lines if line.startswith("id:")]
                data = "\n".join(line[5:].lstrip() for line in lines if line.startswith("data:"))
                return Event(ids[0] if ids else None, orjson.loads(data) if data else None)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no SSE event in time")
            chunk = self.stream.read_chunk(remaining)
            if chunk is None:
                return None
            self._text += chunk.decode()

    def until(self, condition: Callable[[Event], bool], timeout: float = TIMEOUT_S) -> list[Event]:
        """Events up to and including the first that meets ``condition``."""
        seen: list[Event] = []
        while True:
            event = self.next(timeout)
            assert event is not None, f"the stream ended first: {seen}"
            seen.append(event)
            if condition(event):
                return seen


def is_message(method: str) -> Callable[[Event], bool]:
    return lambda event: isinstance(event.data, dict) and event.data.get("method") == method


def sequence(event_id: str) -> tuple[str, int]:
    stream, _, seq = event_id.rpartition("_")
    return stream, int(seq)


# -- ended sessions ---------------------------------------------------------------------------------


def test_a_delete_on_one_instance_ends_the_session_on_every_instance(fleet: Fleet) -> None:
    session = initialize(fleet.port("a"))
    for name in ("a", "b", "c"):
        assert rpc(fleet.port(name), "ping", None, session).status == 200
    assert delete(fleet.port("b"), session).status == 200
    for name in ("a", "c"):
        wait_until(
            lambda name=name: rpc(fleet.port(name), "ping", None, session).status == 404, f"404 on {name}"
        )


def test_an_instance_that_starts_later_knows_the_sessions_ended_before(fleet: Fleet, tmp_path: Path) -> None:
    session = initialize(fleet.port("a"))
    assert delete(fleet.port("a"), session).status == 200
    late = start_instance(tmp_path, fleet.redis)
    try:
        wait_ready(late.port)
        assert rpc(late.port, "ping", None, session).status == 404
    finally:
        stop_server(late)


# -- cancellations and answers -----------------------------------------------------------------------


def test_a_cancellation_reaches_the_instance_that_runs_the_request(fleet: Fleet) -> None:
    session = initialize(fleet.port("a"))
    with RawClient(fleet.port("a"), timeout=TIMEOUT_S) as running:
        running.send(
            rpc_bytes(
                "tools/call",
                {"name": "slow_compute", "arguments": {"seconds": 60}},
                7,
                **session_headers(session),
            )
        )
        time.sleep(0.3)  # the call has started (a cancellation before it would find nothing to stop)
        cancel = rpc(
            fleet.port("b"),
            "notifications/cancelled",
            {"requestId": 7, "reason": "test"},
            session,
            request_id=None,
        )
        assert cancel.status == 202, cancel
        # No JSON-RPC response for a cancelled request: the POST ends with 202 and no body, long
        # before the tool's 60 s.
        response = running.read_response()
    assert response.status == 202 and response.body == b"", response


def answer_sampling(port: int, session: str, request_id: Any, text: str) -> Response:
    """The client's answer to a sampling/createMessage request, POSTed to ``port``."""
    result = {
        "role": "assistant",
        "content": {"type": "text", "text": text},
        "model": "m",
        "stopReason": "endTurn",
    }
    body = orjson.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})
    with RawClient(port, timeout=TIMEOUT_S) as client:
        client.send(client_request_bytes("POST", "/mcp", body, {**MCP_HEADERS, **session_headers(session)}))
        return client.read_response()


def test_an_answer_to_a_server_request_reaches_the_instance_whose_handler_waits(fleet: Fleet) -> None:
    session = initialize(fleet.port("a"), {"sampling": {}, "elicitation": {}})
    client, stream = post_stream(
        fleet.port("a"), session, "tools/call", {"name": "test_sampling", "arguments": {"prompt": "hi"}}, 3
    )
    with client:
        events = Events(stream)
        [*_, asked] = events.until(is_message("sampling/createMessage"))
        request_id = asked.data["id"]
        assert answer_sampling(fleet.port("b"), session, request_id, "from b").status == 202
        [*_, done] = events.until(lambda event: isinstance(event.data, dict) and event.data.get("id") == 3)
    assert "from b" in done.data["result"]["content"][0]["text"], done


def test_an_answer_from_another_session_is_refused_on_the_asking_instance(fleet: Fleet) -> None:
    session = initialize(fleet.port("a"), {"sampling": {}})
    intruder = initialize(fleet.port("b"), {"sampling": {}})
    client, stream = post_stream(
        fleet.port("a"), session, "tools/call", {"name": "test_sampling", "arguments": {"prompt": "hi"}}, 3
    )
    with client:
        events = Events(stream)
        [*_, asked] = events.until(is_message("sampling/createMessage"))
        assert answer_sampling(fleet.port("b"), intruder, asked.data["id"], "forged").status == 202
        assert answer_sampling(fleet.port("c"), session, asked.data["id"], "real").status == 202
        [*_, done] = events.until(lambda event: isinstance(event.data, dict) and event.data.get("id") == 3)
    assert "real" in done.data["result"]["content"][0]["text"], done


# -- the event store -----------------------------------------------------------------------------------


def test_a_post_stream_broken_on_one_instance_resumes_on_another_with_nothing_lost_or_repeated(
    fleet: Fleet,
) -> None:
    """slow_report sends four progress notifications over 2 s, then its result. The client reads
    the priming event and the first notification on a, drops the connection, and resumes on b
    with Last-Event-ID: b replays what a wrote meanwhile (from Redis) and follows the rest as a
    writes it. Every event arrives once, in order, ids without a gap."""
    session = initialize(fleet.port("a"))
    params = {"name": "slow_report", "arguments": {"seconds": 2}, "_meta": {"progressToken": "p"}}
    client, stream = post_stream(fleet.port("a"), session, "tools/call", params, 11)
    events = Events(stream)
    before = events.until(is_message("notifications/progress"))
    client.close()  # the connection breaks (2025: not a cancellation; the tool goes on)
    last_id = before[-1].id
    assert last_id is not None and before[0].data is None  # the priming event, then the first
    resumed_client, resumed = get_stream(fleet.port("b"), session, last_id)
    with resumed_client:
        assert resumed.status == 200, resumed.headers
        after = Events(resumed).until(
            lambda event: isinstance(event.data, dict) and event.data.get("id") == 11
        )
    received = before + after
    ids = [sequence(event.id) for event in received if event.id is not None]
    assert len({stream for stream, _ in ids}) == 1, ids
    assert [seq for _, seq in ids] == list(range(len(ids))), ids  # 0 (priming), 1, 2, ... once each
    progress = [
        event.data["params"]["progress"]
        for event in received
        if isinstance(event.data, dict) and event.data.get("method") == "notifications/progress"
    ]
    assert progress == [0, 1, 2, 3], progress
    assert received[-1].data["result"]["content"][0]["text"] == "report ready after 2 s"


def test_a_finished_post_stream_is_replayed_whole_on_another_instance(fleet: Fleet) -> None:
    session = initialize(fleet.port("a"))
    params = {"name": "countdown", "arguments": {"steps": 3}, "_meta": {"progressToken": "c"}}
    client, stream = post_stream(fleet.port("a"), session, "tools/call", params, 12)
    with client:
        whole = Events(stream).until(
            lambda event: isinstance(event.data, dict) and event.data.get("id") == 12
        )
    priming = whole[0].id
    assert priming is not None and priming.endswith("_0")
    time.sleep(0.2)  # written behind the stream, within a turn of a's loop (bounded below anyway)
    resumed_client, resumed = get_stream(fleet.port("c"), session, priming)
    with resumed_client:
        replayed = Events(resumed).until(
            lambda event: isinstance(event.data, dict) and event.data.get("id") == 12
        )
        assert Events(resumed).next() is None  # and the stream ends: the request was answered
    assert [(event.id, event.data) for event in replayed] == [(event.id, event.data) for event in whole[1:]]


def resume(port: int, session: str, last_event_id: str) -> Response:
    """A GET with Last-Event-ID whose answer ends: a refusal, or the replay of a finished stream."""
    headers = {"Accept": "text/event-stream", **session_headers(session), "Last-Event-ID": last_event_id}
    with RawClient(port, timeout=TIMEOUT_S) as client:
        client.send(client_request_bytes("GET", "/mcp", b"", headers))
        return client.read_response()


def assert_unreplayable(response: Response) -> None:
    """Neither the instance nor Redis can replay from the id: 400, -32600 (not a fresh stream
    that would hide the gap)."""
    assert response.status == 400, response
    error = response.json()["error"]
    assert error["code"] == -32600 and "Last-Event-ID" in error["message"], error


def test_a_stream_of_another_session_is_not_replayed(fleet: Fleet) -> None:
    """The stream is in Redis (and in a's memory), but it is another session's: refused on the
    instance that wrote it and on another alike."""
    session = initialize(fleet.port("a"))
    other = initialize(fleet.port("a"))
    client, stream = post_stream(
        fleet.port("a"), session, "tools/call", {"name": "countdown", "arguments": {"steps": 1}}, 5
    )
    with client:
        [priming, *_] = Events(stream).until(
            lambda event: isinstance(event.data, dict) and event.data.get("id") == 5
        )
    assert priming.id is not None
    time.sleep(0.2)
    for name in ("a", "b"):
        assert_unreplayable(resume(fleet.port(name), other, priming.id))
    assert resume(fleet.port("b"), session, priming.id).status == 200  # its own session's: replayed


def test_an_id_no_instance_nor_redis_knows_is_refused(fleet: Fleet) -> None:
    session = initialize(fleet.port("a"))
    for unknown in ("0123456789abcdef_3", "nosuchstream_3", "garbage", "_1"):
        for name in ("a", "b"):
            assert_unreplayable(resume(fleet.port(name), session, unknown))


def test_a_resume_from_events_redis_trimmed_or_expired_is_refused(tmp_path: Path) -> None:
    """--event-store-max-events 8 --event-store-max-age 1s: a stream of 301 events is trimmed in
    Redis (XADD MAXLEN ~ drops whole nodes: at least 8 are kept, fewer than 8 + 100) and in a's
    memory (the last 8). A resume from an early event is refused on both instances; one from the
    second-to-last event is replayed by b from Redis. Once Redis let the stream expire, b refuses
    every resume of it, while a, which still holds the last events in memory, replays them."""
    with running_redis(tmp_path / "redis") as redis:
        limits = ("--event-store-max-events", "8", "--event-store-max-age", "1s")
        a, b = start_instance(tmp_path, redis, *limits), start_instance(tmp_path, redis, *limits)
        try:
            wait_ready(a.port)
            wait_ready(b.port)
            session = initialize(a.port)
            params = {"name": "emit_notifications", "arguments": {"count": 300, "size": 1}}
            client, stream = post_stream(a.port, session, "tools/call", params, 7)
            with client:
                events = Events(stream).until(
                    lambda event: isinstance(event.data, dict) and event.data.get("id") == 7
                )
            ids = [event.id for event in events]
            assert all(ids) and len(ids) == 302 and sequence(ids[-1] or "")[1] == 301, ids[-3:]
            key = f"mcp_fast:es:{sequence(ids[0] or '')[0]}"
            time.sleep(0.2)  # written behind the stream
            length = int(redis.command("XLEN", key).strip().lstrip(b":"))
            assert 8 <= length < 8 + 100, length
            for port in (a.port, b.port):
                assert_unreplayable(resume(port, session, ids[5] or ""))
            replayed = resume(b.port, session, ids[-2] or "")
            assert replayed.status == 200 and replayed.sse_messages() == [events[-1].data], replayed
            wait_until(lambda: redis.command("EXISTS", key).strip() == b":0", "the stream to expire in Redis")
            assert_unreplayable(resume(b.port, session, ids[-2] or ""))
            kept = resume(a.port, session, ids[-2] or "")
            assert kept.status == 200 and kept.sse_messages() == [events[-1].data], kept
        finally:
            stop_server(a)
            stop_server(b)
    for server in (a, b):
        assert "Traceback" not in server.log() and " ERROR " not in server.log(), server.log()


def test_a_get_stream_resumes_on_another_instance_and_goes_on_there(fleet: Fleet) -> None:
    session = initialize(fleet.port("a"))
    client, stream = get_stream(fleet.port("a"), session)
    events = Events(stream)
    priming = events.next()
    assert priming is not None and priming.data is None
    assert result_of(
        rpc(fleet.port("c"), "tools/call", {"name": "test_trigger_prompt_change", "arguments": {}}, session)
    )
    [*_, changed] = events.until(is_message("notifications/prompts/list_changed"))
    client.close()
    time.sleep(0.2)
    # Resumed from the priming event: b replays the notification the client "missed", then
    # the stream goes on on b.
    resumed_client, resumed = get_stream(fleet.port("b"), session, priming.id)
    with resumed_client:
        again = Events(resumed)
        replayed = again.next()
        assert replayed is not None and (replayed.id, replayed.data) == (changed.id, changed.data)
        assert result_of(
            rpc(fleet.port("a"), "tools/call", {"name": "test_trigger_tool_change", "arguments": {}}, session)
        )
        [*_, later] = again.until(is_message("notifications/tools/list_changed"))
    assert later.id is not None


# -- notifications ----------------------------------------------------------------------------------------


def test_notifications_raised_on_one_instance_reach_get_streams_held_by_another(fleet: Fleet) -> None:
    session = initialize(fleet.port("a"))
    assert (
        result_of(rpc(fleet.port("a"), "resources/subscribe", {"uri": "test://watched-resource"}, session))
        == {}
    )
    client, stream = get_stream(fleet.port("a"), session)
    with client:
        events = Events(stream)
        events.next()  # priming
        result_of(
            rpc(fleet.port("c"), "tools/call", {"name": "update_watched_resource", "arguments": {}}, session)
        )
        [*_, updated] = events.until(is_message("notifications/resources/updated"))
        assert updated.data["params"] == {"uri": "test://watched-resource"}
        result_of(
            rpc(fleet.port("b"), "tools/call", {"name": "test_trigger_tool_change", "arguments": {}}, session)
        )
        events.until(is_message("notifications/tools/list_changed"))


def test_notifications_raised_on_one_instance_reach_a_listen_stream_held_by_another(fleet: Fleet) -> None:
    meta = {
        "io.modelcontextprotocol/protocolVersion": SESSIONLESS,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
    }
    params = {
        "notifications": {"toolsListChanged": True, "resourceSubscriptions": ["test://watched-resource"]},
        "_meta": meta,
    }
    body = orjson.dumps(
        {"jsonrpc": "2.0", "id": "listen-1", "method": "subscriptions/listen", "params": params}
    )
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": SESSIONLESS,
        "Mcp-Method": "subscriptions/listen",
    }
    client, stream = open_stream(fleet.port("b"), "POST", body, headers)
    with client:
        events = Events(stream)
        events.until(is_message("notifications/subscriptions/acknowledged"))
        session = initialize(fleet.port("c"))
        result_of(
            rpc(fleet.port("c"), "tools/call", {"name": "test_trigger_tool_change", "arguments": {}}, session)
        )
        [*_, changed] = events.until(is_message("notifications/tools/list_changed"))
        assert changed.data["params"]["_meta"] == {"io.modelcontextprotocol/subscriptionId": "listen-1"}
        result_of(
            rpc(fleet.port("a"), "tools/call", {"name": "update_watched_resource", "arguments": {}}, session)
        )
        events.until(is_message("notifications/resources/updated"))


# -- tasks ------------------------------------------------------------------------------------------------------


def start_task(port: int, session: str, seconds: float) -> str:
    params = {
        "name": "slow_compute",
        "arguments": {"seconds": seconds, "label": "t"},
        "task": {"ttl": 60_000},
    }
    created = result_of(rpc(port, "tools/call", params, session))
    return str(created["task"]["taskId"])


def test_a_task_created_on_one_instance_is_read_listed_and_answered_on_the_others(fleet: Fleet) -> None:
    session = initialize(fleet.port("a"))
    task_id = start_task(fleet.port("a"), session, 1.0)
    seen = result_of(rpc(fleet.port("b"), "tasks/get", {"taskId": task_id}, session))
    assert seen["taskId"] == task_id and seen["status"] in ("working", "completed"), seen
    listed = result_of(rpc(fleet.port("c"), "tasks/list", {}, session))
    assert task_id in [task["taskId"] for task in listed["tasks"]], listed
    # tasks/result on b waits for the task that runs on a, and gets its result.
    outcome = result_of(rpc(fleet.port("b"), "tasks/result", {"taskId": task_id}, session))
    assert outcome["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}
    assert result_of(rpc(fleet.port("c"), "tasks/get", {"taskId": task_id}, session))["status"] == "completed"
    # Another session sees nothing of it, on any instance.
    stranger = initialize(fleet.port("b"))
    refused = rpc(fleet.port("c"), "tasks/get", {"taskId": task_id}, stranger).json()
    assert refused["error"]["code"] == -32602, refused


def test_a_task_is_cancelled_from_another_instance(fleet: Fleet) -> None:
    session = initialize(fleet.port("a"))
    task_id = start_task(fleet.port("a"), session, 60.0)
    cancelled = result_of(rpc(fleet.port("c"), "tasks/cancel", {"taskId": task_id}, session))
    assert cancelled["status"] == "cancelled", cancelled
    wait_until(
        lambda: (
            result_of(rpc(fleet.port("a"), "tasks/get", {"taskId": task_id}, session))["status"]
            == "cancelled"
        ),
        "the task cancelled where it runs",
    )
    # Its record reaches the fleet a moment later (written behind the change, in order).
    wait_until(
        lambda: (
            result_of(rpc(fleet.port("b"), "tasks/get", {"taskId": task_id}, session))["status"]
            == "cancelled"
        ),
        "the cancelled status on another instance",
    )
    again = rpc(fleet.port("b"), "tasks/cancel", {"taskId": task_id}, session).json()
    assert again["error"]["code"] == -32602 and "terminal" in again["error"]["message"], again


def test_task_status_reaches_the_owners_get_stream_on_another_instance(fleet: Fleet) -> None:
    session = initialize(fleet.port("a"))
    client, stream = get_stream(fleet.port("b"), session)
    with client:
        events = Events(stream)
        events.next()  # priming
        task_id = start_task(fleet.port("a"), session, 0.1)
        [*_, status] = events.until(
            lambda event: (
                is_message("notifications/tasks/status")(event)
                and event.data["params"]["status"] == "completed"
            )
        )
    assert status.data["params"]["taskId"] == task_id


# -- a request that needs no shared state -----------------------------------------------------------------------


def command_counts(redis: RedisServer) -> dict[str, int]:
    reply = redis.command("INFO", "commandstats").decode()
    return {match[1]: int(match[2]) for match in re.finditer(r"cmdstat_([\w|]+):calls=(\d+)", reply)}


def test_requests_that_need_no_shared_state_make_no_redis_call(fleet: Fleet) -> None:
    """Sessions are tokens and the denylist is local: tool calls, lists and pings with a session
    on every instance add no Redis command but the supervisors' pings."""
    session = initialize(fleet.port("a"))
    before = command_counts(fleet.redis)
    for index in range(60):
        port = fleet.port("abc"[index % 3])
        assert result_of(rpc(port, "tools/call", {"name": "echo", "arguments": {"message": "x"}}, session))
        assert result_of(rpc(port, "tools/list", None, session))
    after = command_counts(fleet.redis)
    grew = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    grew.pop("ping", None)
    grew.pop("info", None)  # this test's own look
    assert grew == {}, grew


# -- rate limits shared by the fleet -------------------------------------------------------------------------


def calls_alternating(clients: list[RawClient], session: str, count: int, first_id: int) -> list[Response]:
    """``count`` tools/call of one session, alternating between the instances' connections."""
    replies = []
    for number in range(count):
        client = clients[number % len(clients)]
        params = {"name": "echo", "arguments": {"message": "x"}}
        client.send(rpc_bytes("tools/call", params, first_id + number, **session_headers(session)))
        replies.append(client.read_response())
    return replies


def test_a_rate_limit_is_shared_by_the_fleet_and_falls_back_to_each_instance_while_redis_is_away(
    tmp_path: Path,
) -> None:
    """--rate-limit 100/1h on two instances (a lease of 5 tokens; the refill, a token per 36 s,
    plays no part here). A session alternating between them: exactly 100 calls pass in all
    (without --redis each instance would let 100 through), the first 429 comes after at least
    95 (the lease slack: up to 5 tokens held by the other instance), and Redis is asked once
    per lease or top-up, not once per request. Redis killed: every request is still answered
    (no 503), limited by each instance's own bucket: 100 more per instance, a WARNING once.
    Redis back: the limits are shared again (an INFO once)."""
    with running_redis(tmp_path / "redis") as redis:
        limit = ("--rate-limit", "100/1h")
        a, b = start_instance(tmp_path, redis, *limit), start_instance(tmp_path, redis, *limit)
        try:
            wait_ready(a.port)
            wait_ready(b.port)
            session = initialize(a.port)
            clients = [RawClient(a.port, timeout=TIMEOUT_S), RawClient(b.port, timeout=TIMEOUT_S)]
            try:
                before = command_counts(redis)
                replies = calls_alternating(clients, session, 200, 10)
                shared_calls = sum(
                    count - before.get(name, 0)
                    for name, count in command_counts(redis).items()
                    if name.startswith("eval")
                )
                statuses = [reply.status for reply in replies]
                assert set(statuses) == {200, 429}, statuses
                assert statuses.count(200) == 100, statuses
                assert 95 <= statuses.index(429) <= 100, statuses
                refused = replies[statuses.index(429)]
                assert 1 <= int(refused.headers["retry-after"]) <= 36, refused.headers
                assert refused.json()["error"]["code"] == -32000, refused
                assert shared_calls <= 60, shared_calls  # 100 tokens in leases of 5, topped up at 2 left

                redis.kill()
                for server in (a, b):
                    wait_until(lambda port=server.port: get_path(port, "/ready").status == 503, "/ready 503")
                clients = [RawClient(a.port, timeout=TIMEOUT_S), RawClient(b.port, timeout=TIMEOUT_S)]
                statuses = [reply.status for reply in calls_alternating(clients, session, 220, 1000)]
                assert set(statuses) == {200, 429}, statuses  # never 503: limits need no Redis
                assert statuses.count(200) == 200, statuses  # each instance's own 100

                redis.start()
                wait_ready(a.port)
                wait_ready(b.port)
                clients = [RawClient(a.port, timeout=TIMEOUT_S), RawClient(b.port, timeout=TIMEOUT_S)]
                # The limited session stays limited (each instance remembers until when); another
                # takes from the new Redis's buckets.
                assert [reply.status for reply in calls_alternating(clients, session, 2, 2000)] == [429, 429]
                other = initialize(b.port)
                statuses = [reply.status for reply in calls_alternating(clients, other, 4, 3000)]
                assert statuses == [200] * 4, statuses
                assert redis.command("KEYS", "mcp_fast:rl:*").count(b"limit::session ") == 1
            finally:
                for client in clients:
                    client.close()
        finally:
            stop_server(a)
            stop_server(b)
    for server in (a, b):
        log = server.log()
        assert len(log_lines(server, r"WARNING mcp_fast.ratelimit: rate limits: the fleet store")) == 1, log
        assert len(log_lines(server, r"INFO mcp_fast.ratelimit: rate limits are shared by the fleet again")) == 1
        assert "Traceback" not in log and " ERROR " not in log, log


# -- the fleet's own operations, on the real Redis ---------------------------------------------------------------


def test_token_buckets_are_atomic_across_instances(fleet: Fleet) -> None:
    """Two fleets (two instances' worth) take from one bucket at once: exactly its burst passes."""

    async def main() -> list[bool]:
        fleets = [RedisFleet(RedisSettings(fleet.redis.url, prefix="bucket-test:")) for _ in range(2)]
        for member in fleets:
            await member.start()
        try:
            takes = [member.take("caller-1", 0.001, 25) for _ in range(40) for member in fleets]
            results = await asyncio.gather(*takes)
            return [result.allowed for result in results]
        finally:
            for member in fleets:
                await member.close()

    allowed = asyncio.run(main())
    assert allowed.count(True) == 25 and len(allowed) == 80


def test_leases_are_taken_atomically_across_instances(fleet: Fleet) -> None:
    """The rate limiter's leases (take_up_to): two fleets ask for 4 tokens at a time, at once,
    from a bucket of 25; together they get exactly 25, each grant whole and at most 4, and once
    the bucket is empty a grant of 0 says when a token will be there."""

    async def main() -> list[Grant]:
        fleets = [RedisFleet(RedisSettings(fleet.redis.url, prefix="lease-test:")) for _ in range(2)]
        for member in fleets:
            await member.start()
        try:
            leases = [member.take_up_to("caller-1", 0.5, 25, 4) for _ in range(10) for member in fleets]
            return list(await asyncio.gather(*leases))
        finally:
            for member in fleets:
                await member.close()

    grants = asyncio.run(main())
    assert sum(grant.tokens for grant in grants) == 25, grants
    assert all(0 <= grant.tokens <= 4 for grant in grants), grants
    empty = [grant for grant in grants if grant.tokens == 0]
    assert empty and all(0 < grant.retry_after <= 2.0 for grant in empty), empty


def test_a_local_lease_takes_what_the_bucket_has() -> None:
    buckets = LocalFleet()._buckets
    assert buckets.take_up_to("k", 1.0, 10, 4, now=100.0) == Grant(4, 0.0)
    assert buckets.take_up_to("k", 1.0, 10, 4, now=100.0) == Grant(4, 0.0)
    assert buckets.take_up_to("k", 1.0, 10, 4, now=100.0) == Grant(2, 0.0)  # what is left
    empty = buckets.take_up_to("k", 1.0, 10, 4, now=100.5)
    assert empty.tokens == 0 and empty.retry_after == pytest.approx(0.5)
    assert buckets.take_up_to("k", 1.0, 10, 4, now=103.0) == Grant(3, 0.0)  # refilled meanwhile


def test_token_bucket_refills_and_says_when_to_retry() -> None:
    async def main() -> None:
        local = LocalFleet()
        first = await local.take("k", 10.0, 2)
        second = await local.take("k", 10.0, 2)
        third = await local.take("k", 10.0, 2)
        assert (first.allowed, second.allowed, third.allowed) == (True, True, False)
        assert 0 < third.retry_after <= 0.1

    asyncio.run(main())
    buckets = LocalFleet()._buckets
    assert buckets.take("k", 1.0, 1, now=100.0).allowed
    assert not buckets.take("k", 1.0, 1, now=100.5).allowed
    assert buckets.take("k", 1.0, 1, now=101.01).allowed


def test_an_operation_fails_fast_while_redis_is_unreachable(tmp_path: Path) -> None:
    """Nothing listens on the port: start() returns (the instance starts, not ready), and every
    operation raises FleetUnavailable at once instead of waiting."""
    with running_redis(tmp_path) as redis:
        url = redis.url
    fleet_down = RedisFleet(RedisSettings(url, timeout=0.2))

    async def main() -> None:
        await fleet_down.start()
        try:
            assert not fleet_down.available
            with pytest.raises(FleetUnavailable):
                await fleet_down.take("k", 1.0, 1)
            with pytest.raises(FleetUnavailable):
                await fleet_down.end_session("s", time.time() + 60)
        finally:
            await fleet_down.close()

    asyncio.run(main())


# -- Redis killed and restarted --------------------------------------------------------------------------------------


def log_lines(server: RunningServer, pattern: str) -> list[str]:
    return [line for line in server.log().splitlines() if re.search(pattern, line)]


def test_redis_killed_and_restarted_while_a_client_is_served(tmp_path: Path) -> None:
    """A client keeps calling tools through two instances while Redis is killed (SIGKILL) and
    started again: every call is answered; what needs Redis meanwhile is refused with 503 and
    -32603 (never hangs); /ready says redis is failing; once Redis is back everything works
    without a restart, and an ending refused meanwhile reaches the other instance."""
    with running_redis(tmp_path / "redis") as redis:
        a, b = start_instance(tmp_path, redis), start_instance(tmp_path, redis)
        try:
            wait_ready(a.port)
            wait_ready(b.port)
            session = initialize(a.port)
            failures: list[Any] = []
            stop = threading.Event()
            served = [0]

            def client() -> None:
                index = 0
                while not stop.is_set():
                    port = (a.port, b.port)[index % 2]
                    index += 1
                    response = rpc(
                        port,
                        "tools/call",
                        {"name": "echo", "arguments": {"message": str(index)}},
                        session,
                        index,
                    )
                    if response.status != 200 or response.json().get("result", {}).get("content", [{}])[
                        0
                    ].get("text") != str(index):
                        failures.append(response)
                    served[0] += 1
                    time.sleep(0.01)

            thread = threading.Thread(target=client)
            thread.start()
            try:
                redis.kill()
                wait_until(lambda: get_path(a.port, "/ready").status == 503, "/ready 503 on a")
                ready = get_path(a.port, "/ready")
                assert ready.json()["checks"]["redis"] == "failing", ready
                # What needs Redis: refused with a clear error, at once.
                other = initialize(a.port)
                refused = delete(a.port, other)
                assert refused.status == 503, refused
                assert refused.json()["error"] == {
                    "code": -32603,
                    "message": "Internal error: the fleet store (Redis) is unavailable",
                }
                task = rpc(
                    b.port,
                    "tools/call",
                    {"name": "slow_compute", "arguments": {"seconds": 0}, "task": {}},
                    session,
                )
                assert task.status == 503 and task.json()["error"]["code"] == -32603, task
                served_while_down = served[0]
                wait_until(lambda: served[0] > served_while_down + 20, "calls served while Redis is down")
                redis.start()
                wait_until(
                    lambda: (
                        get_path(a.port, "/ready").status == 200 and get_path(b.port, "/ready").status == 200
                    ),
                    "/ready 200 again",
                )
                # The ending refused while Redis was down reached b once it was back.
                wait_until(lambda: rpc(b.port, "ping", None, other).status == 404, "the earlier DELETE on b")
                # And what needs Redis works again, without a restart.
                task_id = start_task(b.port, session, 0.1)
                assert result_of(rpc(a.port, "tasks/result", {"taskId": task_id}, session))
                third = initialize(b.port)
                assert delete(b.port, third).status == 200
                wait_until(
                    lambda: rpc(a.port, "ping", None, third).status == 404, "a DELETE after the outage"
                )
            finally:
                stop.set()
                thread.join(timeout=TIMEOUT_S)
            assert not failures, failures[:3]
            assert served[0] > 20  # (the wait above saw 20 while Redis was down)
        finally:
            stop_server(a)
            stop_server(b)
        for server in (a, b):
            assert (
                len(log_lines(server, r"WARNING mcp_fast.fleet: the fleet store .* is unavailable")) == 1
            ), server.log()
            assert len(log_lines(server, r"INFO mcp_fast.fleet: the fleet store .* is back")) == 1, (
                server.log()
            )
            assert "Traceback" not in server.log() and " ERROR " not in server.log(), server.log()


def test_a_redis_that_hangs_gets_503_within_the_timeout_not_a_hang(tmp_path: Path) -> None:
    """Redis stopped (SIGSTOP): connections stay open and nothing answers. What needs Redis is
    refused once --redis-timeout has passed (the client's own 5 s timeout would fail the test
    first), what does not is served, /ready turns 503; after SIGCONT all is well again."""
    with running_redis(tmp_path / "redis") as redis:
        server = start_instance(tmp_path, redis, "--redis-timeout", "300ms")
        try:
            wait_ready(server.port)
            session = initialize(server.port)
            other = initialize(server.port)
            redis.pause()
            try:
                with RawClient(server.port, timeout=5) as client:
                    started = time.monotonic()
                    client.send(client_request_bytes("DELETE", "/mcp", b"", session_headers(other)))
                    refused = client.read_response()
                    waited = time.monotonic() - started
                assert refused.status == 503 and refused.json()["error"]["code"] == -32603, refused
                assert "Redis" in refused.json()["error"]["message"], refused
                # --redis-timeout bounds the wait (a generous margin for a loaded machine; the
                # client itself would give up only at 5 s).
                assert waited < 0.3 + 1.5, waited
                assert result_of(
                    rpc(server.port, "tools/call", {"name": "echo", "arguments": {"message": "m"}}, session)
                )
                wait_until(
                    lambda: get_path(server.port, "/ready").status == 503, "/ready 503 while Redis hangs"
                )
            finally:
                redis.resume()
            wait_ready(server.port)
            assert delete(server.port, session).status == 200
        finally:
            stop_server(server)
    assert "Traceback" not in server.log() and " ERROR " not in server.log(), server.log()


def test_an_instance_starts_without_redis_and_becomes_ready_when_it_comes(tmp_path: Path) -> None:
    with running_redis(tmp_path / "redis") as redis:
        redis.stop()
        server = start_instance(tmp_path, redis)
        try:
            ready = get_path(server.port, "/ready")
            assert ready.status == 503 and ready.json()["checks"] == {"redis": "failing"}, ready
            session = initialize(server.port)
            assert result_of(
                rpc(server.port, "tools/call", {"name": "echo", "arguments": {"message": "m"}}, session)
            )
            redis.start()
            wait_ready(server.port)
            assert delete(server.port, session).status == 200
        finally:
            stop_server(server)
    assert len(log_lines(server, r"WARNING mcp_fast.fleet: the fleet store .* is unavailable")) == 1, (
        server.log()
    )
    assert "Traceback" not in server.log(), server.log()


def test_the_fleet_is_redis_with_redis_and_this_process_otherwise() -> None:
    """stdio serves one client per process: nobody to share with, whatever the environment says."""
    assert isinstance(build_fleet(parse_config(["--redis", "redis://127.0.0.1:1"], {})), RedisFleet)
    assert isinstance(build_fleet(parse_config([], {})), LocalFleet)
    stdio = parse_config(["--transport", "stdio"], {"MCP_FAST_REDIS_URL": "redis://127.0.0.1:1"})
    assert isinstance(build_fleet(stdio), LocalFleet)
