"""The soak's workload (bench/soak.py): one client process, its operations and their checks.

A client process runs one asyncio loop (uvloop) with its own sessions, a keep-alive pool, an
HTTP/2 connection and a session of the old HTTP+SSE transport. It performs operations drawn from
the mix, either flat out (``closed``: N at a time, one after another, to measure the maximum) or
on an open-loop schedule (``open``: operation k starts at ``start + k / rate`` whether or not
the earlier ones are done, and its latency counts from that scheduled time, so a stalled server
cannot hide its stall by slowing the client down: no coordinated omission).

Every answer is checked exactly; each operation ends as one of:
- done: every answer was what the protocol says (a bad request answered as the spec says is done);
- error: an answer was wrong, or a connection could not be made;
- lost: a request was sent and its answer never came (the connection broke, or the time ran out).
Each second the process sends what it counted to the orchestrator through a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from soak_wire import H1, H2, Dropped, Event, Pool, Refused, Reply, Unsent, request_bytes

LATEST = "2025-11-25"
BATCHES = "2025-03-26"
LEGACY = "2024-11-05"
SESSIONLESS = "2026-07-28"
JSON_SSE = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
TOOLS = ["echo", "add", "word_count", "countdown", "save_note"]
WELCOME = "mcp_fast serves MCP over Streamable HTTP, the old HTTP+SSE transport and stdio."
META = {
    "io.modelcontextprotocol/protocolVersion": SESSIONLESS,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "soak", "version": "1"},
}
WORDS = ("alpha", "beta", "gamma", "delta", "soak", "mcp", "fast", "loop", "lag", "rss")

# Operations whose time is the server's work (no sleeps or held streams by design): the
# latency percentiles of the summary and the chart are theirs.
SHORT = frozenset({"call", "read", "v2026", "h2", "batch", "legacy", "bad", "save"})

DEFAULT_WEIGHTS: dict[str, float] = {
    "call": 30,  # tools/call in a 2025-11-25 session, JSON answers
    "read": 7,  # resources/read, prompts/get, tools/list
    "v2026": 14,  # 2026-07-28 requests: tools/call and server/discover, no session
    "sse": 6,  # countdown with a progress token: progress and log notifications on SSE
    "h2": 8,  # tools/call over HTTP/2
    "batch": 4,  # JSON-RPC batches (2025-03-26 session)
    "legacy": 5,  # tools/call over the old HTTP+SSE transport
    "get": 3,  # GET stream opened, (a notification on it), dropped
    "resume": 3,  # a POST's SSE stream dropped mid-way, resumed with Last-Event-ID
    "cancel": 3,  # notifications/cancelled for a running countdown
    "delete": 1,  # a session started, used, DELETEd, then refused
    "bad": 14,  # bad requests, each with its exact expected answer
    "save": 2,  # save_note (notifies subscribers)
}


@dataclass
class Target:
    """Where the clients send, and what the target can do (which parts of the mix apply)."""

    host: str
    port: int
    h2_port: int | None  # h2c with prior knowledge; None: no HTTP/2 in the mix
    authority: str  # the Host header clients send
    legacy: bool = True  # the old transport's POSTs reach the process that holds the stream
    resume: bool = True  # a Last-Event-ID can be replayed wherever the GET lands
    notify: bool = True  # a notification raised by any request reaches this client's GET stream
    delete_settle: float = 0.0  # seconds until a DELETE is known to every process
    expect_503: frozenset[str] = frozenset()  # operations that may meet 503 (the fleet store away)
    proxied: bool = False  # behind nginx: what reaches the server is what nginx made of a request


@dataclass
class Plan:
    """What one client process does (picklable: handed to the process)."""

    index: int
    processes: int
    target: Target
    weights: dict[str, float]
    mode: str  # "closed" (flat out, to measure the maximum) or "open" (paced)
    start: float  # wall-clock time.time() when operations start
    seconds: float
    rate: float = 0.0  # operations per second of this process (open)
    concurrency: int = 64  # operations at once (closed)
    seed: int = 1
    timeout: float = 30.0  # an operation's answers must all come within this
    drain: float = 30.0  # after the run: how long operations in flight may take to finish
    max_in_flight: int = 4000  # open loop: a backlog beyond this is an error (the client can't keep up)


class Wrong(Exception):
    """An answer that is not what the protocol says."""


class Lost(Exception):
    """A request whose answer never came (already counted)."""


class Expected503(Exception):
    """503 from a fleet whose shared store is away, where the README says so."""


@dataclass
class Step:
    """One operation's bookkeeping: requests sent whose answer has not come yet."""

    kind: str = ""
    pending: int = 0
    local_port: int = 0


@dataclass
class Tally:
    """What a client process counted since its last report (latencies in seconds)."""

    done: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    answered: int = 0
    errors: int = 0
    lost: int = 0
    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)

    def as_report(self) -> dict[str, Any]:
        return {
            "done": dict(self.done),
            "failed": dict(self.failed),
            "requests": self.requests,
            "answered": self.answered,
            "errors": self.errors,
            "lost": self.lost,
            "latencies": self.latencies,
            "failures": self.failures,
            "notes": dict(self.notes),
        }


def rpc(request_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if request_id is not None:
        message["id"] = request_id
    if params is not None:
        message["params"] = params
    return message


def expect(condition: bool, what: str, got: Any = None) -> None:
    if not condition:
        shown = "" if got is None else f": {str(got)[:240]}"
        raise Wrong(f"{what}{shown}")


def answer_of(reply: Reply, request_id: Any, status: int = 200) -> dict[str, Any]:
    """The JSON-RPC message of a JSON answer with this status and id."""
    expect(reply.status == status, f"HTTP {reply.status}, expected {status}", reply.body)
    expect(reply.content_type == "application/json", f"content-type {reply.content_type!r}", reply.body)
    try:
        message = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        raise Wrong(f"not JSON: {reply.body[:200]!r}") from None
    expect(type(message) is dict and message.get("jsonrpc") == "2.0", "not a JSON-RPC message", message)
    expect(message.get("id") == request_id, f"id {message.get('id')!r}, expected {request_id!r}", message)
    return message  # type: ignore[no-any-return]


def result_of(reply: Reply, request_id: Any) -> dict[str, Any]:
    message = answer_of(reply, request_id)
    expect("result" in message, "an error instead of a result", message)
    result = message["result"]
    expect(type(result) is dict, "result is not an object", result)
    return result  # type: ignore[no-any-return]


def error_of(reply: Reply, request_id: Any, status: int, code: int) -> None:
    message = answer_of(reply, request_id, status)
    error = message.get("error")
    expect(type(error) is dict and error.get("code") == code, f"expected error {code}", message)


def check_text(result: dict[str, Any], text: str) -> None:
    expect(result.get("isError") is False, "isError is not false", result)
    content = result.get("content")
    expect(content == [{"type": "text", "text": text}], f"content is not [{text!r}]", result)


def check_structured(result: dict[str, Any], value: dict[str, Any], structured: bool = True) -> None:
    check_text(result, orjson.dumps(value).decode())
    if structured:
        expect(result.get("structuredContent") == value, "structuredContent", result)


def countdown_events(steps: int, token: str) -> list[dict[str, Any]]:
    """The notifications demo.py's countdown sends before its result, in order."""
    events: list[dict[str, Any]] = []
    for step in range(steps):
        progress = {
            "progressToken": token,
            "progress": step,
            "total": steps,
            "message": f"{steps - step} to go",
        }
        events.append(rpc(None, "notifications/progress", progress))
        events.append(
            rpc(None, "notifications/message", {"level": "info", "data": f"step {step + 1} of {steps}"})
        )
    done = {"progressToken": token, "progress": steps, "total": steps, "message": "done"}
    events.append(rpc(None, "notifications/progress", done))
    return events


def liftoff(request_id: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "result": {"content": [{"type": "text", "text": "liftoff"}], "isError": False},
    }


def brief(message: Any) -> str:
    """A countdown's message in a few characters: p<progress>, m<step>, or the result."""
    if type(message) is not dict:
        return "?"
    params = message.get("params") or {}
    if message.get("method") == "notifications/progress":
        return f"p{params.get('progress')}"
    if message.get("method") == "notifications/message":
        words = str(params.get("data", "")).split()  # "step 2 of 3"
        return f"m{words[1] if len(words) > 1 else '?'}"
    return "result" if "result" in message else str(message)[:40]


def event_message(event: Event) -> Any:
    try:
        return orjson.loads(event.data)
    except orjson.JSONDecodeError:
        raise Wrong(f"SSE data is not JSON: {event.data[:200]!r}") from None


class LegacySession:
    """A session of the old HTTP+SSE transport: its GET /sse stream, answers matched by id."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.stream: H1 | None = None
        self.endpoint = ""
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.closed = False
        self.calls = 0
        self.reader: asyncio.Task[None] | None = None

    async def open(self, step: Step) -> None:
        client = self.client
        target = client.plan.target
        self.stream = stream = await H1.open(target.host, target.port)
        data = request_bytes("GET", "/sse", target.authority, {"Accept": "text/event-stream"}, b"")
        client.sent(step)
        await stream.send(data)
        reply = await stream.head()
        client.answered(step)
        expect(
            reply.status == 200 and reply.content_type == "text/event-stream",
            f"GET /sse: HTTP {reply.status}",
        )
        events = stream.events()
        try:
            first = await anext(events)
        except (StopAsyncIteration, Dropped):
            raise Wrong("the /sse stream ended before its endpoint event") from None
        expect(
            first.event == "endpoint" and first.data.startswith("/messages"), "no endpoint event first", first
        )
        self.endpoint = first.data
        self.reader = asyncio.get_running_loop().create_task(self._read(events))
        init = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "soak", "version": "1"}}
        result = await self.call(step, rpc("init", "initialize", init))
        expect(result.get("result", {}).get("protocolVersion") == LEGACY, "initialize", result)
        await self.post(step, rpc(None, "notifications/initialized"))

    async def _read(self, events: Any) -> None:
        reason = "the stream ended"
        try:
            async for event in events:
                if event.event != "message":
                    continue
                message = event_message(event)
                future = self.waiting.pop(str(message.get("id")), None)
                if future is not None and not future.done():
                    future.set_result(message)
        except Dropped as exc:
            reason = f"the stream broke: {exc}"
        except Wrong as exc:
            reason = f"a wrong event: {exc}"
        finally:
            self.closed = True
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(Dropped(f"old transport: {reason}"))
            self.waiting.clear()

    async def post(self, step: Step, message: dict[str, Any]) -> None:
        client = self.client
        reply = await client.exchange(
            step, "POST", self.endpoint, {"Content-Type": "application/json"}, orjson.dumps(message)
        )
        if reply.status in (404, 502) and await self.ended():
            # The instance holding this session's stream went away (it ended the stream at
            # its SIGTERM): nginx finds nobody listening (502), or the instance started again
            # in its place knows no such session (404). The session is over and the request
            # was not run; its client starts a new session (op_legacy sends again).
            raise Unsent(f"old transport: the session's instance went away (HTTP {reply.status})")
        expect(reply.status == 202, f"POST {self.endpoint.split('?')[0]}: HTTP {reply.status}", reply.body)

    async def ended(self, wait: float = 2.0) -> bool:
        """Whether the session's stream ended (or ends within ``wait`` seconds)."""
        if self.reader is None:
            return self.closed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.reader), wait)
        return self.closed

    async def call(self, step: Step, message: dict[str, Any]) -> dict[str, Any]:
        """POST a request (202), then its answer from the stream."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[str(message["id"])] = future
        step.pending += 1  # the request's answer (not the POST's 202) is what is waited for
        try:
            await self.post(step, message)
        except BaseException:
            step.pending -= 1
            self.waiting.pop(str(message["id"]), None)
            if future.done() and not future.cancelled():
                future.exception()  # the stream's end, already told to it: seen, not logged
            else:
                future.cancel()
            raise
        try:
            answer = await future
        except Dropped as exc:
            step.pending -= 1
            raise Lost(str(exc)) from None
        step.pending -= 1
        return answer

    def close(self) -> None:
        self.closed = True
        if self.stream is not None:
            self.stream.abort()


class Client:
    """One client process's sessions, connections and counts."""

    def __init__(self, plan: Plan, report: Callable[[dict[str, Any]], None]) -> None:
        self.plan = plan
        self.target = plan.target
        self.report = report
        self.rng = random.Random(plan.seed * 1000 + plan.index)
        self.tally = Tally()
        self.pool = Pool(self.target.host, self.target.port)
        self.sessions: list[str] = []
        self.batch_session = ""
        self.get_sessions: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.get_made = 0
        self.h2: H2 | None = None
        self.h2_lock = asyncio.Lock()
        self.legacy: LegacySession | None = None
        self.legacy_lock = asyncio.Lock()
        self.counter = 0
        self.in_flight: set[asyncio.Task[None]] = set()
        kinds = [kind for kind, weight in plan.weights.items() if weight > 0 and self._applies(kind)]
        self.kinds = kinds
        self.cumulative = [0.0]
        for kind in kinds:
            self.cumulative.append(self.cumulative[-1] + plan.weights[kind])
        self.ops: dict[str, Callable[[Step], Awaitable[None]]] = {
            "call": self.op_call,
            "read": self.op_read,
            "v2026": self.op_v2026,
            "sse": self.op_sse,
            "h2": self.op_h2,
            "batch": self.op_batch,
            "legacy": self.op_legacy,
            "get": self.op_get,
            "resume": self.op_resume,
            "cancel": self.op_cancel,
            "delete": self.op_delete,
            "bad": self.op_bad,
            "save": self.op_save,
        }

    def _applies(self, kind: str) -> bool:
        target = self.target
        return not (
            (kind == "h2" and target.h2_port is None)
            or (kind == "legacy" and not target.legacy)
            or (kind == "resume" and not target.resume)
        )

    def pick(self) -> str:
        point = self.rng.random() * self.cumulative[-1]
        for index, kind in enumerate(self.kinds):
            if point < self.cumulative[index + 1]:
                return kind
        return self.kinds[-1]

    def next_id(self) -> int:
        self.counter += 1
        return self.counter

    # -- accounting ---------------------------------------------------------------------

    def sent(self, step: Step) -> None:
        step.pending += 1
        self.tally.requests += 1

    def answered(self, step: Step) -> None:
        step.pending -= 1
        self.tally.answered += 1

    def lost(self, step: Step, exc: Dropped) -> Lost:
        """The request whose answer this connection was bringing is lost (``perform`` counts it)."""
        step.pending -= 1
        step.local_port = exc.local_port or step.local_port
        return Lost(str(exc))

    async def exchange(
        self, step: Step, method: str, target: str, headers: dict[str, str], body: bytes = b""
    ) -> Reply:
        """One HTTP/1.1 request on a pooled connection, and its whole answer."""
        connection = await self.pool.acquire()
        step.local_port = connection.local_port
        data = request_bytes(method, target, self.target.authority, headers, body)
        self.sent(step)
        try:
            reply = await connection.request(data)
        except Dropped as exc:
            raise self.lost(step, exc) from None
        except BaseException:
            connection.reusable = False  # cancelled mid-answer: the connection's state is unknown
            raise
        finally:
            self.pool.release(connection)
        self.answered(step)
        if reply.status == 503 and step.kind in self.target.expect_503:
            raise Expected503(reply.body.decode(errors="replace")[:200])
        return reply

    async def post(self, step: Step, message: Any, headers: dict[str, str]) -> Reply:
        return await self.exchange(step, "POST", "/mcp", {**JSON_SSE, **headers}, orjson.dumps(message))

    def session_headers(self, session: str, version: str = LATEST) -> dict[str, str]:
        return {"Mcp-Session-Id": session, "MCP-Protocol-Version": version}

    async def open_stream(
        self, step: Step, method: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[H1, Reply]:
        """A request whose answer is a stream: its own connection (never pooled), the head read."""
        connection = await H1.open(self.target.host, self.target.port)
        step.local_port = connection.local_port
        self.sent(step)
        try:
            await connection.send(request_bytes(method, "/mcp", self.target.authority, headers, body))
            reply = await connection.head()
        except Dropped as exc:
            connection.abort()
            raise self.lost(step, exc) from None
        except BaseException:
            connection.abort()
            raise
        return connection, reply

    # -- setup ---------------------------------------------------------------------------

    async def initialize(self, step: Step, version: str = LATEST) -> str:
        init = {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "soak", "version": "1"},
        }
        reply = await self.post(step, rpc(0, "initialize", init), {})
        result = result_of(reply, 0)
        expect(result.get("protocolVersion") == version, "initialize negotiated another version", result)
        session = reply.headers.get("mcp-session-id", "")
        expect(bool(session), "initialize without Mcp-Session-Id")
        done = await self.post(
            step, rpc(None, "notifications/initialized"), self.session_headers(session, version)
        )
        expect(done.status == 202, f"notifications/initialized: HTTP {done.status}")
        return session

    async def setup(self) -> None:
        step = Step()
        for _ in range(4):
            self.sessions.append(await self.initialize(step))
        self.batch_session = await self.initialize(step, BATCHES)
        for _ in range(8):
            self.get_sessions.put_nowait(await self.new_get_session(step))

    async def new_get_session(self, step: Step) -> tuple[str, str]:
        """A session for GET streams (one stream at a time each), subscribed to a note of its own."""
        session = await self.initialize(step)
        name = f"soak-{self.plan.index}-{self.get_made}"
        self.get_made += 1
        if self.target.notify:
            request_id = self.next_id()
            params = {"uri": f"notes://{name}"}
            reply = await self.post(
                step, rpc(request_id, "resources/subscribe", params), self.session_headers(session)
            )
            expect(result_of(reply, request_id) == {}, "resources/subscribe")
        return session, name

    async def get_session(self, step: Step) -> tuple[str, str]:
        """A GET session not streaming now: a free one, a new one (up to 256), or the next freed."""
        with contextlib.suppress(asyncio.QueueEmpty):
            return self.get_sessions.get_nowait()
        if self.get_made < 256:
            return await self.new_get_session(step)
        return await self.get_sessions.get()

    # -- running -------------------------------------------------------------------------

    async def perform(self, kind: str, scheduled: float) -> None:
        # Counted in ``self.tally`` as it is when the operation ends: the one it started with
        # may have been reported (and replaced) meanwhile.
        step = Step(kind)
        try:
            async with asyncio.timeout(self.plan.timeout):
                await self.ops[kind](step)
        except Lost as exc:
            # The dropped request, and the operation's others whose answers will not come either.
            self.failure(kind, "lost", str(exc), step, lost=1 + step.pending)
        except Expected503 as exc:
            self.tally.notes[f"503 for {kind}"] += 1
            self.failure(kind, "503", str(exc), step)
        except Wrong as exc:
            self.failure(kind, "wrong", str(exc), step, error=True)
        except Refused as exc:
            self.failure(kind, "refused", str(exc), step, error=True)
        except TimeoutError:
            if step.pending:
                self.failure(
                    kind, "lost", f"no answer within {self.plan.timeout:.0f} s", step, lost=step.pending
                )
            else:
                self.failure(kind, "timeout", f"not done within {self.plan.timeout:.0f} s", step, error=True)
        except asyncio.CancelledError:
            if step.pending:  # the run ended with the answer still out
                self.failure(kind, "lost", "no answer by the end of the drain", step, lost=step.pending)
            raise
        except Exception as exc:  # noqa: BLE001 - a bug of this client: shown and counted, never hidden
            self.failure(kind, "client-bug", f"{type(exc).__name__}: {exc}", step, error=True)
        else:
            self.tally.done[kind] += 1
            self.tally.latencies.setdefault(kind, []).append(time.time() - scheduled)

    def failure(
        self, kind: str, category: str, detail: str, step: Step, lost: int = 0, error: bool = False
    ) -> None:
        """One operation that did not end as done: an error (``error``), an expected 503, or
        ``lost`` requests whose answers never came."""
        tally = self.tally
        tally.failed[kind] += 1
        tally.lost += lost
        tally.errors += int(error)
        if len(tally.failures) < 2000:
            tally.failures.append(
                {
                    "time": time.time(),
                    "kind": kind,
                    "category": category,
                    "detail": detail[:300],
                    "local_port": step.local_port,
                    "lost": lost,
                }
            )

    def launch(self, kind: str, scheduled: float) -> None:
        task = asyncio.get_running_loop().create_task(self.perform(kind, scheduled))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def run(self) -> None:
        plan = self.plan
        try:
            await self.setup()
        except (Wrong, Lost, Refused, Dropped) as exc:
            self.failure("setup", "setup", f"{type(exc).__name__}: {exc}", Step(), error=True)
            self.flush(final=True)
            return
        reporter = asyncio.get_running_loop().create_task(self.reporting())
        await asyncio.sleep(max(0.0, plan.start - time.time()))
        end = plan.start + plan.seconds
        if plan.mode == "closed":
            workers = [asyncio.create_task(self.worker(end)) for _ in range(plan.concurrency)]
            await asyncio.gather(*workers)
        else:
            await self.schedule(end)
        if self.in_flight:
            _, still = await asyncio.wait(set(self.in_flight), timeout=plan.drain)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        self.close()
        self.flush(final=True)

    async def worker(self, end: float) -> None:
        while time.time() < end:
            await self.perform(self.pick(), time.time())

    async def schedule(self, end: float) -> None:
        """Open loop: operation k at start + (k + phase) / rate, each processes' offset by its index."""
        plan = self.plan
        interval = 1.0 / plan.rate
        k = 0
        phase = plan.index / plan.processes
        while True:
            due = plan.start + (k + phase) * interval
            if due >= end:
                return
            delay = due - time.time()
            if delay > 0:
                # Wake at most every 1 ms and start everything due by then: each keeps its own
                # scheduled time (its latency counts from it), the loop is not woken 4,000 times
                # a second (the wait counts in the latency: 0.5 ms on average).
                await asyncio.sleep(max(delay, 0.001))
            now = time.time()
            while due <= now and due < end:  # late: start what is due (its latency counts from due)
                if len(self.in_flight) >= plan.max_in_flight:
                    self.failure(
                        "schedule",
                        "backlog",
                        f"{len(self.in_flight)} operations in flight",
                        Step(),
                        error=True,
                    )
                else:
                    self.launch(self.pick(), due)
                k += 1
                due = plan.start + (k + phase) * interval

    async def reporting(self) -> None:
        while True:
            await asyncio.sleep(1.0 - (time.time() % 1.0))
            self.flush()

    def flush(self, final: bool = False) -> None:
        tally, self.tally = self.tally, Tally()
        report = tally.as_report()
        report.update(
            {
                "process": self.plan.index,
                "time": time.time(),
                "final": final,
                "in_flight": len(self.in_flight),
            }
        )
        self.report(report)

    def close(self) -> None:
        if self.legacy is not None:
            self.legacy.close()
        if self.h2 is not None:
            self.h2.close()
        self.pool.close()

    # -- the operations -------------------------------------------------------------------

    async def op_call(self, step: Step) -> None:
        session = self.rng.choice(self.sessions)
        request_id = self.next_id()
        which = request_id % 3
        if which == 0:
            message = f"soak {request_id} {self.rng.random()}"
            reply = await self.post(
                step,
                rpc(request_id, "tools/call", {"name": "echo", "arguments": {"message": message}}),
                self.session_headers(session),
            )
            check_text(result_of(reply, request_id), message)
        elif which == 1:
            a, b = self.rng.randrange(-(10**6), 10**6), self.rng.randrange(-(10**6), 10**6)
            reply = await self.post(
                step,
                rpc(request_id, "tools/call", {"name": "add", "arguments": {"a": a, "b": b}}),
                self.session_headers(session),
            )
            check_structured(result_of(reply, request_id), {"result": a + b})
        else:
            text = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randrange(1, 12)))
            reply = await self.post(
                step,
                rpc(request_id, "tools/call", {"name": "word_count", "arguments": {"text": text}}),
                self.session_headers(session),
            )
            check_structured(
                result_of(reply, request_id), {"words": len(text.split()), "characters": len(text)}
            )

    async def op_read(self, step: Step) -> None:
        session = self.rng.choice(self.sessions)
        request_id = self.next_id()
        headers = self.session_headers(session)
        which = request_id % 3
        if which == 0:
            reply = await self.post(
                step, rpc(request_id, "resources/read", {"uri": "notes://welcome"}), headers
            )
            expected = {"contents": [{"uri": "notes://welcome", "mimeType": "text/plain", "text": WELCOME}]}
            expect(result_of(reply, request_id) == expected, "resources/read notes://welcome", reply.body)
        elif which == 1:
            text = f"text {request_id}"
            reply = await self.post(
                step,
                rpc(request_id, "prompts/get", {"name": "summarize", "arguments": {"text": text}}),
                headers,
            )
            messages = result_of(reply, request_id).get("messages")
            wanted = [
                {
                    "role": "user",
                    "content": {"type": "text", "text": f"Summarize this in three lines:\n\n{text}"},
                }
            ]
            expect(messages == wanted, "prompts/get summarize", reply.body)
        else:
            reply = await self.post(step, rpc(request_id, "tools/list"), headers)
            tools = result_of(reply, request_id).get("tools") or []
            expect([tool.get("name") for tool in tools] == TOOLS, "tools/list", reply.body)

    def sessionless(
        self, request_id: int, method: str, name: str | None, params: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        headers = {"MCP-Protocol-Version": SESSIONLESS, "Mcp-Method": method}
        if name is not None:
            headers["Mcp-Name"] = name
        return rpc(request_id, method, {**params, "_meta": META}), headers

    async def op_v2026(self, step: Step) -> None:
        request_id = self.next_id()
        if request_id % 4 == 0:
            message, headers = self.sessionless(request_id, "server/discover", None, {})
            result = result_of(await self.post(step, message, headers), request_id)
            expect(
                SESSIONLESS in result.get("supportedVersions", []) and result.get("resultType") == "complete",
                "server/discover",
                result,
            )
            return
        a, b = self.rng.randrange(1000), self.rng.randrange(1000)
        message, headers = self.sessionless(
            request_id, "tools/call", "add", {"name": "add", "arguments": {"a": a, "b": b}}
        )
        result = result_of(await self.post(step, message, headers), request_id)
        check_structured(result, {"result": a + b})
        expect(result.get("resultType") == "complete", "resultType", result)
        server_info = result.get("_meta", {}).get("io.modelcontextprotocol/serverInfo", {})
        expect(server_info.get("name") == "mcp-fast-demo", "_meta serverInfo", result)

    async def read_sse(self, step: Step, connection: H1, request_id: Any, token: str, steps: int) -> None:
        """The rest of a countdown's POST stream: priming event, notifications in order, result."""
        wanted = [*countdown_events(steps, token), liftoff(request_id)]
        got: list[Any] = []
        primed = False
        try:
            async for event in connection.events():
                if not primed:
                    expect(
                        event.data == "" and bool(event.id) and event.retry is not None,
                        "no priming event first",
                        event,
                    )
                    primed = True
                    continue
                got.append(event_message(event))
                if len(got) == len(wanted):
                    break
        except Dropped as exc:
            raise self.lost(step, exc) from None
        expect(got == wanted, f"countdown stream: {len(got)} messages, not as expected", got[-2:])
        self.answered(step)

    async def op_sse(self, step: Step) -> None:
        session = self.rng.choice(self.sessions)
        request_id = self.next_id()
        token = f"p{request_id}"
        steps = 2
        params = {"name": "countdown", "arguments": {"steps": steps}, "_meta": {"progressToken": token}}
        connection, reply = await self.open_stream(
            step,
            "POST",
            {**JSON_SSE, **self.session_headers(session)},
            orjson.dumps(rpc(request_id, "tools/call", params)),
        )
        try:
            expect(
                reply.status == 200 and reply.content_type == "text/event-stream",
                f"countdown: HTTP {reply.status} {reply.content_type}",
            )
            await self.read_sse(step, connection, request_id, token, steps)
        finally:
            connection.close()

    async def h2_connection(self) -> H2:
        async with self.h2_lock:
            if self.h2 is None or self.h2.closed:
                assert self.target.h2_port is not None
                connection = H2(self.target.host, self.target.h2_port, self.target.authority)
                await connection.connect()
                self.h2 = connection
                self.tally.notes["h2 connections"] += 1
            return self.h2

    async def op_h2(self, step: Step) -> None:
        request_id = self.next_id()
        if request_id % 2:
            session = self.rng.choice(self.sessions)
            message_text = f"h2 {request_id}"
            message = rpc(request_id, "tools/call", {"name": "echo", "arguments": {"message": message_text}})
            headers = list({**JSON_SSE, **self.session_headers(session)}.items())

            def check(reply: Reply) -> None:
                check_text(result_of(reply, request_id), message_text)
        else:
            a, b = self.rng.randrange(1000), self.rng.randrange(1000)
            message, extra = self.sessionless(
                request_id, "tools/call", "add", {"name": "add", "arguments": {"a": a, "b": b}}
            )
            headers = list({**JSON_SSE, **extra}.items())

            def check(reply: Reply) -> None:
                check_structured(result_of(reply, request_id), {"result": a + b})

        headers = [(name.lower(), value) for name, value in headers]
        body = orjson.dumps(message)
        for attempt in range(3):
            connection = await self.h2_connection()
            step.local_port = connection.local_port
            self.sent(step)
            try:
                reply = await connection.request(headers, body)
            except Unsent:
                step.pending -= 1  # GOAWAY: never processed, so sent again on a new connection
                self.tally.requests -= 1
                self.tally.notes["h2 sent again after GOAWAY"] += 1
                if attempt == 2:
                    raise Wrong("HTTP/2: refused three times (GOAWAY)") from None
                continue
            except Dropped as exc:
                raise self.lost(step, exc) from None
            self.answered(step)
            if reply.status == 503 and step.kind in self.target.expect_503:
                raise Expected503("h2")
            check(reply)
            return

    async def op_batch(self, step: Step) -> None:
        first, second = self.next_id(), self.next_id()
        a, b = self.rng.randrange(1000), self.rng.randrange(1000)
        batch = [
            rpc(first, "ping"),
            rpc(second, "tools/call", {"name": "add", "arguments": {"a": a, "b": b}}),
            rpc(None, "notifications/roots/list_changed"),
        ]
        reply = await self.post(step, batch, self.session_headers(self.batch_session, BATCHES))
        expect(
            reply.status == 200 and reply.content_type == "application/json",
            f"batch: HTTP {reply.status}",
            reply.body,
        )
        answers = orjson.loads(reply.body)
        expect(type(answers) is list and len(answers) == 2, "batch: two answers", answers)
        by_id = {answer.get("id"): answer for answer in answers}
        expect(by_id.get(first) == {"jsonrpc": "2.0", "id": first, "result": {}}, "batch: ping", answers)
        add = by_id.get(second, {}).get("result", {})
        check_structured(add, {"result": a + b}, structured=False)  # 2025-03-26 has no structured output
        expect("structuredContent" not in add, "structuredContent in a 2025-03-26 session", add)

    async def legacy_session(self, step: Step) -> LegacySession:
        async with self.legacy_lock:
            legacy = self.legacy
            if legacy is not None and not legacy.closed and legacy.calls >= 400 and not legacy.waiting:
                legacy.close()  # end it now and then: sessions of the old transport come and go
                self.tally.notes["old transport sessions closed"] += 1
            if legacy is None or legacy.closed:
                legacy = LegacySession(self)
                self.legacy = legacy
                try:
                    await legacy.open(step)
                except Dropped as exc:
                    legacy.close()
                    raise self.lost(step, exc) from None
                except BaseException:
                    legacy.close()
                    raise
                self.tally.notes["old transport sessions opened"] += 1
            return legacy

    async def op_legacy(self, step: Step) -> None:
        for attempt in range(3):
            legacy = await self.legacy_session(step)
            legacy.calls += 1
            request_id = f"L{self.next_id()}"
            text = f"old {request_id}"
            try:
                answer = await legacy.call(
                    step, rpc(request_id, "tools/call", {"name": "echo", "arguments": {"message": text}})
                )
            except Unsent:
                if attempt == 2:
                    raise Wrong("old transport: three sessions went away in a row") from None
                self.tally.notes["old transport: sent again on a new session"] += 1
                continue
            expect(answer.get("id") == request_id, "old transport: id", answer)
            check_text(answer.get("result", {}), text)
            return

    async def op_get(self, step: Step) -> None:
        session, name = await self.get_session(step)
        try:
            connection, reply = await self.open_stream(
                step, "GET", {"Accept": "text/event-stream", **self.session_headers(session)}
            )
        except BaseException:
            self.get_sessions.put_nowait((session, name))
            raise
        self.answered(step)
        try:
            expect(
                reply.status == 200 and reply.content_type == "text/event-stream",
                f"GET stream: HTTP {reply.status}",
                reply.headers,
            )
            events = connection.events()
            try:
                priming = await anext(events)
            except StopAsyncIteration:
                self.tally.notes["GET streams ended by the server"] += 1
                return
            except Dropped:
                self.tally.notes["GET streams ended by the server"] += 1
                return
            expect(priming.data == "" and bool(priming.id), "GET stream: no priming event", priming)
            if self.target.notify:
                request_id = self.next_id()
                params = {"name": "save_note", "arguments": {"name": name, "text": f"note {request_id}"}}
                result = result_of(
                    await self.post(
                        step, rpc(request_id, "tools/call", params), self.session_headers(session)
                    ),
                    request_id,
                )
                check_text(result, f"saved notes://{name}")
                wanted = rpc(None, "notifications/resources/updated", {"uri": f"notes://{name}"})
                try:
                    event = await anext(events)
                except (StopAsyncIteration, Dropped):
                    raise Wrong("GET stream ended before the resources/updated notification") from None
                expect(event_message(event) == wanted, "GET stream: resources/updated", event)
            await asyncio.sleep(self.rng.uniform(0.1, 0.6))  # a client that keeps it open a while
        finally:
            connection.abort()  # and drops it
            loop = asyncio.get_running_loop()
            loop.call_later(
                0.5, self.get_sessions.put_nowait, (session, name)
            )  # the server's close is seen by then

    async def op_resume(self, step: Step) -> None:
        session = self.rng.choice(self.sessions)
        request_id = self.next_id()
        token = f"r{request_id}"
        steps = 3
        params = {"name": "countdown", "arguments": {"steps": steps}, "_meta": {"progressToken": token}}
        headers = {**JSON_SSE, **self.session_headers(session)}
        connection, reply = await self.open_stream(
            step, "POST", headers, orjson.dumps(rpc(request_id, "tools/call", params))
        )
        wanted = [*countdown_events(steps, token), liftoff(request_id)]
        got: list[Any] = []
        last_id = ""
        try:
            expect(
                reply.status == 200 and reply.content_type == "text/event-stream",
                f"countdown: HTTP {reply.status}",
            )
            keep = self.rng.randrange(1, 4)  # events read before the connection drops
            events = connection.events()
            async for event in events:
                last_id = event.id or last_id
                if event.data:
                    got.append(event_message(event))
                if len(got) >= keep:
                    break
        except Dropped as exc:
            raise self.lost(step, exc) from None
        finally:
            connection.abort()  # the client's network goes away mid-stream
        expect(bool(last_id), "no event id to resume from")
        await asyncio.sleep(self.rng.uniform(0.02, 0.2))
        # The POST's request stays pending: its answer comes on the resumed stream.
        fleet_away = "resume" in self.target.expect_503
        for _ in range(20):
            headers = {
                "Accept": "text/event-stream",
                **self.session_headers(session),
                "Last-Event-ID": last_id,
            }
            connection, reply = await self.open_stream(step, "GET", headers)
            self.answered(step)  # the GET's own head
            try:
                if reply.status == 503 and fleet_away:
                    # The instance it reached cannot see the stream without the fleet's store:
                    # a client tries again, as SSE clients reconnect (after the retry interval).
                    self.tally.notes["resumptions refused with 503, tried again"] += 1
                    await asyncio.sleep(0.25)
                    continue
                expect(
                    reply.status == 200 and reply.content_type == "text/event-stream",
                    f"resume: HTTP {reply.status}",
                    reply.headers,
                )
                try:
                    async for event in connection.events():
                        last_id = event.id or last_id
                        if event.data:
                            got.append(event_message(event))
                        if len(got) >= len(wanted):
                            break
                except Dropped as exc:
                    raise self.lost(step, exc) from None
            finally:
                connection.abort()
            if len(got) >= len(wanted):
                break
            # The stream ended before the answer. Only a stream followed from another instance
            # ends so when that instance's writes stop reaching the fleet's store (README,
            # "When Redis is away"): its client resumes again from the last event it has.
            expect(fleet_away, f"the resumed stream ended after {len(got)} of {len(wanted)} messages")
            self.tally.notes["resumed streams that ended early, resumed again"] += 1
        expect(
            got == wanted,
            f"resumed countdown (last resumed after {last_id}): {len(got)} messages, not each once in order",
            [brief(message) for message in got],
        )
        self.answered(step)  # the POST's answer

    async def op_cancel(self, step: Step) -> None:
        session = self.rng.choice(self.sessions)
        request_id = f"c{self.next_id()}"
        token = f"t{request_id}"
        params = {"name": "countdown", "arguments": {"steps": 20}, "_meta": {"progressToken": token}}
        headers = {**JSON_SSE, **self.session_headers(session)}
        connection, reply = await self.open_stream(
            step, "POST", headers, orjson.dumps(rpc(request_id, "tools/call", params))
        )
        try:
            expect(
                reply.status == 200 and reply.content_type == "text/event-stream",
                f"countdown: HTTP {reply.status}",
            )
            events = connection.events()
            try:
                priming = await anext(events)
                first = event_message(await anext(events))
            except Dropped as exc:
                raise self.lost(step, exc) from None
            expect(priming.data == "", "no priming event", priming)
            expect(first.get("method") == "notifications/progress", "no progress first", first)
            cancel = rpc(None, "notifications/cancelled", {"requestId": request_id, "reason": "soak"})
            done = await self.post(step, cancel, self.session_headers(session))
            expect(done.status == 202, f"notifications/cancelled: HTTP {done.status}", done.body)
            # The server sends no response for a cancelled request and ends its stream.
            try:
                async for event in events:
                    message = event_message(event)
                    expect("id" not in message, "a response after the cancellation", message)
            except Dropped as exc:
                raise self.lost(step, exc) from None
            self.answered(step)
        finally:
            connection.abort()

    async def op_delete(self, step: Step) -> None:
        session = await self.initialize(step)
        headers = self.session_headers(session)
        request_id = self.next_id()
        expect(result_of(await self.post(step, rpc(request_id, "ping"), headers), request_id) == {}, "ping")
        reply = await self.exchange(
            step, "DELETE", "/mcp", {"Accept": "application/json, text/event-stream", **headers}
        )
        expect(reply.status == 200, f"DELETE: HTTP {reply.status}", reply.body)
        if self.target.delete_settle:
            await asyncio.sleep(self.target.delete_settle)
        request_id = self.next_id()
        error_of(await self.post(step, rpc(request_id, "ping"), headers), request_id, 404, -32001)

    BAD_CASES = 13

    async def op_bad(self, step: Step) -> None:
        case = self.next_id() % self.BAD_CASES
        session = self.rng.choice(self.sessions)
        headers = self.session_headers(session)
        request_id = self.next_id()
        if case == 0:  # malformed JSON: 400, -32700 with id null
            reply = await self.exchange(
                step, "POST", "/mcp", {**JSON_SSE, **headers}, b'{"jsonrpc":"2.0","id":1,"method":"ping"'
            )
            error_of(reply, None, 400, -32700)
        elif case == 1:  # an unknown method: -32601
            error_of(await self.post(step, rpc(request_id, "soak/unknown"), headers), request_id, 200, -32601)
        elif case == 2:  # invalid arguments: isError (2025-11-25)
            params = {"name": "add", "arguments": {"a": "x", "b": 2}}
            result = result_of(
                await self.post(step, rpc(request_id, "tools/call", params), headers), request_id
            )
            text = (result.get("content") or [{}])[0].get("text", "")
            expect(
                result.get("isError") is True and text.startswith("Invalid arguments for tool 'add'"),
                "invalid arguments",
                result,
            )
        elif case == 3:  # a Host this server does not serve: 421
            reply = await self.exchange(
                step,
                "POST",
                "/mcp",
                {**JSON_SSE, **headers, "Host": "evil.example.com"},
                orjson.dumps(rpc(request_id, "ping")),
            )
            expect(reply.status == 421, f"wrong Host: HTTP {reply.status}", reply.body)
        elif case == 4:  # no Mcp-Session-Id: 400, -32600
            error_of(await self.post(step, rpc(request_id, "ping"), {}), request_id, 400, -32600)
        elif case == 5:  # an unsupported MCP-Protocol-Version: 400, -32022
            reply = await self.post(
                step, rpc(request_id, "ping"), {**headers, "MCP-Protocol-Version": "1999-01-01"}
            )
            error_of(reply, None, 400, -32022)
        elif case == 6:  # an unknown session: 404, -32001
            error_of(
                await self.post(step, rpc(request_id, "ping"), self.session_headers("not-a-session")),
                request_id,
                404,
                -32001,
            )
        elif case == 7:  # 2026-07-28 headers that disagree with the body: 400, -32020
            message, extra = self.sessionless(
                request_id, "tools/call", "echo", {"name": "add", "arguments": {"a": 1, "b": 2}}
            )
            error_of(await self.post(step, message, extra), request_id, 400, -32020)
        elif case == 8:  # a batch outside 2025-03-26: 400, -32600
            error_of(await self.post(step, [rpc(request_id, "ping")], headers), None, 400, -32600)
        elif case == 9:  # GET in the sessionless protocol: 405
            reply = await self.exchange(
                step, "GET", "/mcp", {"Accept": "text/event-stream", "MCP-Protocol-Version": SESSIONLESS}
            )
            expect(reply.status == 405, f"2026 GET: HTTP {reply.status}", reply.body)
        elif case == 10:  # an unknown tool: -32602
            error_of(
                await self.post(
                    step, rpc(request_id, "tools/call", {"name": "nope", "arguments": {}}), headers
                ),
                request_id,
                200,
                -32602,
            )
        elif case == 11:  # a Content-Type other than JSON: 415
            reply = await self.exchange(
                step,
                "POST",
                "/mcp",
                {"Content-Type": "text/plain", "Accept": "application/json", **headers},
                b"{}",
            )
            expect(reply.status == 415, f"text/plain body: HTTP {reply.status}", reply.body)
        else:  # a bare LF in the head (RFC 9112 section 2.2): 400, and the connection closes
            connection = await H1.open(self.target.host, self.target.port)
            step.local_port = connection.local_port
            self.sent(step)
            try:
                data = (
                    f"POST /mcp HTTP/1.1\nHost: {self.target.authority}\nContent-Length: 2\n\n{{}}".encode()
                )
                reply = await connection.request(data)
            except Dropped as exc:
                raise self.lost(step, exc) from None
            finally:
                connection.close()
            self.answered(step)
            if self.target.proxied:
                # nginx takes a bare LF for a line end (RFC 9112 section 2.2 lets a recipient do
                # so) and passes on a proper request, which has no Content-Type: 415.
                expect(reply.status == 415, f"bare LF through the proxy: HTTP {reply.status}", reply.body)
            else:
                expect(reply.status == 400, f"bare LF: HTTP {reply.status}", reply.body)

    async def op_save(self, step: Step) -> None:
        session = self.rng.choice(self.sessions)
        request_id = self.next_id()
        name = f"soak-{self.plan.index}-s{request_id % 4}"
        params = {"name": "save_note", "arguments": {"name": name, "text": f"saved {request_id}"}}
        result = result_of(
            await self.post(step, rpc(request_id, "tools/call", params), self.session_headers(session)),
            request_id,
        )
        check_text(result, f"saved notes://{name}")


def client_main(plan: Plan, queue: Any) -> None:
    """The entry point of a client process."""
    import signal

    import uvloop

    # Ended at once when the orchestrator terminates it (SIGTERM): its own handler (inherited
    # by the fork) would exit through Python and wait for reports nobody reads any more.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _end_with_the_orchestrator()

    async def main() -> None:
        await Client(plan, queue.put).run()

    uvloop.run(main())
    # The queue's feeder thread delivers the last reports; Python's exit waits for it, and if the
    # orchestrator is gone nobody reads the pipe again: a client left behind by a killed test run
    # waited there for good. Give it a while, then exit without waiting.
    queue.close()
    feeder = getattr(queue, "_thread", None)
    if feeder is not None:
        feeder.join(timeout=30)
    queue.cancel_join_thread()


def _end_with_the_orchestrator() -> None:
    """Linux: this process gets SIGTERM when the orchestrator dies (PR_SET_PDEATHSIG), so a
    killed soak leaves no client processes behind."""
    import ctypes
    import os
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the orchestrator died before prctl took effect
        os._exit(1)
