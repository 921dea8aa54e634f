"""Drive ``StreamableHTTP`` in-process: one POST in, what the transport answered out.

The transport is called exactly as the network adapter calls it (``transport(request,
responder)``, then the returned coroutine stepped eagerly), with a ``Recorder`` as the
responder that logs every call so that "exactly one answer" can be checked.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import logging
import re
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from fuzz import _whatwg_sse
from mcp_fast.net.eager import start_eagerly
from mcp_fast.pipeline import Pipeline
from mcp_fast.server import MCPServer
from mcp_fast.transport.streamable import StreamableHTTP, StreamableSettings
from mcp_fast.wire.events import Request

# A request that has not finished after this long is a hang (the demo's sleeps are cut to 0).
EXCHANGE_TIMEOUT = 10.0


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(data: bytes | str) -> Any:
    """Decode what the server sent: RFC 8259 JSON (no NaN/Infinity), integers of any size
    kept exact (orjson would read those beyond 64 bits as floats)."""
    return json.loads(data, parse_constant=_no_constant)


@dataclass
class Recorder:
    """A Responder that records every call the transport makes."""

    calls: list[str] = field(default_factory=list)
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    chunks: list[bytes] = field(default_factory=list)
    disconnected: bool = False

    def respond(self, status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> None:
        self.calls.append("respond")
        self.status, self.headers, self.body = status, list(headers), bytes(body)

    def start_stream(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        self.calls.append("start_stream")
        self.status, self.headers = status, list(headers)

    def send_stream(self, data: bytes) -> None:
        self.calls.append("send_stream")
        self.chunks.append(bytes(data))

    async def drain(self) -> None:
        return None

    def end_stream(self) -> None:
        self.calls.append("end_stream")

    def on_disconnect(self, callback: Callable[[], None] | None) -> None:
        pass  # this client never disconnects

    async def wait_disconnected(self) -> None:
        await asyncio.get_running_loop().create_future()  # a POST client never goes away here

    def abort(self) -> None:
        self.calls.append("abort")

    # -- what was answered ---------------------------------------------------------

    @property
    def content_type(self) -> bytes | None:
        return dict(self.headers).get(b"content-type")

    def exactly_one_answer(self) -> bool:
        """One complete response: ``respond``, or ``start_stream`` ... ``end_stream``."""
        calls = self.calls
        if calls == ["respond"]:
            return True
        return (
            len(calls) >= 2
            and calls[0] == "start_stream"
            and calls[-1] == "end_stream"
            and all(c == "send_stream" for c in calls[1:-1])
        )

    def sse_events(self) -> list[_whatwg_sse.SseEvent]:
        """The events of an SSE answer: streamed in chunks, or (known at once) one body."""
        return _whatwg_sse.parse(self.body + b"".join(self.chunks)).events

    def messages(self) -> list[Any]:
        """The JSON-RPC messages of the answer: the JSON body, or every SSE data event."""
        if self.calls and self.calls[0] == "respond" and self.content_type != b"text/event-stream":
            return [strict_json(self.body)] if self.body else []
        return [strict_json(event.data) for event in self.sse_events() if event.data]


# Every Context method that sends a server-to-client request (or an input-required round).
_ASKS_CLIENT = re.compile(r"\.(ask|elicit|elicit_url|sample|list_roots|request)\(")


def waits_for_client(server: MCPServer, tool_name: str) -> bool:
    """Whether a tool sends a server-to-client request (sampling, elicitation, roots).

    Such a tool waits, by design, up to its timeout (minutes) for the client's answer,
    which an in-process fuzz client never sends; the fuzz suites leave them out (the
    interop tests drive them with a real client).
    """
    func = server.registry.tools[tool_name].func
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return True  # cannot tell: assume it may wait
    return _ASKS_CLIENT.search(source) is not None


def always_fails(server: MCPServer, tool_name: str) -> bool:
    """Whether a tool exists to demonstrate an error: its body raises and never returns
    (test_error_handling, protocol_error_job, ...). Such a tool answers isError or a
    JSON-RPC error by design, whatever its arguments."""
    func = server.registry.tools[tool_name].func
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return False
    definition = tree.body[0]
    if not isinstance(definition, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    returns = any(isinstance(node, ast.Return) and node.value is not None for node in ast.walk(definition))
    return not returns and any(isinstance(stmt, ast.Raise) for stmt in definition.body)


def list_tools(server: MCPServer, version: bytes = b"2025-11-25") -> dict[str, dict[str, Any]]:
    """The tool definitions a client sees in tools/list, by name."""
    h = Harness(server)
    try:
        rec = h.post(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}), version=version)
        return {tool["name"]: tool for tool in rec.messages()[-1]["result"]["tools"]}
    finally:
        h.close()


def task_required(definition: dict[str, Any]) -> bool:
    """2025-11-25 tasks: a tool with execution.taskSupport "required" must be called as a
    task; a plain tools/call gets -32601."""
    execution = definition.get("execution")
    return isinstance(execution, dict) and execution.get("taskSupport") == "required"


class _FastAsyncio:
    """``asyncio`` as the demo module sees it, with every sleep cut to a bare yield.

    The demo's fixture tools sleep 10-50 ms per step to look like real work; the
    sleeps change nothing in what is validated or answered, only the run time.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay: float, result: Any = None) -> Any:
        return await asyncio.sleep(0, result)


@contextmanager
def fast_demo_sleeps() -> Iterator[None]:
    import examples.conformance as demo

    original = getattr(demo, "asyncio")  # noqa: B009 - the demo's module attribute, not re-exported
    setattr(demo, "asyncio", _FastAsyncio())  # noqa: B010
    try:
        yield
    finally:
        setattr(demo, "asyncio", original)  # noqa: B010


class ErrorLog(logging.Handler):
    """Collects records logged at ERROR or above (an unexpected exception path)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Harness:
    """One transport over one event loop, reused by every example of a test module."""

    def __init__(self, server: MCPServer, settings: StreamableSettings | None = None) -> None:
        self.transport = StreamableHTTP(Pipeline(server), settings or StreamableSettings())
        self.loop = asyncio.new_event_loop()
        self.errors = ErrorLog()
        logging.getLogger("mcp_fast").addHandler(self.errors)

    def close(self) -> None:
        logging.getLogger("mcp_fast").removeHandler(self.errors)
        self.loop.close()

    def post(
        self,
        body: bytes,
        *,
        version: bytes | None = b"2025-11-25",
        accept: bytes | None = b"application/json, text/event-stream",
    ) -> Recorder:
        headers = {b"host": b"127.0.0.1", b"content-type": b"application/json"}
        if accept is not None:
            headers[b"accept"] = accept
        if version is not None:
            headers[b"mcp-protocol-version"] = version
        request = Request(b"POST", b"/mcp", b"/mcp", headers, body, True)
        recorder = Recorder()

        async def run() -> None:
            pending = self.transport(request, recorder)
            if pending is not None:
                task = start_eagerly(asyncio.get_running_loop(), pending)
                if task is not None:
                    await asyncio.wait_for(task, EXCHANGE_TIMEOUT)

        self.errors.records.clear()
        self.loop.run_until_complete(run())
        return recorder
