"""The soak's clients on the wire (bench/soak.py): HTTP/1.1 over asyncio streams with a keep-alive
pool, SSE events read from a chunked body, and HTTP/2 (h2c with prior knowledge) on the ``h2``
state machine in client mode. Independent of the server's code: nothing of ``mcp_fast`` is
imported here.

What can go wrong is told apart, because the soak counts it differently:
- ``Refused``: no connection could be made, nothing was sent (an error, not a lost request);
- ``Dropped``: the connection broke after the request went out and before its whole answer came
  (the request may have reached the server: lost);
- ``Unsent``: HTTP/2 GOAWAY named this stream as never processed (safe to send again).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

READ_LIMIT = 8 << 20


class Refused(Exception):
    """Could not connect: nothing was sent."""


class Dropped(Exception):
    """The connection broke between sending the request and reading its whole answer."""

    def __init__(self, reason: str, local_port: int = 0) -> None:
        super().__init__(reason)
        self.local_port = local_port


class Unsent(Exception):
    """HTTP/2: the server's GOAWAY says it never processed this stream."""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    local_port: int = 0

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip()


@dataclass
class Event:
    """One SSE event (WHATWG "event stream interpretation", enough of it for MCP)."""

    id: str | None = None
    event: str = "message"
    data: str = ""
    retry: int | None = None


def parse_events(text: str) -> tuple[list[Event], str]:
    """Complete events in ``text`` (blocks ending in a blank line), and what is left over.
    Comment-only blocks (keep-alives) are skipped."""
    events: list[Event] = []
    while True:
        end = text.find("\n\n")
        if end < 0:
            return events, text
        block, text = text[:end], text[end + 2 :]
        event = Event()
        data: list[str] = []
        seen = False
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            seen = True
            if name == "data":
                data.append(value)
            elif name == "id":
                event.id = value
            elif name == "event":
                event.event = value
            elif name == "retry" and value.isdigit():
                event.retry = int(value)
        if seen:
            event.data = "\n".join(data)
            events.append(event)


def request_bytes(method: str, target: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    """The request's bytes; ``host`` unless ``headers`` name a Host of their own."""
    lines = [f"{method} {target} HTTP/1.1"]
    if "Host" not in headers:
        lines.append(f"Host: {host}")
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class H1:
    """One HTTP/1.1 connection, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        sock = writer.get_extra_info("socket")
        self.local_port = int(sock.getsockname()[1]) if sock is not None else 0
        self.last_used = time.monotonic()
        self.reusable = True
        self.requests = 0

    @classmethod
    async def open(cls, host: str, port: int) -> H1:
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=READ_LIMIT)
        except OSError as exc:
            raise Refused(f"connect {host}:{port}: {exc.strerror or exc}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    def close(self) -> None:
        self.reusable = False
        self.writer.close()

    def abort(self) -> None:
        """Drop the connection at once (RST): a client that goes away mid-answer."""
        self.reusable = False
        transport = self.writer.transport
        transport.abort()

    def _dropped(self, exc: BaseException) -> Dropped:
        self.reusable = False
        return Dropped(f"{type(exc).__name__}: {exc}"[:160], self.local_port)

    async def send(self, data: bytes) -> None:
        self.requests += 1
        try:
            self.writer.write(data)
            await self.writer.drain()
        except OSError as exc:
            raise self._dropped(exc) from None

    async def head(self) -> Reply:
        """The status line and headers of the next final answer (1xx skipped)."""
        try:
            while True:
                raw = await self.reader.readuntil(b"\r\n\r\n")
                lines = raw[:-4].decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ", 2)[1])
                if status >= 200:
                    break
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            OSError,
            ValueError,
            IndexError,
        ) as exc:
            raise self._dropped(exc) from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("connection", "").lower() == "close":
            self.reusable = False
        return Reply(status, headers, b"", self.local_port)

    async def body(self, reply: Reply) -> bytes:
        try:
            if "content-length" in reply.headers:
                return await self.reader.readexactly(int(reply.headers["content-length"]))
            if reply.headers.get("transfer-encoding", "").lower() == "chunked":
                parts = [chunk async for chunk in self._chunks()]
                return b"".join(parts)
            if reply.status in (204, 304):
                return b""
            self.reusable = False
            return await self.reader.read()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError) as exc:
            raise self._dropped(exc) from None

    async def _chunks(self) -> AsyncIterator[bytes]:
        reader = self.reader
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers from this server
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]

    async def events(self) -> AsyncIterator[Event]:
        """The SSE events of a chunked body, as they arrive; ends with the body. A broken
        connection raises Dropped."""
        text = ""
        try:
            async for chunk in self._chunks():
                text += chunk.decode()
                found, text = parse_events(text)
                for event in found:
                    yield event
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError) as exc:
            raise self._dropped(exc) from None

    async def request(self, data: bytes) -> Reply:
        await self.send(data)
        reply = await self.head()
        reply.body = await self.body(reply)
        self.last_used = time.monotonic()
        return reply


class Pool:
    """Keep-alive HTTP/1.1 connections to one address, at most ``limit`` at once, the most
    recently used first. Idle ones older than ``idle_seconds`` are closed rather than reused
    (below the server's and nginx's keep-alive timeouts, so a request never meets a connection
    the other side is closing)."""

    def __init__(self, host: str, port: int, limit: int = 256, idle_seconds: float = 20.0) -> None:
        self.host = host
        self.port = port
        self.idle_seconds = idle_seconds
        self.idle: list[H1] = []
        self.opened = 0
        self.slots = asyncio.Semaphore(limit)

    async def acquire(self) -> H1:
        await self.slots.acquire()
        try:
            now = time.monotonic()
            while self.idle:
                connection = self.idle.pop()
                if now - connection.last_used < self.idle_seconds:
                    return connection
                connection.close()
            connection = await H1.open(self.host, self.port)
            self.opened += 1
            return connection
        except BaseException:
            self.slots.release()
            raise

    def release(self, connection: H1) -> None:
        if connection.reusable:
            connection.last_used = time.monotonic()
            self.idle.append(connection)
        else:
            connection.close()
        self.slots.release()

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


# -- HTTP/2 ------------------------------------------------------------------------------------


@dataclass
class _Stream:
    future: asyncio.Future[Reply]
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


class _ReadAfterGoaway(h2.connection.H2ConnectionStateMachine):
    """h2's connection state machine, but a GOAWAY received leaves it open.

    After a GOAWAY the streams up to its last stream id "might still complete successfully"
    (RFC 9113 section 6.8), and after a graceful one (nginx sends it after keepalive_requests,
    1,000 by default) they do. The h2 library closes its connection state at any GOAWAY and
    refuses every frame after it, even one in the same read (python-hyper/h2 issue 1181), so
    each GOAWAY cost the streams in flight. This client opens no stream once it has seen one
    (``H2.closed``), so staying open only lets the answers in.
    """

    def process_input(self, input_: h2.connection.ConnectionInputs) -> list[Any]:
        if input_ is h2.connection.ConnectionInputs.RECV_GOAWAY:
            return []
        return super().process_input(input_)  # type: ignore[no-any-return]


class H2:
    """One HTTP/2 connection (prior knowledge), many concurrent requests."""

    def __init__(self, host: str, port: int, authority: str, max_streams: int = 50) -> None:
        self.host = host
        self.port = port
        self.authority = authority
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.state_machine = _ReadAfterGoaway()
        self.streams: dict[int, _Stream] = {}
        self.slots = asyncio.Semaphore(max_streams)
        self.closed = False
        self.local_port = 0
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=READ_LIMIT)
        except OSError as exc:
            raise Refused(f"connect {self.host}:{self.port}: {exc.strerror or exc}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.local_port = int(sock.getsockname()[1])
        self._writer = writer
        self.conn.initiate_connection()
        self._flush()
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    async def request(self, headers: list[tuple[str, str]], body: bytes) -> Reply:
        async with self.slots:
            if self.closed:
                raise Unsent("connection closed")
            stream_id = self.conn.get_next_available_stream_id()
            fields = [
                (b":method", b"POST"),
                (b":path", b"/mcp"),
                (b":scheme", b"http"),
                (b":authority", self.authority.encode()),
                *((name.encode(), value.encode()) for name, value in headers),
                (b"content-length", str(len(body)).encode()),
            ]
            future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            self.streams[stream_id] = _Stream(future)
            try:
                self.conn.send_headers(stream_id, fields)
                self.conn.send_data(stream_id, body, end_stream=True)  # small bodies: within any window
            except h2.exceptions.ProtocolError as exc:
                self.streams.pop(stream_id, None)
                raise Unsent(f"h2: {exc}") from None
            self._flush()
            return await future

    async def _read(self, reader: asyncio.StreamReader) -> None:
        reason = "the server closed the connection"
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    reason = f"h2 protocol error: {exc}"
                    break
                for event in events:
                    self._event(event)
                self._flush()
        except OSError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self.closed = True
            for stream in self.streams.values():
                if not stream.future.done():
                    stream.future.set_exception(Dropped(reason, self.local_port))
            self.streams.clear()
            if self._writer is not None:
                self._writer.close()

    def _event(self, event: Any) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                fields = {name.decode(): value.decode() for name, value in event.headers}
                stream.status = int(fields.pop(":status"))
                stream.headers = fields
        elif isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.body += event.data
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None and not stream.future.done():
                stream.future.set_result(
                    Reply(stream.status, stream.headers, bytes(stream.body), self.local_port)
                )
            if self.closed and not self.streams and self._writer is not None:
                self._writer.close()  # after a GOAWAY: the last answer came
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None and not stream.future.done():
                stream.future.set_exception(Dropped(f"stream reset ({event.error_code})", self.local_port))
        elif isinstance(event, h2.events.ConnectionTerminated):
            # GOAWAY: streams above last_stream_id were never processed (RFC 9113 section 6.8).
            self.closed = True
            last = event.last_stream_id if event.last_stream_id is not None else 0
            for stream_id in [sid for sid in self.streams if sid > last]:
                stream = self.streams.pop(stream_id)
                if not stream.future.done():
                    stream.future.set_exception(Unsent(f"GOAWAY after stream {last}"))


    def close(self) -> None:
        self.closed = True
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()
