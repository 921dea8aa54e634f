"""Faults the soak injects under load (``bench/soak.py --fault NAME``), each with its figures and
its own checks on top of the soak's (no wrong answer, nothing lost):

- ``sigterm``: SIGTERM to one of two instances behind nginx; it answers what reached it, exits
  0, and is started again; clients (through nginx) see no error.
- ``kill-worker``: ``kill -9`` of one ``--workers 2`` process; the supervisor starts a new one
  within a second; every failed request was on a connection of the killed worker.
- ``rolling-restart``: the two instances behind nginx restarted one after the other, again and
  again; no client error.
- ``slow-reader``: a client that stops reading (large answers pipelined, SSE streams of the old
  transport); the server's memory stays bounded, the server drops it, other clients go on.
- ``audit-disk-full``: the audit log's disk is full (``/dev/full``) for the first half, then has
  room again; requests never fail, the log says so once, and lines are written again.
- ``redis-restart``: Redis under a fleet on ``--redis`` stopped and started again; only what
  needs Redis is refused meanwhile (503), everything works again after.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import socket
import statistics
import struct
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from soak_target import (
    Deployment,
    Instance,
    Local,
    NginxFleet,
    Redis,
    SetupError,
    children_of,
    listens,
    mcp_fast_flags,
    peer_ports,
    scrape,
    wait_for_port,
)

SHUTDOWN_TIMEOUT = 10.0  # mcp_fast's --shutdown-timeout default


class Fault:
    name = ""
    deployment = "local"  # what it runs against: local, nginx, redis
    workers = 1
    judge_rss = False  # whether the soak's RSS rule applies (not when servers restart)

    def __init__(self) -> None:
        self.markers: list[dict[str, Any]] = []
        self.figures: dict[str, Any] = {}
        self.checks: list[tuple[bool, str]] = []
        self.start = 0.0
        self.seconds = 0.0
        self.deployment_ref: Deployment | None = None
        self._next = float("inf")

    def unavailable(self) -> str | None:
        return None

    def server_args(self, directory: Path) -> list[str]:
        return []

    def build(self, directory: Path, extra: list[str]) -> Deployment:
        return NginxFleet(directory, extra)

    def prepare(self, deployment: Deployment, weights: dict[str, float]) -> None:
        self.deployment_ref = deployment

    def begin(self, start: float, seconds: float, deployment: Deployment) -> None:
        self.start, self.seconds = start, seconds
        self._next = start + self.first_action(seconds)

    def first_action(self, seconds: float) -> float:
        return 0.4 * seconds

    def next_action(self, now: float) -> float:
        return self._next

    def act(self, t: float) -> None:
        """Called at (or just after) ``next_action``; sets the next one."""
        self._next = float("inf")

    def finish(self, deployment: Deployment) -> None:
        return None

    def excused(self, failure: dict[str, Any]) -> bool:
        """A failure the fault explains (and its own checks account for)."""
        return False

    def report(self, summary: dict[str, Any], clients: Any, deployment: Deployment) -> dict[str, Any]:
        return {"name": self.name, "figures": self.figures, "verdicts": self.checks}

    def cleanup(self) -> None:
        return None

    def mark(self, t: float, label: str, color: str = "#d62728") -> None:
        self.markers.append({"t": round(t, 2), "label": label, "color": color})


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def count_lines(text: str, pattern: str) -> int:
    return len(re.findall(pattern, text))


def nginx_figures(fleet: NginxFleet, since: float = 0.0, until: float = float("inf")) -> dict[str, int]:
    """From nginx's access log: answers >= 500 to clients, requests retried on the other instance."""
    to_clients_5xx = 0
    retried = 0
    for line in fleet.access_log():
        parts = line.split()
        if len(parts) < 5:
            continue
        with contextlib.suppress(ValueError):
            if not since <= float(parts[0]) <= until:
                continue
            if int(parts[3]) >= 500:
                to_clients_5xx += 1
        if "," in line.split("up=", 1)[-1].split(" upstatus=", 1)[0]:
            retried += 1
    return {"5xx to clients": to_clients_5xx, "retried on the other instance": retried}


class Restarts(Fault):
    """Shared by sigterm and rolling-restart: SIGTERM an instance, wait for its exit, start it
    again, wait until it listens, then until nginx sends it requests again; one instance at a
    time.

    The last wait is the rolling restart's rule: nginx marks an instance it could not connect
    to as failed for ``fail_timeout`` (10 s by default) and sends it nothing meanwhile, so the
    next instance may stop only once the restarted one is back in nginx's rotation; stopping it
    earlier leaves nginx no live instance (502 to everyone)."""

    deployment = "nginx"
    pause = 1.0  # seconds between one instance back in rotation and the next SIGTERM

    def __init__(self) -> None:
        super().__init__()
        self.queue: list[Instance] = []  # instances to restart, in order
        self.not_before = 0.0  # wall-clock time of the next SIGTERM at the earliest
        self.current: Instance | None = None
        self.phase = ""
        self.phase_since = 0.0
        self.signalled_at = 0.0
        self.restarts: list[dict[str, Any]] = []
        self.log_offset = 0

    def served_since(self, fleet: NginxFleet, port: int, since: float) -> bool:
        """Whether nginx's access log shows a request it passed to ``port`` after ``since``."""
        found = False
        for line in fleet.access_log_from(self):
            answered = fleet.last_upstream(line)
            with contextlib.suppress(ValueError):
                if float(line.split(" ", 1)[0]) >= since and answered is not None:
                    found = found or (answered[0] == f"127.0.0.1:{port}" and answered[1] < 500)
        return found

    def act(self, t: float) -> None:
        now = time.time()
        instance = self.current
        fleet = self.deployment_ref
        assert isinstance(fleet, NginxFleet)
        if instance is None:
            if self.queue and now >= self.not_before:
                instance = self.current = self.queue.pop(0)
                fleet.access_log_from(self)  # what nginx logged before this restart is read
                instance.signal(signal.SIGTERM)
                self.signalled_at = now
                self.phase = "draining"
                self.mark(t, f"SIGTERM {instance.name}")
        elif self.phase == "draining":
            code = instance.process.poll() if instance.process is not None else None
            if code is not None:
                instance.exit_codes.append(code)
                self.restarts.append(
                    {
                        "instance": instance.name,
                        "exit_code": code,
                        "exit_seconds": round(now - self.signalled_at, 3),
                    }
                )
                instance.start(wait=False)
                self.phase, self.phase_since = "starting", now
            elif now - self.signalled_at > SHUTDOWN_TIMEOUT + 10:
                self.restarts.append({"instance": instance.name, "exit_code": None, "exit_seconds": None})
                instance.signal(signal.SIGKILL)
        elif self.phase == "starting":
            try:
                with socket.create_connection(("127.0.0.1", instance.port), timeout=0.1):
                    pass
            except OSError:
                if instance.process is not None and instance.process.poll() is not None:
                    self.restarts[-1]["start_failed"] = instance.process.returncode
                    self.current = None
                return
            self.restarts[-1]["start_seconds"] = round(now - self.phase_since, 3)
            self.mark(t, f"{instance.name} up", "#2ca02c")
            self.phase, self.phase_since = "rejoining", now
        elif self.phase == "rejoining":
            if self.served_since(fleet, instance.port, self.phase_since):
                self.restarts[-1]["back_in_rotation_seconds"] = round(now - self.phase_since, 3)
                self.current = None
                self.not_before = now + self.pause
            elif now - self.phase_since > 60:
                self.restarts[-1]["back_in_rotation_seconds"] = None
                self.current = None
        if self.current is not None:
            self._next = now + (0.2 if self.phase == "rejoining" else 0.02)
        else:
            self._next = max(now, self.not_before) if self.queue else float("inf")

    def finish(self, deployment: Deployment) -> None:
        deadline = time.time() + SHUTDOWN_TIMEOUT + 15
        while self.current is not None and self.phase != "rejoining" and time.time() < deadline:
            self.act(time.time() - self.start)
            time.sleep(0.02)

    def restart_checks(self, fleet: NginxFleet, expected: int) -> None:
        codes = [r["exit_code"] for r in self.restarts]
        self.checks.append(
            (len(self.restarts) >= expected, f"{len(self.restarts)} restarts (expected {expected} or more)")
        )
        self.checks.append((all(code == 0 for code in codes), f"exit codes after SIGTERM: {codes}"))
        slowest = max((r["exit_seconds"] or 1e9 for r in self.restarts), default=0.0)
        self.checks.append(
            (
                slowest <= SHUTDOWN_TIMEOUT,
                f"slowest exit after SIGTERM {slowest:.2f} s (--shutdown-timeout {SHUTDOWN_TIMEOUT:g} s)",
            )
        )
        nginx = nginx_figures(fleet)
        self.figures.update(nginx)
        self.figures["restarts"] = self.restarts
        self.checks.append(
            (nginx["5xx to clients"] == 0, f"nginx answered {nginx['5xx to clients']} requests with 5xx")
        )
        tracebacks = sum(count_lines(instance.log(), "Traceback") for instance in fleet.instances)
        self.checks.append((tracebacks == 0, f"{tracebacks} tracebacks in the instances' logs"))


class Sigterm(Restarts):
    name = "sigterm"

    def begin(self, start: float, seconds: float, deployment: Deployment) -> None:
        super().begin(start, seconds, deployment)
        self.queue = [deployment.instances[0]]
        self.not_before = self._next

    def report(self, summary: dict[str, Any], clients: Any, deployment: Deployment) -> dict[str, Any]:
        assert isinstance(deployment, NginxFleet)
        stopped = deployment.instances[0]
        port = stopped.port
        drained = 0
        if self.restarts:
            began = self.signalled_at
            ended = began + (self.restarts[0]["exit_seconds"] or 0.0)
            for line in deployment.access_log():
                parts = line.split()
                with contextlib.suppress(ValueError, IndexError):
                    if began <= float(parts[0]) <= ended and f"127.0.0.1:{port}" in parts[4].split(",")[-1]:
                        drained += 1
        self.figures["answered by the instance after its SIGTERM"] = drained
        self.restart_checks(deployment, 1)
        return super().report(summary, clients, deployment)


class RollingRestart(Restarts):
    """Both instances restarted one after the other, again and again, from 10 % of the run
    until 3 s before its end; each waits until the one before is back in nginx's rotation."""

    name = "rolling-restart"

    def begin(self, start: float, seconds: float, deployment: Deployment) -> None:
        super().begin(start, seconds, deployment)
        self.queue = [deployment.instances[index % 2] for index in range(1000)]
        self.not_before = start + 0.1 * seconds
        self.stop_at = start + seconds - 3
        self._next = self.not_before

    def act(self, t: float) -> None:
        if self.current is None and time.time() >= self.stop_at:
            self.queue.clear()
        super().act(t)

    def report(self, summary: dict[str, Any], clients: Any, deployment: Deployment) -> dict[str, Any]:
        assert isinstance(deployment, NginxFleet)
        self.restart_checks(deployment, 2)
        rejoin = [r.get("back_in_rotation_seconds") for r in self.restarts]
        self.figures["back in nginx's rotation after (s)"] = rejoin
        return super().report(summary, clients, deployment)


class KillWorker(Fault):
    name = "kill-worker"
    deployment = "local"
    workers = 2

    def __init__(self) -> None:
        super().__init__()
        self.killed: int | None = None
        self.killed_at = 0.0
        self.killed_ports: set[int] = set()
        self.survivor_ports: set[int] = set()
        self.respawned: int | None = None
        self.respawn_seconds: float | None = None
        self.listen_seconds: float | None = None
        self.before: list[int] = []

    def act(self, t: float) -> None:
        assert self.deployment_ref is not None
        instance = self.deployment_ref.instances[0]
        now = time.time()
        if self.killed is None:
            parent = instance.pid
            assert parent is not None
            self.before = sorted(children_of(parent))
            if len(self.before) < 2:
                self.checks.append((False, f"expected 2 workers, found {self.before}"))
                self._next = float("inf")
                return
            victim, survivor = self.before[0], self.before[1]
            self.survivor_ports = peer_ports(survivor, instance.port)
            self.killed_ports = peer_ports(victim, instance.port)
            os.kill(victim, signal.SIGKILL)
            self.killed, self.killed_at = victim, time.time()
            self.mark(t, f"kill -9 worker {victim}")
            self._next = now + 0.005
            return
        parent = instance.pid
        if self.respawned is None and parent is not None:
            new = [pid for pid in children_of(parent) if pid not in self.before]
            if new:
                self.respawned = new[0]
                self.respawn_seconds = now - self.killed_at
        if (
            self.respawned is not None
            and self.listen_seconds is None
            and listens(self.respawned, instance.port)
        ):
            self.listen_seconds = now - self.killed_at
            self.mark(t, "new worker listens", "#2ca02c")
        if self.listen_seconds is None and now - self.killed_at < 10:
            self._next = now + 0.005
        else:
            self._next = float("inf")

    def excused(self, failure: dict[str, Any]) -> bool:
        if self.killed is None:
            return False
        port = failure.get("local_port", 0)
        if port in self.killed_ports:
            return True
        # Not among either worker's connections when it was killed: in the killed worker's
        # accept queue at that moment (the kernel had handed it over, nobody accepted it).
        return (
            port not in self.survivor_ports
            and abs(failure["time"] - self.killed_at) < 2.0
            and failure["category"] in ("lost", "refused")
        )

    def report(self, summary: dict[str, Any], clients: Any, deployment: Deployment) -> dict[str, Any]:
        failures = clients.collected.failures
        excused = [f for f in failures if self.excused(f)]
        on_killed = sum(1 for f in excused if f.get("local_port") in self.killed_ports)
        self.figures.update(
            {
                "killed worker": self.killed,
                "its connections": len(self.killed_ports),
                "new worker started (s)": _round(self.respawn_seconds),
                "new worker listening (s)": _round(self.listen_seconds),
                "failed operations on the killed worker's connections": on_killed,
                "failed operations in its accept queue": len(excused) - on_killed,
                "requests lost with it": sum(f.get("lost", 0) for f in excused),
            }
        )
        self.checks.append(
            (
                self.listen_seconds is not None and self.listen_seconds <= 1.0,
                f"a new worker listened {self.figures['new worker listening (s)']} s after the kill (limit 1 s)",
            )
        )
        log = deployment.instances[0].log()
        self.checks.append(
            (
                f"worker {self.killed} exited with -9; starting a new one" in log,
                "the supervisor logged the dead worker",
            )
        )
        return super().report(summary, clients, deployment)


# -- a client that stops reading ---------------------------------------------------------------

SLOW_ECHO_BYTES = 256 << 10
SLOW_PIPELINED = 24
SLOW_CONNECTIONS = 4
SLOW_LEGACY = 2
# 6 MiB of answers per old-transport stream: more than a loopback socket's kernel buffers take
# (about 4 MiB), so the server itself has to hold, then drop, what is left.
SLOW_LEGACY_CALLS = 24
TCP_CLOSE_WAIT, TCP_CLOSE = 8, 7


def _tcp_state(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    return int(struct.unpack("B", info[:1])[0])


def _post(port: int, target: bytes, body: bytes, timeout: float) -> None:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(
            b"POST " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        while sock.recv(65536):
            pass


def _send_all(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)


def slow_reader_main(port: int, write_timeout: float, results: Any) -> None:
    """A client that asks for a lot and reads nothing: pipelined 256 KiB echoes on keep-alive
    connections, and old-transport sessions whose answers pile up on their unread /sse stream.
    Reports how long the server took to drop each connection."""

    def session() -> str:
        init = {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "slow", "version": "1"},
        }
        body = orjson.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init})
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Accept: application/json, text/event-stream\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        match = re.search(rb"(?i)mcp-session-id: (\S+)", data)
        assert match is not None, data[:300]
        return match.group(1).decode()

    token = session()
    message = "x" * SLOW_ECHO_BYTES
    sockets: list[tuple[str, socket.socket]] = []
    asked = 0
    for index in range(SLOW_CONNECTIONS):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        requests = b""
        for n in range(SLOW_PIPELINED):
            body = orjson.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": n,
                    "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"message": message}},
                }
            )
            requests += (
                b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
                + f"Mcp-Session-Id: {token}\r\nMCP-Protocol-Version: 2025-11-25\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            asked += SLOW_ECHO_BYTES
        sockets.append((f"pipelined-{index}", sock))
        # All of them, as fast as the server reads (a thread: it stops reading once its answers
        # back up). Sent only in part, the server could answer all it got into the kernel's
        # buffers and then just wait for the rest of a request: nothing to drop it for.
        threading.Thread(target=_send_all, args=(sock, requests), daemon=True).start()
    for index in range(SLOW_LEGACY):
        stream = socket.create_connection(("127.0.0.1", port))
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        stream.sendall(b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        head = b""
        while (found := re.search(rb"session_id=([0-9a-f]+)\n", head)) is None:
            head += stream.recv(4096)
        endpoint = b"/messages?session_id=" + found.group(1)
        sockets.append((f"old-transport-{index}", stream))
        stream.setblocking(False)
        init = {
            "protocolVersion": "2024-11-05",
            "capabilities": {},
            "clientInfo": {"name": "slow", "version": "1"},
        }
        bodies = [orjson.dumps({"jsonrpc": "2.0", "id": "i", "method": "initialize", "params": init})]
        bodies += [
            orjson.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": n,
                    "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"message": message}},
                }
            )
            for n in range(SLOW_LEGACY_CALLS)
        ]
        asked += SLOW_LEGACY_CALLS * SLOW_ECHO_BYTES
        for body in bodies:  # each POST is answered 202 only once the stream took its answer: a thread each
            threading.Thread(
                target=_post, args=(port, endpoint, body, write_timeout * 4), daemon=True
            ).start()
    opened = time.time()
    closed: dict[str, float] = {}
    while len(closed) < len(sockets) and time.time() - opened < write_timeout * 4 + 10:
        for name, sock in sockets:
            if name not in closed and _tcp_state(sock) in (TCP_CLOSE_WAIT, TCP_CLOSE):
                closed[name] = time.time() - opened
        time.sleep(0.05)
    results.put({"connections": len(sockets), "closed": closed, "asked_bytes": asked, "opened": opened})
    for _, sock in sockets:
        sock.close()


class SlowReader(Fault):
    name = "slow-reader"
    deployment = "local"
    write_timeout = 5.0

    def __init__(self) -> None:
        super().__init__()
        self.process: Any = None
        self.results: Any = None
        self.outcome: dict[str, Any] | None = None
        self.began_t = 0.0

    def server_args(self, directory: Path) -> list[str]:
        return ["--write-timeout", f"{self.write_timeout:g}"]

    def first_action(self, seconds: float) -> float:
        return 0.25 * seconds

    def act(self, t: float) -> None:
        assert self.deployment_ref is not None
        if self.process is None:
            context = multiprocessing.get_context("fork")
            self.results = context.Queue()
            port = self.deployment_ref.instances[0].port
            self.process = context.Process(
                target=slow_reader_main, args=(port, self.write_timeout, self.results), daemon=True
            )
            self.process.start()
            self.began_t = t
            self.mark(t, "slow reader starts")
        self._next = float("inf")

    def finish(self, deployment: Deployment) -> None:
        if self.process is None:
            return
        with contextlib.suppress(Exception):
            self.outcome = self.results.get(timeout=self.write_timeout * 4 + 20)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()

    def report(self, summary: dict[str, Any], clients: Any, deployment: Deployment) -> dict[str, Any]:
        samples = summary["samples"]
        before = [s["rss_mib"] for s in samples if s["t"] <= self.began_t] or [0.0]
        during = [s["rss_mib"] for s in samples if s["t"] >= self.began_t] or [0.0]
        growth = max(during) - before[-1]
        outcome = self.outcome or {}
        closed = outcome.get("closed", {})
        connections = outcome.get("connections", 0)
        slowest = max(closed.values(), default=None)
        asked = outcome.get("asked_bytes", 0) / (1 << 20)
        # Other clients meanwhile: the per-second p99 of short operations while the slow
        # connections were held, next to the median second before.
        series = summary["series"]
        held = self.began_t + (slowest if slowest is not None else self.write_timeout)
        p99_before = [p["p99"] for p in series if p["p99"] is not None and 1 <= p["t"] < self.began_t]
        p99_during = [p["p99"] for p in series if p["p99"] is not None and self.began_t <= p["t"] <= held + 1]
        self.figures.update(
            {
                "slow connections": connections,
                "answers asked for (MiB)": round(asked),
                "dropped by the server": len(closed),
                "slowest drop (s)": _round(slowest),
                "RSS before (MiB)": before[-1],
                "RSS peak after (MiB)": max(during),
                "others' p99 before (ms)": round(statistics.median(p99_before) * 1000, 1)
                if p99_before
                else None,
                "others' worst p99 while held (ms)": round(max(p99_during) * 1000, 1) if p99_during else None,
            }
        )
        self.checks.append(
            (
                connections > 0 and len(closed) == connections,
                f"the server dropped {len(closed)} of {connections} slow connections",
            )
        )
        limit = self.write_timeout * 3 + 5
        self.checks.append(
            (
                slowest is not None and slowest <= limit,
                f"the slowest was dropped after {self.figures['slowest drop (s)']} s (--write-timeout {self.write_timeout:g} s; limit {limit:g} s)",
            )
        )
        self.checks.append(
            (
                growth <= 32.0,
                f"RSS grew {growth:.1f} MiB with {asked:.0f} MiB of answers unread (limit 32 MiB)",
            )
        )
        return super().report(summary, clients, deployment)


class AuditDiskFull(Fault):
    """``--audit-log`` names a symlink to /dev/full (every write: ENOSPC); halfway the link is
    replaced by a regular file, as when space is freed."""

    name = "audit-disk-full"
    deployment = "local"
    judge_rss = True

    def __init__(self) -> None:
        super().__init__()
        self.path: Path | None = None
        self.freed_t: float | None = None

    def server_args(self, directory: Path) -> list[str]:
        self.path = directory / "audit.jsonl"
        self.path.symlink_to("/dev/full")
        return ["--audit-log", str(self.path)]

    def first_action(self, seconds: float) -> float:
        return 0.5 * seconds

    def act(self, t: float) -> None:
        assert self.path is not None
        if self.freed_t is None:
            self.path.unlink()
            self.path.touch()
            self.freed_t = t
            self.mark(t, "disk has room again", "#2ca02c")
        self._next = float("inf")

    def report(self, summary: dict[str, Any], clients: Any, deployment: Deployment) -> dict[str, Any]:
        assert self.path is not None
        log = deployment.instances[0].log()
        failed = count_lines(log, r"--audit-log \S+: cannot write")
        recovered = count_lines(log, r"--audit-log \S+: writing works again")
        lines = self.path.read_text(errors="replace").splitlines() if self.path.is_file() else []
        parsed = 0
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = sum(1 for line in lines if orjson.loads(line).get("tool"))
        dropped = max((s["log_lines_dropped"] for s in summary["samples"]), default=0.0)
        calls = sum(
            summary["operations"].get(kind, {}).get("done", 0)
            for kind in ("call", "v2026", "h2", "sse", "save", "legacy")
        )
        self.figures.update(
            {
                "lines dropped while full": int(dropped),
                "lines written after": len(lines),
                "'cannot write' reports": failed,
                "'works again' reports": recovered,
                "tool calls done": calls,
            }
        )
        self.checks.append((failed == 1, f"the full disk was reported {failed} times (expected once)"))
        self.checks.append(
            (recovered == 1, f"'writing works again' logged {recovered} times (expected once)")
        )
        self.checks.append((dropped > 0, f"{int(dropped)} audit lines counted as dropped in /metrics"))
        self.checks.append(
            (
                len(lines) > 0 and parsed == len(lines),
                f"{len(lines)} audit lines written after the disk had room, {parsed} of them valid",
            )
        )
        return super().report(summary, clients, deployment)


class RedisRestart(Fault):
    """A fleet on ``--redis``: Redis stopped (SIGKILL) for a few seconds, then started again on
    the same port, empty (as after a crash without persistence)."""

    name = "redis-restart"
    deployment = "redis"
    outage = 5.0
    recovery = 10.0  # reconnects back off up to 2 s; a resumption of a stream written before the crash may be refused until its operation ends

    def __init__(self) -> None:
        super().__init__()
        self.redis: Redis | None = None
        self.stopped_at: float | None = None
        self.started_at: float | None = None

    def unavailable(self) -> str | None:
        if "--redis" not in mcp_fast_flags():
            return (
                "this checkout's server has no --redis flag (the fleet on Redis is not merged yet); "
                "nothing to restart under it. Every other fault runs."
            )
        return None

    def build(self, directory: Path, extra: list[str]) -> Deployment:
        self.redis = Redis(directory)
        self.redis.start()
        return NginxFleet(directory, extra, redis_url=self.redis.url, redis=self.redis)

    def prepare(self, deployment: Deployment, weights: dict[str, float]) -> None:
        super().prepare(deployment, weights)
        deployment.expect_503 = frozenset({"delete", "cancel", "resume"})

    def act(self, t: float) -> None:
        assert self.redis is not None
        now = time.time()
        if self.stopped_at is None:
            self.redis.stop(kill=True)
            self.stopped_at = now
            self.mark(t, "Redis killed")
            self._next = now + self.outage
        elif self.started_at is None:
            self.redis.start()
            self.started_at = time.time()
            self.mark(self.started_at - self.start, "Redis back", "#2ca02c")
            self._next = float("inf")

    def excused(self, failure: dict[str, Any]) -> bool:
        if self.stopped_at is None or failure["category"] not in ("503", "wrong"):
            return False
        end = (self.started_at or time.time()) + self.recovery
        in_window = self.stopped_at - 1 <= failure["time"] <= end
        # A resumption of a stream written before the crash is refused (400): Redis lost it.
        refused_resume = failure["kind"] == "resume" and "HTTP 400" in failure["detail"]
        return in_window and (failure["category"] == "503" or refused_resume)

    def report(self, summary: dict[str, Any], clients: Any, deployment: Deployment) -> dict[str, Any]:
        failures = clients.collected.failures
        refused = Counter(f["kind"] for f in failures if f["category"] == "503")
        outside = [f for f in failures if f["category"] == "503" and not self.excused(f)]
        ready_after = None
        if self.started_at is not None:
            deadline = time.time() + 15
            while time.time() < deadline:
                if all(scrape(instance.port, "/ready") is not None for instance in deployment.instances):
                    ready_after = True
                    break
                time.sleep(0.2)
        self.figures.update({"503 while Redis was away": dict(refused), "outage": f"{self.outage:g} s"})
        self.checks.append(
            (not outside, f"{len(outside)} answers 503 outside the outage (or for what needs no Redis)")
        )
        self.checks.append((ready_after is True, "every instance ready again after Redis came back"))
        assert isinstance(deployment, NginxFleet)
        window_end = (self.started_at or time.time()) + self.recovery
        other_5xx = 0
        answered_503 = 0
        last_503 = None
        for line in deployment.access_log():
            parts = line.split()
            with contextlib.suppress(ValueError, IndexError):
                status, when = int(parts[3]), float(parts[0])
                if (
                    status == 503
                    and self.stopped_at is not None
                    and self.stopped_at - 1 <= when <= window_end
                ):
                    answered_503 += 1
                    last_503 = when if last_503 is None else max(last_503, when)
                elif status >= 500:
                    other_5xx += 1
        self.figures["503 answers in nginx's log"] = answered_503
        if last_503 is not None and self.started_at is not None:
            # How long after Redis was back the last request was refused for its absence.
            self.figures["last 503 after Redis was back (s)"] = round(last_503 - self.started_at, 2)
        self.checks.append(
            (
                other_5xx == 0,
                f"{other_5xx} answers 5xx in nginx's log besides the 503s while Redis was away",
            )
        )
        return super().report(summary, clients, deployment)

    def cleanup(self) -> None:
        if self.redis is not None:
            self.redis.stop()


FAULTS: dict[str, type[Fault]] = {
    fault.name: fault
    for fault in (Sigterm, KillWorker, RollingRestart, SlowReader, AuditDiskFull, RedisRestart)
}

__all__ = ["FAULTS", "Fault", "Local", "SetupError", "wait_for_port"]
