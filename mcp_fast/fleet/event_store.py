"""Where SSE events wait so a client can resume a stream (Streamable HTTP, "Resumability").

Every event on a session's SSE stream gets an id ``<stream>_<n>``. A client whose
connection dropped GETs the endpoint with ``Last-Event-ID`` and is sent what it
missed on that stream only, then the rest of the stream as it happens. The
store is bounded (streams and events per stream), and sits behind a small
interface so a shared store (for fleets) can implement it later. When what the
client missed is no longer all here, ``replay`` says None and the endpoint
refuses the resumption (400) instead of serving it with a gap.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass
from typing import Final, Protocol

from mcp_fast.bounded import BoundedMap, kept

_SEPARATOR: Final = "_"


@dataclass(slots=True)
class Replay:
    stream: str
    events: list[tuple[bytes, bytes]]  # (event id, message)
    complete: bool  # the stream ended (its response was sent): nothing more will come


class EventStore(Protocol):
    def open_stream(self, session_id: str) -> str:
        """A new stream of ``session_id``; returns its key."""

    def append(self, stream: str, message: bytes) -> bytes:
        """Store a message; returns its event id."""

    def complete(self, stream: str) -> None:
        """The stream ended: replays of it end after its last event."""

    def replay(self, session_id: str, last_event_id: str) -> Replay | None:
        """What followed ``last_event_id`` on its stream; None when unknown (or not the session's)."""


def priming_id(stream: str) -> bytes:
    """The id of a stream's priming event (2025-11-25): resuming from it replays everything."""
    return f"{stream}{_SEPARATOR}0".encode()


@dataclass(slots=True)
class _Log:
    session_id: str
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

    def open_stream(self, session_id: str) -> str:
        stream = secrets.token_hex(8)
        self._logs.put(stream, _Log(session_id))
        return stream

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

    def replay(self, session_id: str, last_event_id: str) -> Replay | None:
        stream, separator, seq_text = last_event_id.rpartition(_SEPARATOR)
        log: _Log | None = self._logs.get(stream)
        if not separator or log is None or log.session_id != session_id or not seq_text.isdigit():
            return None
        after = int(seq_text)
        if after + 1 < log.dropped_before:
            return None  # what the client missed is gone: it must start over
        events = [
            (f"{stream}{_SEPARATOR}{seq}".encode(), message)
            for seq, message in log.events or ()
            if seq > after
        ]
        return Replay(stream, events, log.complete)
