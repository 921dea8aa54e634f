"""The fleet on Redis behind real nginx: deploy/nginx/ as shipped (plain round-robin, no affinity;
tests/test_nginx.py runs it and explains the rendering) in front of two instances that share a
real redis-server (`--redis`, no `--fleet-dir`). Each shared item crosses instances under
round-robin, with the official `mcp` client where it fits, and a rate limit that is the
fleet's; then Redis is killed and restarted while the official client is served through nginx.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import RunningServer, start_server
from httpclient import OpenStream, RawClient, client_request_bytes, rpc_bytes
from mcp import Client
from redis_server import RedisServer, running_redis
from test_fleet_redis import (
    Events,
    get_path,
    get_stream,
    is_message,
    post_stream,
    result_of,
    sequence,
    wait_until,
)
from test_nginx import (
    PUBLIC_HOST,
    SECRET,
    Fleet,
    Recorder,
    initialize,
    only_text,
    raw_rpc,
    run_client,
    running_fleet,
    session_headers,
)
from test_nginx import (
    test_server_to_client_requests_find_the_instance_that_asked as answers_cross_instances,
)

pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


def start_backend(tmp: Path, name: str, redis: RedisServer, *extra: str) -> RunningServer:
    """An instance as deploy/nginx/ wants it, sharing Redis instead of a directory (ready: its
    Redis answers), with ``extra`` flags."""
    server = start_server(
        tmp,
        "--session-secret", SECRET,
        "--allowed-hosts", f"127.0.0.1,localhost,{PUBLIC_HOST}",
        "--legacy-messages-path", f"/messages/{name}",
        "--redis", redis.url,
        "--sse-keepalive", "0.5",
        *extra,
    )  # fmt: skip
    wait_until(lambda: get_path(server.port, "/ready").status == 200, f"{name} ready")
    return server


@dataclass
class NginxFleet:
    """test_nginx's fleet (nginx, instances a and b) and the Redis they share."""

    fleet: Fleet
    redis: RedisServer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fleet, name)


@contextlib.contextmanager
def redis_fleet(tmp: Path, *extra: str) -> Iterator[NginxFleet]:
    with (
        running_redis(tmp / "redis") as redis,
        running_fleet(tmp, redis, *extra, backend=start_backend) as fleet,
    ):
        yield NginxFleet(fleet, redis)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxFleet]:
    with redis_fleet(tmp_path_factory.mktemp("fleet-redis-nginx")) as running:
        yield running


def assert_ended_everywhere(fleet: NginxFleet, recorder: Recorder, what: str) -> None:
    """The official client's DELETE (on exit) was answered 200, and every instance refuses its session."""
    [delete] = [e for e in recorder.exchanges if e.method == "DELETE"]
    assert delete.status == 200
    session = recorder.exchanges[-1].session
    assert session is not None
    for server in fleet.backends.values():
        wait_until(
            lambda server=server: (
                raw_rpc(server.port, "ping", None, 1, **session_headers(session)).status == 404
            ),
            what,
        )


def through(fleet: NginxFleet, method: str, params: dict[str, Any] | None, session: str) -> Any:
    return raw_rpc(fleet.nginx.http_port, method, params, 1, **session_headers(session))


def next_request_goes_to(fleet: NginxFleet, session: str, instance: str) -> None:
    """Send pings through nginx until one lands on the instance *other* than ``instance``:
    round-robin sends the next request to ``instance``."""
    for _ in range(8):
        ping = through(fleet, "ping", None, session)
        if fleet.instance_of(ping.headers.get("x-upstream-addr")) != instance:
            return
    raise AssertionError("nginx did not alternate")


def test_answers_to_sampling_and_elicitation_cross_instances(fleet: NginxFleet) -> None:
    answers_cross_instances(fleet.fleet)  # test_nginx's test, on instances that share Redis


def test_the_official_client_deletes_its_session_on_every_instance(fleet: NginxFleet) -> None:
    recorder = Recorder()

    async def body(client: Client) -> str:
        return only_text(await client.call_tool("echo", {"message": "hi"}))

    assert run_client(fleet.nginx.url, body, recorder) == "hi"  # the client DELETEs on exit
    assert_ended_everywhere(fleet, recorder, "404 on every instance")


def test_a_notification_raised_on_one_instance_reaches_the_stream_held_by_the_other(
    fleet: NginxFleet,
) -> None:
    session = initialize(fleet.nginx.http_port)
    client = RawClient(fleet.nginx.http_port, timeout=15)
    client.send(
        client_request_bytes("GET", "/mcp", b"", {"Accept": "text/event-stream", **session_headers(session)})
    )
    stream = OpenStream(client, timeout=15)
    with client:
        holder = fleet.instance_of(stream.headers.get("x-upstream-addr"))
        other = fleet.backends["b" if holder == "a" else "a"]
        events = Events(stream)
        events.next()  # priming
        triggered = raw_rpc(
            other.port,
            "tools/call",
            {"name": "test_trigger_tool_change", "arguments": {}},
            1,
            **session_headers(session),
        )
        assert triggered.status == 200
        events.until(is_message("notifications/tools/list_changed"))


def test_a_cancellation_through_nginx_reaches_the_instance_that_runs_the_request(fleet: NginxFleet) -> None:
    session = initialize(fleet.nginx.http_port)
    params = {"name": "slow_compute", "arguments": {"seconds": 60}}
    with RawClient(fleet.nginx.http_port, timeout=15) as running:
        running.send(rpc_bytes("tools/call", params, 9, **session_headers(session)))
        # Which instance runs it: the one the next ping does not reach (nginx alternates).
        time.sleep(0.3)
        ping = through(fleet, "ping", None, session)
        runs_on = "b" if fleet.instance_of(ping.headers.get("x-upstream-addr")) == "a" else "a"
        next_request_goes_to(fleet, session, "b" if runs_on == "a" else "a")
        cancel = raw_rpc(
            fleet.nginx.http_port,
            "notifications/cancelled",
            {"requestId": 9},
            None,
            **session_headers(session),
        )
        assert cancel.status == 202 and fleet.instance_of(cancel.headers.get("x-upstream-addr")) != runs_on
        answered = running.read_response()  # no JSON-RPC response: 202, long before 60 s
    assert answered.status == 202 and answered.body == b"", answered
    assert fleet.instance_of(answered.headers.get("x-upstream-addr")) == runs_on


def test_a_task_created_through_one_instance_is_collected_through_the_other(fleet: NginxFleet) -> None:
    session = initialize(fleet.nginx.http_port)
    created = through(
        fleet, "tools/call", {"name": "slow_compute", "arguments": {"seconds": 0.5}, "task": {}}, session
    )
    task_id = result_of(created)["task"]["taskId"]
    runs_on = fleet.instance_of(created.headers.get("x-upstream-addr"))
    next_request_goes_to(fleet, session, "b" if runs_on == "a" else "a")
    collected = through(fleet, "tasks/result", {"taskId": task_id}, session)
    assert fleet.instance_of(collected.headers.get("x-upstream-addr")) != runs_on
    assert result_of(collected)["content"][0]["text"] == "computed  in 0.5 s"


def test_a_task_created_through_one_instance_is_cancelled_through_the_other(fleet: NginxFleet) -> None:
    session = initialize(fleet.nginx.http_port)
    created = through(
        fleet, "tools/call", {"name": "slow_compute", "arguments": {"seconds": 60}, "task": {}}, session
    )
    task_id = result_of(created)["task"]["taskId"]
    runs_on = fleet.instance_of(created.headers.get("x-upstream-addr"))
    other = "b" if runs_on == "a" else "a"
    next_request_goes_to(fleet, session, other)
    cancelled = through(fleet, "tasks/cancel", {"taskId": task_id}, session)
    assert fleet.instance_of(cancelled.headers.get("x-upstream-addr")) == other
    assert result_of(cancelled)["status"] == "cancelled"
    for name in ("a", "b"):  # where it ran (cancelled there), and in the record the other reads
        port = fleet.backends[name].port
        wait_until(
            lambda port=port: (
                result_of(raw_rpc(port, "tasks/get", {"taskId": task_id}, 1, **session_headers(session)))[
                    "status"
                ]
                == "cancelled"
            ),
            f"cancelled as instance {name} sees it",
        )


def test_a_stream_broken_on_one_instance_resumes_through_nginx_on_the_other(fleet: NginxFleet) -> None:
    session = initialize(fleet.nginx.http_port)
    params = {"name": "slow_report", "arguments": {"seconds": 2}, "_meta": {"progressToken": "p"}}
    client, stream = post_stream(fleet.nginx.http_port, session, "tools/call", params, 21)
    runs_on = fleet.instance_of(stream.headers.get("x-upstream-addr"))
    before = Events(stream).until(is_message("notifications/progress"))
    client.close()
    next_request_goes_to(fleet, session, "b" if runs_on == "a" else "a")
    resumed_client, resumed = get_stream(fleet.nginx.http_port, session, before[-1].id)
    with resumed_client:
        assert fleet.instance_of(resumed.headers.get("x-upstream-addr")) != runs_on
        after = Events(resumed).until(
            lambda event: isinstance(event.data, dict) and event.data.get("id") == 21
        )
    seqs = [sequence(event.id)[1] for event in before + after if event.id is not None]
    assert seqs == list(range(len(seqs))), seqs
    assert after[-1].data["result"]["content"][0]["text"] == "report ready after 2 s"


def test_redis_killed_and_restarted_while_the_official_client_is_served(tmp_path: Path) -> None:
    """The official client calls tools through nginx over two instances while Redis is killed
    and started again: every call is answered; afterwards the session still ends everywhere."""
    with redis_fleet(tmp_path) as fleet:
        done = threading.Event()
        phase: dict[str, int] = {"calls": 0}

        def outage() -> None:
            wait_until(lambda: phase["calls"] >= 10, "calls before the outage")
            fleet.redis.kill()
            wait_until(lambda: get_path(fleet.backends["a"].port, "/ready").status == 503, "not ready")
            start = phase["calls"]
            wait_until(lambda: phase["calls"] >= start + 10, "calls while Redis is down")
            fleet.redis.start()
            wait_until(
                lambda: all(get_path(s.port, "/ready").status == 200 for s in fleet.backends.values()),
                "ready again",
            )
            done.set()

        async def call(client: Client, index: int) -> None:
            assert only_text(await client.call_tool("echo", {"message": f"m{index}"})) == f"m{index}"
            phase["calls"] = index + 1

        async def body(client: Client) -> int:
            answered = 0
            while not done.is_set():
                await call(client, answered)
                answered += 1
                await anyio.sleep(0.01)
            for _ in range(5):  # and after it, too
                await call(client, answered)
                answered += 1
            return answered

        recorder = Recorder()
        thread = threading.Thread(target=outage)
        thread.start()
        try:
            answered = run_client(fleet.nginx.url, body, recorder)
        finally:
            thread.join(timeout=30)
        assert done.is_set() and answered >= 25
        assert_ended_everywhere(fleet, recorder, "the session ended on every instance (Redis is back)")


def test_a_rate_limit_through_nginx_is_the_fleets(tmp_path: Path) -> None:
    """--rate-limit 30/1h on both instances (a lease of 1 token: 5 % of 30): one session through
    nginx's round-robin gets exactly 30 calls in all, served by both instances, not 30 from each."""
    with redis_fleet(tmp_path, "--rate-limit", "30/1h") as fleet:
        session = initialize(fleet.nginx.http_port)  # no session yet: the address's bucket
        served: dict[str, int] = {"a": 0, "b": 0}
        statuses = []
        for _ in range(60):
            call = through(fleet, "tools/call", {"name": "echo", "arguments": {"message": "x"}}, session)
            statuses.append(call.status)
            if call.status == 200:
                served[fleet.instance_of(call.headers.get("x-upstream-addr"))] += 1
        assert set(statuses) == {200, 429}, statuses
        assert statuses.count(200) == 30, statuses
        assert statuses.index(429) >= 29, statuses  # the slack: one lease (1 token) held by the other
        assert served["a"] > 5 and served["b"] > 5, served
