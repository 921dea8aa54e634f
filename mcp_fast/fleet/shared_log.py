"""What the instances of a fleet tell each other, as append-only logs in ``--fleet-dir``.

Two things are broadcast this way: ended sessions (``ended/``) and ``notifications/cancelled``
that reached another instance than the one running the request (``cancelled/``).

- A stateless session is ended (DELETE) by keeping its id on a denylist until its token would
  have expired anyway. In one process that is a set (``EndedSessions``). A fleet must share it:
  several ``--workers``, or instances behind a load balancer with a shared volume. Otherwise a
  session ended on one instance goes on working on the others, and basic/transports.mdx "Session
  Management" says the server MUST answer 404 for it after the DELETE.
- A cancellation is kept for a few minutes, for whichever instance runs the request.

Each log is a set of segment files, one per hour. ``<hour>.log`` holds lines
``<session id> <expiry in unix seconds> [payload]``, and writing an entry appends one line. The
file is opened with O_APPEND, so one small write is never interleaved with another writer's.
Each instance remembers how far it has read each segment, and reads only what is new, at most
every ``poll_seconds``. A segment is removed by whichever instance first sees that it is no
longer written and that every entry in it has expired.

Nothing here trusts the files more than it must. A malformed line is skipped, and a half-written
last line waits for its end. An unreadable directory is logged, and this instance's own entries
still hold.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

logger = logging.getLogger("mcp_fast.sessions")

_SUFFIX: Final = ".log"
_SEGMENT_SECONDS: Final = 3600
# Segment names come from each writer's clock: one hour of margin for clocks that disagree.
_CLOCK_MARGIN_SEGMENTS: Final = 1
# What session ids look like (secrets.token_urlsafe); anything else in a file is not ours.
_SESSION_ID: Final = re.compile(rb"[A-Za-z0-9_-]{1,128}")


@dataclass(slots=True)
class _Segment:
    offset: int = 0  # bytes read and taken so far (always just after a line end)
    latest_expiry: float = 0.0  # the latest expiry of an entry in it so far


def _segment_hour(name: str) -> int | None:
    stem = name.removesuffix(_SUFFIX)
    if stem == name or not stem.isdigit():
        return None
    return int(stem)


# One entry: the session it is about, when it expires, and what else the line carries.
Entry = tuple[str, float, bytes]


def parse_lines(data: bytes) -> tuple[list[Entry], int]:
    """The entries in ``data`` and how many bytes of it were taken: only whole lines, so a
    line still being written waits for the next read."""
    taken = data.rfind(b"\n") + 1
    entries = []
    for line in data[:taken].splitlines():
        session_id, _, rest = line.partition(b" ")
        expiry_text, _, payload = rest.partition(b" ")
        try:
            expiry = float(expiry_text)
        except ValueError:
            continue
        if _SESSION_ID.fullmatch(session_id) is None or not math.isfinite(expiry):
            continue
        entries.append((session_id.decode("ascii"), expiry, payload))
    return entries, taken


class SharedLog:
    """One log in the fleet directory: ``add`` an entry, ``refresh`` to learn the others' new ones."""

    def __init__(self, directory: Path, poll_seconds: float, what: str) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        self.what = what  # for log messages: "ended sessions", "cancellations"
        self.poll_seconds = poll_seconds
        self.next_poll = 0.0  # when ``refresh`` next looks (the caller compares, to stay cheap)
        self._segments: dict[str, _Segment] = {}
        self._failing = False  # log a broken directory once, not on every poll

    def add(self, session_id: str, expires_at: float, now: float, payload: bytes = b"") -> None:
        """Append one entry to the current segment (``payload``: one line's worth, no newline)."""
        if b"\n" in payload or b"\r" in payload:
            raise ValueError("a shared log entry is one line")
        name = f"{int(now) // _SEGMENT_SECONDS}{_SUFFIX}"
        line = b"%s %d" % (session_id.encode("ascii"), math.ceil(expires_at))
        line += b" " + payload + b"\n" if payload else b"\n"
        try:
            fd = os.open(self.directory / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            logger.error(
                "%s: an entry for session %s holds here, but other instances are not told (%s: %s)",
                self.what, session_id, self.directory, exc.strerror or exc,
            )  # fmt: skip

    def refresh(self, now: float) -> list[Entry]:
        """The entries written since the last look, by any instance; old segments are removed."""
        self.next_poll = now + self.poll_seconds
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            self._report(exc)
            return []
        entries: list[Entry] = []
        problem: OSError | None = None
        current_hour = int(now) // _SEGMENT_SECONDS
        present = set()
        for name in names:
            hour = _segment_hour(name)
            if hour is None:
                continue
            present.add(name)
            segment = self._segments.setdefault(name, _Segment())
            try:
                entries += self._read_new(name, segment)
                if hour < current_hour - _CLOCK_MARGIN_SEGMENTS and segment.latest_expiry < now:
                    self._remove(name)
            except FileNotFoundError:
                continue  # another instance removed it just now
            except OSError as exc:
                problem = exc
        for name in self._segments.keys() - present:
            del self._segments[name]
        if problem is not None:
            self._report(problem)
        else:
            self._failing = False
        return entries

    def _read_new(self, name: str, segment: _Segment) -> list[Entry]:
        path = self.directory / name
        size = os.stat(path).st_size
        if size < segment.offset:  # removed and written again (a writer's clock far behind)
            segment.offset = 0
        if size == segment.offset:
            return []
        with open(path, "rb") as file:
            file.seek(segment.offset)
            data = file.read()
        entries, taken = parse_lines(data)
        segment.offset += taken
        for _, expiry, _ in entries:
            segment.latest_expiry = max(segment.latest_expiry, expiry)
        return entries

    def _remove(self, name: str) -> None:
        os.unlink(self.directory / name)
        del self._segments[name]

    def _report(self, exc: OSError) -> None:
        if not self._failing:
            self._failing = True
            logger.error(
                "cannot read the fleet's %s in %s (%s); this instance does not learn of the "
                "other instances' until it can", self.what, self.directory, exc.strerror or exc,
            )  # fmt: skip
