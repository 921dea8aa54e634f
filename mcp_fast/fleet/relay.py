"""Answers to server-to-client requests that reached the wrong instance of a fleet (``--fleet-dir``).

A 2025 session's sampling, elicitation or roots request goes out on the stream of the instance
that runs the tool, and that instance waits for the answer. The client sends its answer in a new
POST. Behind a round-robin load balancer (or with ``--workers``, where the kernel picks the
worker) that POST usually reaches another instance, which has nobody waiting for it. The request
id names the instance that asked (``srv-<instance>-<n>``, ``pipeline/server_requests.py``). So the
instance that got the answer drops it in the asking instance's mailbox, a directory under the
fleet directory. The asking instance looks there every ``poll_seconds``, but only while it waits
for an answer.

Nothing else goes through here. Each answer is one file, written under a temporary name and
renamed, so a reader never sees half of one. The reader takes the file (reads it, then removes
it) and hands the answer to ``ServerRequests.resolve``, which checks that the answering session
is the one that was asked. A mailbox whose instance is gone, and that nobody has touched for
``_ABANDONED_SECONDS``, is removed by any instance that looks at its own mailbox.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Final

import orjson

logger = logging.getLogger("mcp_fast.transport")

# What the instance part of a server-to-client request id looks like (secrets.token_hex(4)).
_INSTANCE: Final = re.compile(r"[0-9a-f]{8}")
_REQUEST_ID: Final = re.compile(r"srv-([0-9a-f]{8})-[0-9]+")
# Longer than any server-to-client request waits (Context.request's default timeout is 300 s).
_ABANDONED_SECONDS: Final = 1800.0
_SWEEP_EVERY_SECONDS: Final = 60.0
# Answers a mailbox holds at most. Only a waiting instance empties its mailbox, so without a
# bound a client could pile up answers nobody waits for (each up to --max-body-size) there.
MAX_WAITING_ANSWERS: Final = 64

# One relayed answer: the id it answers, the session that answered, the JSON-RPC message.
Relayed = tuple[str, str, dict[str, Any]]


def asking_instance(request_id: object) -> str | None:
    """The instance that sent the server-to-client request ``request_id`` (None: not ours)."""
    if not isinstance(request_id, str):
        return None
    match = _REQUEST_ID.fullmatch(request_id)
    return match.group(1) if match is not None else None


class AnswerRelay:
    """This instance's mailbox in ``<fleet dir>/answers/``, and the way to the others'."""

    def __init__(self, directory: Path, instance: str, poll_seconds: float) -> None:
        if _INSTANCE.fullmatch(instance) is None:
            raise ValueError(f"not an instance id: {instance!r}")
        self.directory = directory
        self.instance = instance
        self.poll_seconds = poll_seconds
        self._next_sweep = 0.0
        # Others forward only to a mailbox that exists, so a made-up instance id in an answer
        # makes no directory. It exists from the start, and prepare() keeps it there.
        self.prepare()

    def prepare(self) -> None:
        """Make sure the mailbox exists and looks alive (the sweep removes idle ones): called
        before a request goes out, so its answer always has somewhere to go."""
        mailbox = self.directory / self.instance
        try:
            mailbox.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.utime(mailbox)
        except OSError as exc:
            logger.error("cannot prepare the answer mailbox %s (%s)", mailbox, exc.strerror or exc)

    def forward(self, instance: str, request_id: str, owner: str, message: dict[str, Any]) -> bool:
        """Drop an answer in ``instance``'s mailbox; False (logged) when that fails."""
        if instance == self.instance or _INSTANCE.fullmatch(instance) is None:
            return False
        mailbox = self.directory / instance
        name = secrets.token_hex(8)
        data = orjson.dumps({"id": request_id, "owner": owner, "message": message})
        try:
            if len(os.listdir(mailbox)) >= MAX_WAITING_ANSWERS:
                logger.warning(
                    "instance %s has %d answers waiting already; one more was dropped",
                    instance,
                    MAX_WAITING_ANSWERS,
                )
                return False
            temporary = mailbox / f".{name}.tmp"  # readers skip dot files
            temporary.write_bytes(data)
            os.rename(temporary, mailbox / f"{name}.json")
        except FileNotFoundError:
            logger.debug("an answer for instance %s, which is not running, was dropped", instance)
            return False
        except OSError as exc:
            logger.error("cannot pass an answer on to instance %s (%s)", instance, exc.strerror or exc)
            return False
        return True

    def take(self, now: float) -> list[Relayed]:
        """The answers waiting in this instance's mailbox (each is taken once)."""
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_EVERY_SECONDS
            self._sweep(now)
        mailbox = self.directory / self.instance
        try:
            os.utime(mailbox)  # alive: not to be swept
            names = [name for name in os.listdir(mailbox) if not name.startswith(".")]
        except FileNotFoundError:
            self.prepare()
            return []
        except OSError as exc:
            logger.error("cannot read the answer mailbox %s (%s)", mailbox, exc.strerror or exc)
            return []
        taken: list[Relayed] = []
        for name in names:
            path = mailbox / name
            try:
                data = path.read_bytes()
                path.unlink()
            except OSError:
                continue  # gone already
            answer = _parse(data)
            if answer is None:
                logger.warning("a malformed relayed answer was dropped (%s)", path)
                continue
            taken.append(answer)
        return taken

    def close(self) -> None:
        """This instance stops: its mailbox goes (nothing will wait for what lands there)."""
        shutil.rmtree(self.directory / self.instance, ignore_errors=True)

    def _sweep(self, now: float) -> None:
        """Remove the mailboxes of instances that are gone (nobody has touched them for long)."""
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        for entry in entries:
            if entry.name == self.instance or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                idle = now - entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            if idle > _ABANDONED_SECONDS:
                shutil.rmtree(entry.path, ignore_errors=True)


def _parse(data: bytes) -> Relayed | None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    request_id, owner, message = value.get("id"), value.get("owner"), value.get("message")
    if not (isinstance(request_id, str) and isinstance(owner, str) and isinstance(message, dict)):
        return None
    return request_id, owner, message
