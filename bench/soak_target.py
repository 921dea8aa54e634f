"""What the soak runs against (bench/soak.py): the demo server it starts itself (one process or
``--workers``), two instances behind a real nginx (``deploy/nginx/mcp_fast.conf`` included as
shipped), optionally sharing a real Redis, or a target started by someone else. And what it
reads from them: RSS, open descriptors and CPU time from ``/proc``, the event loop's lag from
``/metrics``."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from soak_mix import Target

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "nginx"
SECRET = "soak-fleet-secret-0123456789abcdef0123456789abcdef"
PUBLIC_HOST = "mcp.example.com"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class SetupError(Exception):
    """The target could not be started (exit status 2)."""


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> float:
    """Seconds until something accepts on 127.0.0.1:port."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if process is not None and process.poll() is not None:
            raise SetupError(f"the process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return time.monotonic() - began
        except OSError:
            time.sleep(0.02)
    raise SetupError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


# -- /proc ---------------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid``: /proc/PID/task/*/children (one small read a
    thread; a supervisor has one or two), else a scan of /proc."""
    with contextlib.suppress(OSError, ValueError):
        found = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
        return found
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (not of its children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> tuple[float, int]:
    """All cores' busy time (everything but idle and iowait) since boot, and the core count."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(value) for value in first]
    busy = sum(values) - values[3] - values[4]
    return busy / CLK_TCK, os.cpu_count() or 1


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
    except OSError:
        pass
    return inodes


def tcp_table() -> list[tuple[int, int, int, int]]:
    """(local port, remote port, state, inode) of every IPv4/IPv6 TCP socket."""
    rows = []
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
                parts = line.split()
                local, remote, state, inode = parts[1], parts[2], parts[3], parts[9]
                rows.append(
                    (
                        int(local.rsplit(":", 1)[1], 16),
                        int(remote.rsplit(":", 1)[1], 16),
                        int(state, 16),
                        int(inode),
                    )
                )
    return rows


def peer_ports(pid: int, server_port: int) -> set[int]:
    """The client ports of the connections process ``pid`` holds on ``server_port``."""
    inodes = socket_inodes(pid)
    return {
        remote
        for local, remote, state, inode in tcp_table()
        if inode in inodes and local == server_port and remote
    }


def listens(pid: int, port: int) -> bool:
    inodes = socket_inodes(pid)
    return any(inode in inodes and local == port and state == 0x0A for local, _, state, inode in tcp_table())


# -- /metrics ----------------------------------------------------------------------------------

LAG_GAUGE = "mcp_server_event_loop_lag_seconds"
DELAY = "mcp_server_event_loop_delay_seconds"


def scrape(port: int, path: str = "/metrics", timeout: float = 2.0) -> str | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
        return body if response.status == 200 else None
    except OSError:
        return None
    finally:
        connection.close()


@dataclass
class LoopReading:
    lag: float | None  # the gauge: the largest delay of the last 5-10 s
    buckets: list[tuple[float, float]]  # the histogram's (le, cumulative count)
    values: dict[str, float] = field(default_factory=dict)  # other unlabelled samples


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def read_metrics(text: str) -> LoopReading:
    reading = LoopReading(None, [])
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.group(1), match.group(2) or "", float(match.group(3))
        if name == LAG_GAUGE:
            reading.lag = value
        elif name == f"{DELAY}_bucket":
            bound = labels.split('le="', 1)[1].split('"', 1)[0]
            reading.buckets.append((float("inf") if bound == "+Inf" else float(bound), value))
        elif not labels:
            reading.values[name] = value
        elif name == "mcp_server_log_lines_dropped_total":
            reading.values[f"{name}{labels}"] = value
    return reading


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` (cumulative buckets)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    for bound, cumulative in buckets:
        if cumulative >= rank:
            return bound
    return buckets[-1][0]


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Instance:
    """One ``python -m mcp_fast`` (one process, or a supervisor and its --workers)."""

    name: str
    port: int
    args: list[str]
    directory: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    incarnation: int = 0
    exit_codes: list[int] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.directory / f"server-{self.name}.log"

    def start(self, wait: bool = True) -> float:
        """Start it; seconds until it listens."""
        self.incarnation += 1
        command = [
            sys.executable,
            "-m",
            "mcp_fast",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with open(self.log_path, "ab") as log:
            log.write(f"--- soak: start #{self.incarnation}: {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command, cwd=self.directory, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        return wait_for_port(self.port, self.process) if wait else 0.0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def pids(self) -> list[int]:
        pid = self.pid
        return [] if pid is None else [pid, *children_of(pid)]

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        if self.process is None:
            return None
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.exit_codes.append(code)
        return code

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process is not None else None
        self.signal(signal.SIGTERM)
        code = self.wait(timeout)
        if code is None:
            self.process.kill()
            self.process.wait()
            return None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Deployment:
    """A target with the processes the soak watches (and, when it started them, stops)."""

    kind = "external"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.instances: list[Instance] = []
        self.helper_pids: list[int] = []  # watched for CPU only (nginx)
        self.expect_503: frozenset[str] = frozenset()  # operations a fault lets meet 503

    @property
    def target(self) -> Target:
        raise NotImplementedError

    @property
    def extra_pids(self) -> list[int]:
        """Processes of the target that are not servers (nginx, Redis): their CPU is not noise."""
        return self.helper_pids

    def server_pids(self) -> list[int]:
        return [pid for instance in self.instances for pid in instance.pids()]

    def metrics_ports(self) -> list[int]:
        return [instance.port for instance in self.instances if instance.pid is not None]

    def start(self) -> None:
        for instance in self.instances:
            instance.start()

    def stop(self) -> None:
        for instance in self.instances:
            instance.stop()

    def describe(self) -> str:
        raise NotImplementedError


class Local(Deployment):
    """The demo app in one process (or ``--workers N``) started by the soak."""

    kind = "local"

    def __init__(self, directory: Path, extra_args: list[str], workers: int = 1) -> None:
        super().__init__(directory)
        self.workers = workers
        [port] = free_ports(1)
        args = [*(["--workers", str(workers), "--no-legacy-sse"] if workers > 1 else []), *extra_args]
        self.instances = [Instance("demo", port, args, directory)]

    @property
    def target(self) -> Target:
        port = self.instances[0].port
        one = self.workers == 1
        return Target(
            "127.0.0.1",
            port,
            port,
            f"127.0.0.1:{port}",
            legacy=one,
            resume=one,
            notify=one,
            delete_settle=0.0 if one else 0.3,
        )

    def describe(self) -> str:
        instance = self.instances[0]
        workers = f" --workers {self.workers}" if self.workers > 1 else ""
        return f"python -m mcp_fast{workers} {' '.join(instance.args)} on 127.0.0.1:{instance.port} (the demo app)"


class External(Deployment):
    """A server someone else started: ``--url``, and ``--pid``/``--metrics-port`` to watch it."""

    def __init__(
        self, directory: Path, url: str, pids: list[int], metrics: list[int], h2: bool, one_process: bool
    ) -> None:
        super().__init__(directory)
        match = re.match(r"^http://([^/:]+)(?::(\d+))?(/mcp)?/?$", url)
        if match is None:
            raise SetupError(f"--url {url}: expected http://HOST:PORT/mcp")
        self.host = match.group(1)
        self.port = int(match.group(2) or 80)
        self.pids = pids
        self.metrics = metrics or [self.port]
        self.h2 = h2
        self.one_process = one_process

    @property
    def target(self) -> Target:
        authority = self.host if self.port == 80 else f"{self.host}:{self.port}"
        one = self.one_process
        return Target(
            socket.gethostbyname(self.host),
            self.port,
            self.port if self.h2 else None,
            authority,
            legacy=one,
            resume=one,
            notify=one,
            delete_settle=0.0 if one else 0.3,
        )

    def server_pids(self) -> list[int]:
        found: list[int] = []
        for pid in self.pids:
            found += [pid, *children_of(pid)]
        return [pid for pid in found if Path(f"/proc/{pid}").exists()]

    def metrics_ports(self) -> list[int]:
        return self.metrics

    def start(self) -> None:
        if scrape(self.metrics[0]) is None:
            raise SetupError(
                f"no /metrics on 127.0.0.1:{self.metrics[0]} (give --metrics-port, or --no-metrics is set)"
            )

    def stop(self) -> None:
        return None

    def describe(self) -> str:
        return f"an external target at {self.host}:{self.port} (pids {self.pids or 'not given'})"


def ensure_binary(binary: str, package: str) -> str:
    """The binary's path; installs the Debian package when it is missing (as the tests do)."""
    candidates = [shutil.which(binary), f"/usr/sbin/{binary}", f"/usr/bin/{binary}"]
    found = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise SetupError(f"{binary} is missing and apt-get is not available: install Debian's {package!r}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in range(2):
        if attempt:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        subprocess.run(["apt-get", "install", "-y", "-q", package], env=env, capture_output=True, check=False)
        found = next(
            (c for c in [shutil.which(binary), *candidates[1:]] if c and os.access(c, os.X_OK)), None
        )
        if found:
            return found
    raise SetupError(f"could not install {binary} (apt-get install -y {package})")


class NginxFleet(Deployment):
    """Two instances (a, b) behind a real nginx: ``deploy/nginx/mcp_fast.conf`` as shipped, in an
    nginx.conf with the shipped upstreams (round-robin, keepalive 64, keepalive_timeout 60s), a
    cleartext HTTP/1.1 server and an h2c one (prior knowledge) for the HTTP/2 part of the mix.
    The instances share the session secret and a fleet directory, or a Redis (``redis_url``)."""

    kind = "nginx"

    def __init__(
        self, directory: Path, extra_args: list[str], redis_url: str | None = None, redis: Redis | None = None
    ) -> None:
        super().__init__(directory)
        self.redis_url = redis_url
        self.redis = redis
        ports = free_ports(4)
        self.http_port, self.h2_port = ports[2], ports[3]
        shared = ["--redis", redis_url] if redis_url else ["--fleet-dir", str(directory / "fleet")]
        for name, port in zip(("a", "b"), ports[:2], strict=True):
            args = [
                "--session-secret",
                SECRET,
                "--allowed-hosts",
                f"127.0.0.1,localhost,{PUBLIC_HOST}",
                "--legacy-messages-path",
                f"/messages/{name}",
                *shared,
                *extra_args,
            ]
            self.instances.append(Instance(name, port, args, directory))
        self.nginx: subprocess.Popen[bytes] | None = None
        self.prefix = directory / "nginx"
        self._offsets: dict[int, int] = {}  # access_log_from: how far each reader has read

    @property
    def target(self) -> Target:
        shared_store = self.redis_url is not None
        return Target(
            "127.0.0.1",
            self.http_port,
            self.h2_port,
            PUBLIC_HOST,
            legacy=True,
            resume=shared_store,
            notify=False,
            delete_settle=0.3,
            expect_503=self.expect_503,
            proxied=True,
        )

    @property
    def extra_pids(self) -> list[int]:
        redis = self.redis.process if self.redis is not None else None
        alive = redis is not None and redis.poll() is None
        return [*self.helper_pids, *([redis.pid] if alive and redis is not None else [])]

    def conf(self) -> str:
        upstream_all = "\n".join(f"        server 127.0.0.1:{instance.port};" for instance in self.instances)
        upstream_each = "".join(
            f"""
    upstream mcp_fast_{instance.name} {{
        server 127.0.0.1:{instance.port};
        keepalive 16;
        keepalive_timeout 60s;
    }}
"""
            for instance in self.instances
        )
        temp_paths = "".join(
            f"    {kind}_temp_path {self.prefix}/{kind}_temp;\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        servers = "".join(
            f"""
    server {{
        listen 127.0.0.1:{port}{options};
        server_name {PUBLIC_HOST};
        include {DEPLOY}/mcp_fast.conf;
        location / {{
            return 404;
        }}
    }}
"""
            for port, options in ((self.http_port, ""), (self.h2_port, " http2"))
        )
        user = "user root;\n" if os.geteuid() == 0 else ""
        return f"""# bench/soak.py: deploy/nginx/mcp_fast.conf as shipped, the shipped upstreams, two servers.
{user}worker_processes 1;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/error.log warn;
events {{
    worker_connections 8192;
}}
http {{
{temp_paths}    log_format soak '$msec $request_method $uri $status up=$upstream_addr upstatus=$upstream_status rt=$request_time';
    access_log {self.prefix}/access.log soak;
    upstream mcp_fast {{
{upstream_all}
        keepalive 64;
        keepalive_timeout 60s;
    }}
{upstream_each}{servers}}}
"""

    def start(self) -> None:
        binary = ensure_binary("nginx", "nginx")
        super().start()
        self.prefix.mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.conf())
        command = [binary, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "error.log")]
        check = subprocess.run([*command, "-t", "-q"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise SetupError(f"nginx -t: {check.stderr.strip()}")
        with open(self.prefix / "nginx.out", "wb") as out:
            self.nginx = subprocess.Popen(
                [*command, "-g", "daemon off;"], stdout=out, stderr=subprocess.STDOUT
            )
        for port in (self.http_port, self.h2_port):
            wait_for_port(port, self.nginx)
        deadline = time.monotonic() + 5
        while not children_of(self.nginx.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.helper_pids = [self.nginx.pid, *children_of(self.nginx.pid)]

    def stop(self) -> None:
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGQUIT)
            try:
                self.nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.nginx.kill()
                self.nginx.wait()
        super().stop()

    @staticmethod
    def last_upstream(line: str) -> tuple[str, int] | None:
        """The instance (address) that gave nginx its answer to the request of an access log
        line, and that answer's status; None when no instance did."""
        if " up=" not in line or " upstatus=" not in line:
            return None
        addresses = line.split(" up=", 1)[1].split(" upstatus=", 1)[0].split(", ")
        statuses = line.split(" upstatus=", 1)[1].split(" rt=", 1)[0].split(", ")
        try:
            return addresses[-1].strip(), int(statuses[-1])
        except ValueError:
            return None

    def access_log(self) -> list[str]:
        path = self.prefix / "access.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def access_log_from(self, reader: object) -> list[str]:
        """The access log's lines ``reader`` has not read yet (an offset kept per reader)."""
        path = self.prefix / "access.log"
        offset = self._offsets.get(id(reader), 0)
        try:
            with open(path, "rb") as log:
                log.seek(offset)
                data = log.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self._offsets[id(reader)] = offset + end
        return data[:end].decode(errors="replace").splitlines()

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def describe(self) -> str:
        store = f"Redis {self.redis_url}" if self.redis_url else "a shared --fleet-dir"
        ports = ", ".join(f"{i.name} :{i.port}" for i in self.instances)
        return f"nginx (HTTP/1.1 :{self.http_port}, h2c :{self.h2_port}) in front of two instances ({ports}; {store})"


class Redis:
    """A redis-server of our own on a free port (no persistence), stopped and started at will."""

    def __init__(self, directory: Path) -> None:
        self.binary = ensure_binary("redis-server", "redis-server")
        [self.port] = free_ports(1)
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> float:
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(command, cwd=self.directory, stdout=log, stderr=subprocess.STDOUT)
        return wait_for_port(self.port, self.process)

    def stop(self, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.process.wait(timeout=10)


def mcp_fast_flags() -> str:
    """`python -m mcp_fast --help` of this checkout."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-m", "mcp_fast", "--help"], capture_output=True, text=True, env=env, check=False
    )
    return result.stdout


def work_directory() -> Path:
    return Path(tempfile.mkdtemp(prefix="mcp_fast-soak-"))
