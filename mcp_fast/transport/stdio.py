"""The stdio transport: newline-delimited JSON-RPC on stdin and stdout, one session per process.

Spec: docs/specification/2025-11-25/basic/transports.mdx "stdio" (the same in
2024-11-05), and for 2026-07-28 draft/basic/transports/stdio.mdx:
- messages are UTF-8 JSON-RPC, one per line, with no embedded newlines
  (``framing.LineFramer`` reads them; orjson never writes a raw newline);
- the server MUST NOT write anything to stdout that is not a valid MCP message:
  ``claim_standard_streams`` moves the protocol to private descriptors and points
  fd 1 at stderr and fd 0 at /dev/null, so a stray ``print()``, a C library or a
  child process cannot corrupt the output or steal the input; logs go to stderr;
- shutdown: the client closes stdin, and the server SHOULD exit promptly
  (draft stdio.mdx "Shutdown"). Here requests in flight get ``shutdown_timeout``
  seconds to finish and answer, then the process exits 0; SIGTERM and SIGINT do the same.

What happens to the messages is ``channel.ChannelSession``'s business (shared with
the old HTTP+SSE transport). This module is the asyncio glue: ``StdioChannel`` is
the one flow-control object of the two pipes. Reading pauses while stdout is
blocked (the client does not read our answers), and handlers that send
notifications wait for stdout to drain, so neither side can make us buffer
without bound. Pipes and sockets are served by the event loop; a regular file or
a terminal (``< requests.jsonl``) by a reader thread and blocking writes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import stat
import sys
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from mcp_fast.pipeline import Pipeline
from mcp_fast.protocol import jsonrpc
from mcp_fast.protocol.jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, McpError
from mcp_fast.transport.channel import ChannelSession
from mcp_fast.wire.lines import OVERSIZE, Frame, LineFramer

logger = logging.getLogger("mcp_fast.transport")

_NEWLINE: Final = b"\n"
_CHUNK: Final = 256 * 1024  # read size of the reader thread (the loop's pipe reads are alike)
_FLUSH_TIMEOUT: Final = 5.0  # seconds to hand buffered output to a client that still reads


@dataclass(frozen=True)
class StdioSettings:
    max_message_size: int = 4 << 20  # the HTTP body limit applies to a line
    shutdown_timeout: float = 10.0


def claim_standard_streams() -> tuple[int, int]:
    """Take fd 0 and fd 1 for the protocol; returns private duplicates (input, output).

    Call it before the application is imported: what it prints at import time then
    goes to stderr too. Output Python buffered before is flushed to stderr here.
    """
    input_fd = os.dup(0)
    output_fd = os.dup(1)  # os.dup makes non-inheritable descriptors: children don't get them
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
    finally:
        os.close(null)
    try:
        os.dup2(2, 1)
    except OSError:  # no stderr at all: stray output goes nowhere
        sink = os.open(os.devnull, os.O_WRONLY)
        os.dup2(sink, 1)
        os.close(sink)
    sys.stdout.flush()
    return input_fd, output_fd


def _is_pipe(fd: int) -> bool:
    """A pipe or a socket, which the event loop can watch (uvloop aborts on other kinds)."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class _Output(Protocol):
    def writelines(self, data: Iterable[bytes]) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...


class _BlockingOutput:
    """A regular file or a terminal as stdout: plain blocking writes (they never wait long)."""

    __slots__ = ("_channel", "_closed", "_fd")

    def __init__(self, fd: int, channel: StdioChannel) -> None:
        self._fd = fd
        self._channel = channel
        self._closed = False

    def writelines(self, data: Iterable[bytes]) -> None:
        view = memoryview(b"".join(data))
        while view and not self._closed:
            try:
                written = os.write(self._fd, view)
            except OSError:
                self.close()
                return
            view = view[written:]

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)
            self._channel.on_output_lost()


class _InputProtocol(asyncio.Protocol):
    __slots__ = ("_channel",)

    def __init__(self, channel: StdioChannel) -> None:
        self._channel = channel

    def data_received(self, data: bytes) -> None:
        self._channel.feed(data)

    def eof_received(self) -> bool | None:
        self._channel.feed_eof()
        return None  # close the read side

    def connection_lost(self, exc: Exception | None) -> None:
        self._channel.feed_eof()


class _OutputProtocol(asyncio.BaseProtocol):
    __slots__ = ("_channel",)

    def __init__(self, channel: StdioChannel) -> None:
        self._channel = channel

    def pause_writing(self) -> None:
        self._channel.on_pause_writing()

    def resume_writing(self) -> None:
        self._channel.on_resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._channel.on_output_lost()


class StdioChannel:
    """stdin and stdout of the process as one message channel (the session's ``Sink``)."""

    __slots__ = (
        "_drain_waiters",
        "_framer",
        "_input",
        "_input_open",
        "_output",
        "_output_gone",
        "_readable",
        "_stopped",
        "_write_paused",
        "reason",
        "session",
    )

    def __init__(self, max_message_size: int) -> None:
        self._framer = LineFramer(max_message_size)
        self.session: ChannelSession | None = None
        self._input: asyncio.ReadTransport | None = None
        self._input_open = True
        self._output: _Output | None = None
        self._output_gone = asyncio.Event()
        self._write_paused = False
        self._drain_waiters: deque[asyncio.Future[None]] = deque()
        self._readable = asyncio.Event()  # cleared while reading is paused (the reader thread waits)
        self._readable.set()
        self._stopped = asyncio.Event()
        self.reason = ""

    # -- setting up -------------------------------------------------------------------

    async def connect(self, input_fd: int, output_fd: int) -> None:
        loop = asyncio.get_running_loop()
        if _is_pipe(output_fd):
            pipe = os.fdopen(output_fd, "wb", buffering=0)
            transport, _ = await loop.connect_write_pipe(lambda: _OutputProtocol(self), pipe)
            self._output = transport
        else:
            self._output = _BlockingOutput(output_fd, self)
        if _is_pipe(input_fd):
            pipe = os.fdopen(input_fd, "rb", buffering=0)
            reader, _ = await loop.connect_read_pipe(lambda: _InputProtocol(self), pipe)
            self._input = reader
        else:
            thread = threading.Thread(
                target=_read_in_thread, args=(input_fd, loop, self), name="mcp-fast-stdin", daemon=True
            )
            thread.start()

    # -- input --------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from stdin: every line they complete is handled now, in order."""
        if not self._input_open:
            return
        for frame in self._framer.receive_data(data):
            self._handle(frame)
        if self._write_paused:
            self._pause_input()

    def feed_eof(self) -> None:
        """End of stdin: the client is leaving (stdio.mdx "Shutdown")."""
        if not self._input_open:
            return
        for frame in self._framer.receive_eof():
            self._handle(frame)
        self.stop("end of input")

    async def feed_from_thread(self, data: bytes) -> None:
        await self._readable.wait()
        if data:
            self.feed(data)
        else:
            self.feed_eof()

    def _handle(self, frame: Frame) -> None:
        session = self.session
        assert session is not None
        if frame is OVERSIZE:
            limit = self._framer.max_line
            reason = f"Invalid request: a message longer than {limit} bytes was dropped"
            self.send(jsonrpc.encode_error(None, McpError(INVALID_REQUEST, reason)))
            return
        assert isinstance(frame, bytes)
        try:
            value = jsonrpc.decode(frame)
        except McpError as exc:
            self.send(jsonrpc.encode_error(None, exc))  # JSON-RPC 2.0 5.1: id null for a parse error
            return
        error: McpError | None
        try:
            error = session.receive(value)
        except Exception:  # boundary: one bad message must not end the process (logged)
            logger.exception("unhandled error while handling a message")
            error = McpError(INTERNAL_ERROR, "Internal error")
        if error is not None:
            request_id = error.request_id if isinstance(error, jsonrpc.InvalidMessage) else None
            self.send(jsonrpc.encode_error(request_id, error))

    def _pause_input(self) -> None:
        self._readable.clear()
        if self._input is not None and not self._input.is_closing():
            self._input.pause_reading()

    def _resume_input(self) -> None:
        self._readable.set()
        if self._input is not None and not self._input.is_closing():
            self._input.resume_reading()

    # -- output: the session's Sink ---------------------------------------------------

    def send(self, message: bytes) -> None:
        output = self._output
        if output is None or output.is_closing():
            return
        if _NEWLINE in message:
            # Never the case with our encoders; a raw newline in valid JSON can only be
            # whitespace between tokens, so this keeps the framing whatever produced it.
            message = message.replace(_NEWLINE, b" ")
        output.writelines((message, _NEWLINE))

    async def drain(self) -> None:
        """Wait while stdout's buffer is above its high-water mark.

        No write timeout, unlike HTTP streams: the client is our only peer, and one
        that is slow to read (a debugger, a busy UI thread) is still the client.
        """
        if not self._write_paused:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def on_pause_writing(self) -> None:
        self._write_paused = True

    def on_resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writers()
        if self._input_open:
            self._resume_input()

    def on_output_lost(self) -> None:
        """stdout is gone (the client closed its end): nobody can hear us any more."""
        self._write_paused = False
        self._wake_writers()
        self._output_gone.set()
        self.stop("output closed")

    def _wake_writers(self) -> None:
        while self._drain_waiters:
            waiter = self._drain_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # -- the end ------------------------------------------------------------------------

    @property
    def output_gone(self) -> bool:
        return self._output_gone.is_set()

    def stop(self, reason: str) -> None:
        """Read no more input; ``serve_stdio`` then winds the session down."""
        if self._stopped.is_set():
            return
        self.reason = reason
        self._input_open = False
        self._readable.set()  # a waiting reader thread sees the channel closed and ends
        if self._input is not None:
            self._input.close()
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def close_output(self) -> None:
        """Flush what is buffered to a client that still reads, then close stdout."""
        output = self._output
        if output is None or output.is_closing():
            return
        output.close()  # a pipe transport writes out its buffer first, then reports the loss
        try:
            await asyncio.wait_for(self._output_gone.wait(), _FLUSH_TIMEOUT)
        except TimeoutError:
            logger.warning("stdout did not take the last %s", "answers in time")


def _read_in_thread(fd: int, loop: asyncio.AbstractEventLoop, channel: StdioChannel) -> None:
    """stdin that the event loop cannot watch (a file, a terminal): blocking reads in a
    daemon thread, each chunk handed over only once the loop took the previous one."""
    while True:
        try:
            data = os.read(fd, _CHUNK)
        except OSError:
            data = b""
        try:
            asyncio.run_coroutine_threadsafe(channel.feed_from_thread(data), loop).result()
        except (RuntimeError, asyncio.CancelledError):
            return  # the loop is gone
        if not data or channel.reason:
            return


async def serve_stdio(pipeline: Pipeline, settings: StdioSettings, input_fd: int, output_fd: int) -> str:
    """Serve one client on the two descriptors until it leaves; returns why the session ended."""
    loop = asyncio.get_running_loop()
    channel = StdioChannel(settings.max_message_size)
    session = ChannelSession(
        pipeline, channel, session_id="stdio-" + secrets.token_hex(8), transport="stdio", sessionless=True
    )
    channel.session = session
    pipeline.server.on_list_changed(session.list_changed)
    pipeline.server.on_resource_updated(session.resource_updated)
    pipeline.on_task_status(session.task_status)
    await channel.connect(input_fd, output_fd)
    signals = _stop_on_signals(loop, channel)
    try:
        await channel.wait_stopped()
        logger.info("stdio: %s; %d request(s) in flight", channel.reason, session.in_flight)
        if channel.output_gone:
            session.end()
            session.cancel_all()  # nobody left to answer
        await session.finish(settings.shutdown_timeout)
        await channel.close_output()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return channel.reason


def _stop_on_signals(loop: asyncio.AbstractEventLoop, channel: StdioChannel) -> list[int]:
    installed: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        return installed  # signal handlers live in the main thread only (tests may run elsewhere)
    for signum in (signal.SIGTERM, signal.SIGINT):
        name = signal.Signals(signum).name
        loop.add_signal_handler(signum, channel.stop, name)
        installed.append(signum)
    return installed
