"""Ended sessions, shared by every instance that reads one directory (``--fleet-dir``, in ``ended/``).

A stateless session is ended (DELETE) by keeping its id on a denylist until its token would have
expired anyway. In one process that is a map (``JwtSessions``). A fleet must share it: several
``--workers``, or instances behind a load balancer with a shared volume. Otherwise a session
ended on one instance goes on working on the others, and basic/transports.mdx "Session
Management" says the server MUST answer 404 for it after the DELETE.

The shared form is append-only segment files, one per hour: ``<hour>.ended`` holds lines
``<session id> <expiry in unix seconds>``. Ending a session appends one line. The file is
opened with O_APPEND, so one small write is never interleaved with another writer's. Each
instance remembers how far it has read each segment, and reads only what is new. It does so at
most every ``poll_seconds``, when a session is resolved, so a DELETE takes effect everywhere
within that time and an idle instance does no I/O. A segment is removed by whichever instance
first sees that it is no longer written and that every token it names has expired.

Nothing here trusts the files more than it must. A malformed line is skipped, and a half-written
last line waits for its end. An unreadable directory is logged, and this instance's own endings
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

_SUFFIX: Final = ".ended"
_SEGMENT_SECONDS: Final = 3600
# Segment names come from each writer's clock: one hour of margin for clocks that disagree.
_CLOCK_MARGIN_SEGMENTS: Final = 1
# What session ids look like (secrets.token_urlsafe); anything else in a file is not ours.
_SESSION_ID: Final = re.compile(rb"[A-Za-z0-9_-]{1,128}")


@dataclass(slots=True)
class _Segment:
    offset: int = 0  # bytes read and taken so far (always just after a line end)
    latest_expiry: float = 0.0  # the latest token expiry named in it so far


def _segment_hour(name: str) -> int | None:
    stem = name.removesuffix(_SUFFIX)
    if stem == name or not stem.isdigit():
        return None
    return int(stem)


def parse_lines(data: bytes) -> tuple[list[tuple[str, float]], int]:
    """The endings in ``data`` and how many bytes of it were taken: only whole lines, so a
    line still being written waits for the next read."""
    taken = data.rfind(b"\n") + 1
    endings = []
    for line in data[:taken].splitlines():
        session_id, _, expiry_text = line.partition(b" ")
        try:
            expiry = float(expiry_text)
        except ValueError:
            continue
        if _SESSION_ID.fullmatch(session_id) is None or not math.isfinite(expiry):
            continue
        endings.append((session_id.decode("ascii"), expiry))
    return endings, taken


class SharedDenylist:
    """The directory's endings: ``add`` one, ``refresh`` to learn the others' new ones."""

    def __init__(self, directory: Path, poll_seconds: float) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        self.poll_seconds = poll_seconds
        self.next_poll = 0.0  # when ``refresh`` next looks (the caller compares, to stay cheap)
        self._segments: dict[str, _Segment] = {}
        self._failing = False  # log a broken directory once, not on every poll

    def add(self, session_id: str, expires_at: float, now: float) -> None:
        """Append one ending to the current segment."""
        name = f"{int(now) // _SEGMENT_SECONDS}{_SUFFIX}"
        line = b"%s %d\n" % (session_id.encode("ascii"), math.ceil(expires_at))
        try:
            fd = os.open(self.directory / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            logger.error(
                "session %s ended here, but other instances are not told (%s: %s)",
                session_id, self.directory, exc.strerror or exc,
            )  # fmt: skip

    def refresh(self, now: float) -> list[tuple[str, float]]:
        """The endings written since the last look, by any instance; old segments are removed."""
        self.next_poll = now + self.poll_seconds
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            self._report(exc)
            return []
        endings: list[tuple[str, float]] = []
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
                endings += self._read_new(name, segment)
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
        return endings

    def _read_new(self, name: str, segment: _Segment) -> list[tuple[str, float]]:
        path = self.directory / name
        size = os.stat(path).st_size
        if size < segment.offset:  # removed and written again (a writer's clock far behind)
            segment.offset = 0
        if size == segment.offset:
            return []
        with open(path, "rb") as file:
            file.seek(segment.offset)
            data = file.read()
        endings, taken = parse_lines(data)
        segment.offset += taken
        for _, expiry in endings:
            segment.latest_expiry = max(segment.latest_expiry, expiry)
        return endings

    def _remove(self, name: str) -> None:
        os.unlink(self.directory / name)
        del self._segments[name]

    def _report(self, exc: OSError) -> None:
        if not self._failing:
            self._failing = True
            logger.error(
                "cannot read the session denylist %s (%s); sessions ended elsewhere may still "
                "be served here", self.directory, exc.strerror or exc,
            )  # fmt: skip
