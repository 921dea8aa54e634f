"""Where SSE events wait so a client can resume a stream (Streamable HTTP, "Resumability").

Every event on a session's SSE stream gets an id ``<stream>_<n>``. A client whose
connection dropped GETs the endpoint with ``Last-Event-ID`` and is sent what it
missed on that stream only, then the rest of the stream as it happens. The
store is bounded (streams and events per stream), and sits behind a small
interface: ``MemoryEventStore`` keeps one process's streams, ``RedisEventStore``
(``redis_fleet.py``) also keeps them in Redis Streams, so a stream that broke on
one instance resumes on another. When what the client missed is no longer all
there (in this process nor in the shared store), ``replay`` says None and the
endpoint refuses the resumption (400) instead of serving it with a gap.

A stream is a POST's answer (``post``: it ends with the response) or a session's
GET stream (``get``: it ends when the client leaves).
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from mcp_fast.bounded import BoundedMap, kept

_SEPARATOR: Final = "_"

StreamKind = Literal["post", "get"]


@dataclass(slots=True)
class Replay:
    stream: str
    events: list[tuple[bytes, bytes]]  # (event id, message)
    complete: bool  # the stream ended (its response was sent): nothing more will come
    kind: StreamKind = "post"
    # Written by this process (False: by another instance; what follows comes through ``follow``).
    local: bool = True
    last_seq: int = 0  # the sequence number of the last event in ``events`` (or the one resumed from)


class EventStore(Protocol):
    def open_stream(self, session_id: str, kind: StreamKind = "post") -> str:
        """A new stream of ``session_id``; returns its key."""
        ...

    def append(self, stream: str, message: bytes) -> bytes:
        """Store a message; returns its event id."""
        ...

    def complete(self, stream: str) -> None:
        """The stream ended: replays of it end after its last event."""
        ...

    async def replay(self, session_id: str, last_event_id: str) -> Replay | None:
        """What followed ``last_event_id`` on its stream; None when unknown (or not the session's)."""
        ...

    def follow(self, replay: Replay) -> AsyncIterator[tuple[bytes, bytes]]:
        """The rest of a stream another instance writes (``replay.local`` False), as it comes,
        until it ends."""
        ...

    def continue_stream(self, session_id: str, replay: Replay) -> str:
        """The key a resumed GET stream goes on with: its own, or a new one when another
        instance wrote it."""
        ...


def parse_event_id(event_id: str) -> tuple[str, int] | None:
    """(stream, sequence number) of an event id ``<stream>_<n>``; None when it is not one."""
    stream, separator, seq_text = event_id.rpartition(_SEPARATOR)
    if not separator or not stream or not seq_text.isdigit() or len(seq_text) > 18:
        return None
    return stream, int(seq_text)


def event_id(stream: str, seq: int) -> bytes:
    return f"{stream}{_SEPARATOR}{seq}".encode()


def priming_id(stream: str) -> bytes:
    """The id of a stream's priming event (2025-11-25): resuming from it replays everything."""
    return f"{stream}{_SEPARATOR}0".encode()


@dataclass(slots=True)
class _Log:
    session_id: str
    kind: StreamKind = "post"
    # Made with the first event: an idle stream keeps no empty deque (600 bytes each).
    events: deque[tuple[int, bytes]] | None = None
    next_seq: int = 1
    complete: bool = False
    dropped_before: int = 1  # sequence numbers below this fell out of the bounded log


class MemoryEventStore:
    """In-process, bounded: at most ``max_streams`` streams of ``max_events`` events each."""

    def __init__(self, max_streams: int = 10_000, max_events: int = 256) -> None:
        self.max_events = max_events
        self._logs: BoundedMap[str, _Log] = BoundedMap(max_streams)

    def open_stream(self, session_id: str, kind: StreamKind = "post") -> str:
        stream = secrets.token_hex(8)
        self._logs.put(stream, _Log(session_id, kind))
        return stream

    def next_seq(self, stream: str) -> int | None:
        """The sequence number the stream's next event gets (None: unknown or evicted)."""
        log: _Log | None = self._logs.get(stream)
        return log.next_seq if log is not None else None

    def append(self, stream: str, message: bytes) -> bytes:
        log: _Log | None = self._logs.get(stream)
        if log is None:  # evicted: the event still goes out live, it just can't be replayed
            return f"{stream}{_SEPARATOR}x".encode()
        seq = log.next_seq
        log.next_seq += 1
        events = log.events
        if events is None:
            events = log.events = deque(maxlen=self.max_events)
        if len(events) == events.maxlen:
            log.dropped_before = events[0][0] + 1
        events.append((seq, kept(message)))  # orjson's bytes hold 4 KiB each
        return f"{stream}{_SEPARATOR}{seq}".encode()

    def complete(self, stream: str) -> None:
        log: _Log | None = self._logs.get(stream)
        if log is not None:
            log.complete = True

    async def replay(self, session_id: str, last_event_id: str) -> Replay | None:
        return self.replay_now(session_id, last_event_id)

    def replay_now(self, session_id: str, last_event_id: str) -> Replay | None:
        """``replay`` without waiting: this process's streams only."""
        parsed = parse_event_id(last_event_id)
        if parsed is None:
            return None
        stream, after = parsed
        log: _Log | None = self._logs.get(stream)
        if log is None or log.session_id != session_id:
            return None
        if after + 1 < log.dropped_before:
            return None  # what the client missed is gone: it must start over
        events = [(event_id(stream, seq), message) for seq, message in log.events or () if seq > after]
        return Replay(stream, events, log.complete, log.kind, True, max(after, log.next_seq - 1))

    async def follow(self, replay: Replay) -> AsyncIterator[tuple[bytes, bytes]]:
        return  # every stream here is this process's own: its live channel sends the rest
        yield  # pragma: no cover - makes this an async generator

    def continue_stream(self, session_id: str, replay: Replay) -> str:
        return replay.stream
