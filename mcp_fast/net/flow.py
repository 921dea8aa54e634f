"""The one flow-control object of a connection.

Every pause/resume of reading and every wait for the write buffer to drain goes
through here (uvicorn's FlowControl idea, without its one bypass): a second
place that pauses the transport would resume it behind this object's back.

It also owns the write timeout: a peer that takes nothing of what we wrote for
``write_timeout`` seconds is dropped, whether a producer waits in ``drain`` (a
stream) or not (one large response written at once, which would otherwise sit
in the buffer, and keep the connection open, for as long as the peer likes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from enum import Flag, auto
from typing import Final

logger = logging.getLogger("mcp_fast.net")

# SO_LINGER on, 0 seconds: close() sends a TCP reset and frees the socket's buffers at once.
_RESET_ON_CLOSE: Final = struct.pack("ii", 1, 0)


def reset(transport: asyncio.Transport) -> None:
    """Drop a connection with a TCP reset, as nginx's ``reset_timedout_connection`` does.

    A plain close of a socket whose peer reads nothing queues a FIN behind the bytes still
    unsent: the kernel keeps them (up to its send buffer, about 4 MiB on loopback) in
    FIN_WAIT1 for as long as the peer keeps its window shut, minutes after the server let go,
    and the peer never learns the connection is over (bench/soak.py --fault slow-reader saw
    both). A reset frees them at once and tells the peer.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
    transport.abort()


class ReadPause(Flag):
    """Why reading is paused; reading resumes only when no reason is left."""

    NONE = 0
    PIPELINE_FULL = auto()  # requests wait behind the one in flight
    WRITE_BLOCKED = auto()  # the peer does not read our answers


class FlowControl:
    __slots__ = (
        "_closed",
        "_drain_waiters",
        "_reasons",
        "_transport",
        "_write_timeout",
        "_write_watch",
        "reading_paused",
        "write_paused",
    )

    def __init__(self, transport: asyncio.Transport, write_timeout: float = 30.0) -> None:
        self._transport = transport
        self._write_timeout = write_timeout
        self._reasons = ReadPause.NONE
        # Plain attributes, read on every request (a property would cost a call): read-only
        # outside this class.
        self.reading_paused = False
        self.write_paused = False
        # A list, not a deque: an idle connection holds one, and an empty deque costs 600 bytes.
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._closed = False
        # While writing is paused: the timer that drops the peer at the write timeout.
        self._write_watch: asyncio.TimerHandle | None = None

    # -- reading ---------------------------------------------------------------

    def pause_reading(self, reason: ReadPause) -> None:
        if self._closed:
            return
        if not self._reasons:
            self._transport.pause_reading()
            self.reading_paused = True
        self._reasons |= reason

    def resume_reading(self, reason: ReadPause) -> None:
        if self._closed or not (self._reasons & reason):
            return
        self._reasons &= ~reason
        if not self._reasons:
            self._transport.resume_reading()
            self.reading_paused = False

    # -- writing ---------------------------------------------------------------

    def on_pause_writing(self) -> None:
        """asyncio.Protocol.pause_writing: the transport buffer passed its high-water mark.

        From now on the peer has ``write_timeout`` seconds to take enough of it (until
        ``on_resume_writing``), or it is dropped. (Not on the common path: a response that
        fits the buffers never pauses writing.)"""
        self.write_paused = True
        if self._write_watch is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._write_watch = loop.call_later(self._write_timeout, self._give_up)

    def on_resume_writing(self) -> None:
        self.write_paused = False
        self._stop_watch()
        self._wake_writers()

    def _stop_watch(self) -> None:
        if self._write_watch is not None:
            self._write_watch.cancel()
            self._write_watch = None

    async def drain(self) -> None:
        """Wait until the peer took enough of what we wrote (returns at once if it did).

        A peer that takes nothing for ``write_timeout`` seconds is disconnected (the
        watch ``on_pause_writing`` started), so a client that stopped reading cannot
        hold a producer (and its buffered output) forever.
        """
        if not self.write_paused or self._closed:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def _give_up(self) -> None:
        self._write_watch = None
        if not self.write_paused or self._closed:
            return
        logger.info("dropping a connection whose client read nothing for %.3g s", self._write_timeout)
        self.abort()

    def abort(self) -> None:
        """Drop the connection (a reset); waiting writers go on and their output is dropped."""
        if not self._closed:
            reset(self._transport)
        self.on_connection_lost()

    def on_connection_lost(self) -> None:
        """Writers waiting for a gone peer go on (their output is dropped)."""
        self._closed = True
        self.write_paused = False
        self._stop_watch()
        self._wake_writers()

    def _wake_writers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
