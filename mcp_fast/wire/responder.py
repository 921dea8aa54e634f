"""The one interface between transports and the network adapter: answer one HTTP request.

HTTP/1.1 connections (stream 1) and HTTP/2 streams both implement it, so a
transport cannot tell the HTTP versions apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

# Constant header sets are tuples: the HTTP/1.1 writer remembers their encoding.
Headers = Sequence[tuple[bytes, bytes]]


class Responder(Protocol):
    def respond(self, status: int, headers: Headers, body: bytes) -> None:
        """A complete response with a known length; ends the exchange."""

    def start_stream(self, status: int, headers: Headers) -> None:
        """Begin a response whose body follows in pieces (SSE)."""

    def send_stream(self, data: bytes) -> None:
        """One piece of a streamed body; ignored once the peer is gone."""

    async def drain(self) -> None:
        """Wait while the peer reads slower than we write (backpressure)."""

    def end_stream(self) -> None:
        """End a streamed response; ends the exchange."""

    @property
    def disconnected(self) -> bool:
        """The peer went away: further output is dropped."""

    def on_disconnect(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` if the peer goes away before the exchange ends (None: forget it)."""

    def on_shutdown(self, callback: Callable[[], None] | None) -> None:
        """For a GET stream that carries answers still owed (the old HTTP+SSE transport's):
        at server shutdown call ``callback`` instead of ending the stream; the application
        ends it once it owes nothing (the shutdown timeout bounds the wait)."""

    def wait_disconnected(self) -> Awaitable[None]:
        """An awaitable that completes once the peer is gone (a long-lived stream waits on it;
        a future rather than a coroutine keeps an idle stream small)."""

    def abort(self) -> None:
        """Drop the connection now (a stream whose reader stopped reading)."""
