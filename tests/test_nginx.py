"""mcp_fast behind nginx: the shipped deploy/nginx/ configuration, with real processes.

A real nginx (Debian's `nginx` package, installed with apt-get when missing; never skipped) runs
`deploy/nginx/nginx.conf` as shipped, with only what a machine needs changed (ports, file paths, a
throw-away certificate: see `render_nginx_conf`), in front of two `python -m mcp_fast` processes
that share one `--session-secret`. Its servers include `deploy/nginx/mcp_fast.conf` verbatim. Next to
the shipped TLS server the test adds a cleartext one that includes the same file and adds one
header, `X-Upstream-Addr: $upstream_addr`, so a test sees which instance answered each request.

nginx behaviour relied on (nginx 1.22, src/http/ngx_http_upstream.c, `ngx_http_upstream_next`):
a request that fails on an upstream connection is retried on the next instance per
`proxy_next_upstream`, except a POST once any of it was sent (NGX_HTTP_UPSTREAM_FT_NON_IDEMPOTENT);
a connection that fails before the request is sent (refused) is retried for every method.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx2
import orjson
import pytest
from conftest import ROOT, RunningServer, free_ports, start_server, stop_server, wait_for_port
from httpclient import MCP_HEADERS, RawClient, Response, client_request_bytes, rpc_bytes
from mcp import Client, types
from mcp.client.context import ClientRequestContext
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from mcp_fast.config import OPTIONS

DEPLOY = ROOT / "deploy" / "nginx"
SECRET = "nginx-fleet-secret-0123456789abcdef0123456789abcdef"
PUBLIC_HOST = "mcp.example.com"  # the example's server_name
LATEST = "2025-11-25"
SESSIONLESS = "2026-07-28"
TIMEOUT_S = 30.0
T = TypeVar("T")

pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


# -- installing and running nginx ---------------------------------------------------------------


def ensure_tool(binary: str, package: str) -> str:
    """The binary's path; installs the Debian package when it is missing (as bench/run.py does).

    Fails the test (never skips) when it cannot be had."""
    candidates = [shutil.which(binary), f"/usr/sbin/{binary}", f"/usr/bin/{binary}"]
    found = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.fail(f"{binary} is missing and apt-get is not available: install Debian's {package!r} package")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", package]
    output = ""
    for attempt in range(2):
        if attempt:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        output = result.stdout[-2000:] + result.stderr[-2000:]
        found = next(
            (c for c in [*candidates[1:], shutil.which(binary)] if c and os.access(c, os.X_OK)), None
        )
        if found:
            return found
    pytest.fail(f"could not install {binary} with `apt-get install -y {package}`:\n{output}")


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    prefix: Path
    http_port: int  # the test's cleartext server (mcp_fast.conf + X-Upstream-Addr)
    tls_port: int  # the shipped example's TLS server
    redirect_port: int  # the shipped example's port-80 server
    ca_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/mcp"

    @property
    def worker_pid(self) -> int:
        [worker] = children_of(self.process.pid)
        return worker

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> str:
        path = self.prefix / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for PUBLIC_HOST and 127.0.0.1 (it is its own CA)."""
    openssl = ensure_tool("openssl", "openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", f"/CN={PUBLIC_HOST}",
            "-addext", f"subjectAltName=DNS:{PUBLIC_HOST},IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _swap(text: str, old: str, new: str, count: int = 1) -> str:
    """Replace ``old``, which must occur exactly ``count`` times in the shipped file: an edit
    there that this rendering does not know about fails loudly instead of testing something else."""
    found = text.count(old)
    assert found == count, f"deploy/nginx/nginx.conf: expected {old!r} {count}x, found {found}x"
    return text.replace(old, new)


def render_nginx_conf(
    prefix: Path,
    backends: Sequence[int],
    *,
    http_port: int,
    tls_port: int,
    redirect_port: int,
    cert: tuple[Path, Path],
    upstream_keepalive_timeout: str | None = None,
    test_listen_options: str = "",
) -> str:
    """deploy/nginx/nginx.conf with this machine's ports, paths and certificate, plus the test's
    cleartext server. ``backends``: the ports of instances a and b (one port: both are it)."""
    port_a, port_b = (backends[0], backends[-1])
    text = (DEPLOY / "nginx.conf").read_text()
    # As root, workers would run as www-data, which cannot enter pytest's private tmp dirs.
    text = _swap(text, "user www-data;", "user root;" if os.geteuid() == 0 else "")
    text = _swap(text, "pid /run/nginx.pid;", f"pid {prefix}/nginx.pid;")
    text = _swap(text, "error_log /var/log/nginx/error.log;", f"error_log {prefix}/error.log info;")
    # One worker: one round-robin (each worker has its own), one pool of upstream connections.
    text = _swap(text, "worker_processes auto;", "worker_processes 1;")
    log_format = (
        "log_format upstreams '$request_method $request_uri $status up=$upstream_addr "
        "upstatus=$upstream_status session=$http_mcp_session_id';"
    )
    text = _swap(
        text,
        "access_log /var/log/nginx/access.log;",
        f"{log_format}\n    access_log {prefix}/access.log upstreams;",
    )
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    test_server = f"""
    server {{
        listen 127.0.0.1:{http_port}{test_listen_options};
        add_header X-Upstream-Addr $upstream_addr always;
        include {DEPLOY}/mcp_fast.conf;
        location / {{
            return 404;
        }}
    }}
"""
    text = _swap(text, "http {\n", "http {\n" + temp_paths + test_server)
    text = _swap(text, "server 127.0.0.1:8001;", f"server 127.0.0.1:{port_a};", 2)
    text = _swap(text, "server 127.0.0.1:8002;", f"server 127.0.0.1:{port_b};", 2)
    if upstream_keepalive_timeout is not None:
        text = _swap(text, "keepalive_timeout 60s;", f"keepalive_timeout {upstream_keepalive_timeout};", 3)
    text = _swap(text, "listen 80;", f"listen 127.0.0.1:{redirect_port};")
    text = _swap(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{tls_port} ssl http2;")
    text = _swap(text, "/etc/ssl/certs/mcp.example.com.pem", str(cert[0]))
    text = _swap(text, "/etc/ssl/private/mcp.example.com.key", str(cert[1]))
    text = _swap(text, "include /etc/nginx/snippets/mcp_fast.conf;", f"include {DEPLOY}/mcp_fast.conf;")
    return text


def start_nginx(
    prefix: Path,
    backends: Sequence[int],
    *,
    upstream_keepalive_timeout: str | None = None,
    test_listen_options: str = "",
) -> Nginx:
    binary = ensure_tool("nginx", "nginx")
    prefix.mkdir(parents=True, exist_ok=True)
    cert = make_certificate(prefix)
    http_port, tls_port, redirect_port = free_ports(3)
    conf = prefix / "nginx.conf"
    conf.write_text(
        render_nginx_conf(
            prefix,
            backends,
            http_port=http_port,
            tls_port=tls_port,
            redirect_port=redirect_port,
            cert=cert,
            upstream_keepalive_timeout=upstream_keepalive_timeout,
            test_listen_options=test_listen_options,
        )
    )
    command = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    check = subprocess.run([*command, "-t", "-q"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, f"nginx -t failed:\n{check.stderr}\n{conf.read_text()}"
    log = open(prefix / "nginx.out", "wb")  # noqa: SIM115 - the process keeps it
    process = subprocess.Popen([*command, "-g", "daemon off;"], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    nginx = Nginx(process, prefix, http_port, tls_port, redirect_port, cert[0])
    try:
        for port in (http_port, tls_port, redirect_port):
            wait_for_port("127.0.0.1", port, process)
        deadline = time.monotonic() + 10
        while not children_of(process.pid) and time.monotonic() < deadline:
            time.sleep(0.02)  # the worker is forked after the ports are bound
    except BaseException:
        stop_nginx(nginx)
        raise
    return nginx


def stop_nginx(nginx: Nginx) -> None:
    if nginx.process.poll() is None:
        nginx.process.send_signal(signal.SIGQUIT)  # graceful: finish requests, then exit
        try:
            nginx.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            nginx.process.kill()
            nginx.process.wait()


def start_backend(tmp: Path, name: str, *extra: str) -> RunningServer:
    """An instance of the fleet; ``extra`` may start with the app to serve (default: the conformance app)."""
    app = [extra[0]] if extra and ":" in extra[0] else []
    extra = extra[len(app) :]
    return start_server(
        tmp,
        *app,
        "--session-secret", SECRET,
        "--allowed-hosts", f"127.0.0.1,localhost,{PUBLIC_HOST}",
        "--legacy-messages-path", f"/messages/{name}",
        "--fleet-dir", str(tmp / "fleet"),  # shared by the fleet's instances
        "--sse-keepalive", "0.5",
        *extra,
    )  # fmt: skip


@dataclass
class Fleet:
    nginx: Nginx
    backends: dict[str, RunningServer]  # by instance name ("a", "b")
    by_port: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_port = {server.port: name for name, server in self.backends.items()}

    def instance_of(self, upstream_addr: str | None) -> str:
        """The instance ("a"/"b") named by an X-Upstream-Addr value (the last address nginx tried)."""
        assert upstream_addr, "no X-Upstream-Addr: the answer did not come from an instance"
        port = int(upstream_addr.split(",")[-1].strip().rsplit(":", 1)[1])
        return self.by_port[port]


@contextlib.contextmanager
def running_fleet(
    tmp: Path,
    *backend_args: str,
    backend: Callable[..., RunningServer] = start_backend,
    **nginx_options: str,
) -> Iterator[Fleet]:
    """nginx in front of instances a and b, each started by ``backend(tmp, name, *backend_args)``."""
    backends: dict[str, RunningServer] = {}
    nginx: Nginx | None = None
    try:
        for name in ("a", "b"):
            backends[name] = backend(tmp, name, *backend_args)
        nginx = start_nginx(tmp / "nginx", [backends["a"].port, backends["b"].port], **nginx_options)
        yield Fleet(nginx, backends)
    finally:
        if nginx is not None:
            stop_nginx(nginx)
        for server in backends.values():
            stop_server(server)
    for server in backends.values():
        assert "Traceback" not in server.log(), server.log()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("fleet")) as running:
        yield running


# -- TCP connections as the kernel sees them -------------------------------------------------------

TCP_STATES = {
    "01": "ESTABLISHED",
    "06": "TIME_WAIT",
    "08": "CLOSE_WAIT",
    "05": "FIN_WAIT2",
    "04": "FIN_WAIT1",
    "09": "LAST_ACK",
}


@dataclass(frozen=True)
class TcpSocket:
    local_port: int
    remote_port: int
    state: str


def tcp_sockets() -> list[TcpSocket]:
    """IPv4 TCP sockets on 127.0.0.1 from /proc/net/tcp (no `ss` needed)."""
    sockets = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        sockets.append(
            TcpSocket(
                int(local.split(":")[1], 16), int(remote.split(":")[1], 16), TCP_STATES.get(state, state)
            )
        )
    return sockets


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll ``condition`` (a state change we cannot be told about) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# -- clients -------------------------------------------------------------------------------------------


@dataclass
class Exchange:
    method: str
    rpc_method: str | None  # the JSON-RPC method of a POSTed request or notification
    status: int
    session: str | None  # the Mcp-Session-Id the request carried
    upstream: str | None  # X-Upstream-Addr: which instance answered
    http_version: str


class Recorder:
    """httpx2 event hooks that note every exchange the SDK makes through nginx (the hook runs
    when the head arrives, before a streamed body is read)."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        rpc_method = None
        if request.method == "POST":
            with contextlib.suppress(orjson.JSONDecodeError):
                body = orjson.loads(request.content)
                rpc_method = body.get("method") if isinstance(body, dict) else None
        self.exchanges.append(
            Exchange(
                request.method,
                rpc_method,
                response.status_code,
                request.headers.get("mcp-session-id"),
                response.headers.get("x-upstream-addr"),
                response.http_version,
            )
        )

    def http_client(self, **options: Any) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            timeout=httpx2.Timeout(TIMEOUT_S, read=300.0),
            event_hooks={"response": [self.on_response]},
            **options,
        )

    def calls(self, rpc_method: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.rpc_method == rpc_method]


def run_client(
    url: str,
    body: Callable[[Client], Awaitable[T]],
    recorder: Recorder | None = None,
    *,
    http_options: dict[str, Any] | None = None,
    **client_kwargs: Any,
) -> T:
    """The official client (streamable HTTP, the initialize handshake) on ``url``: run ``body``."""
    recorder = recorder or Recorder()

    async def main() -> T:
        with anyio.fail_after(TIMEOUT_S):
            async with recorder.http_client(**(http_options or {})) as http:
                connection = streamable_http_client(url, http_client=http)
                async with Client(connection, mode="legacy", cache=None, **client_kwargs) as client:
                    return await body(client)

    return anyio.run(main)


def only_text(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    [block] = result.content
    assert isinstance(block, types.TextContent), result
    return block.text


def raw_rpc(
    port: int, method: str, params: dict[str, Any] | None = None, request_id: Any = 1, **headers: str
) -> Response:
    with RawClient(port, timeout=TIMEOUT_S) as client:
        client.send(rpc_bytes(method, params, request_id, **headers))
        return client.read_response()


def initialize(port: int) -> str:
    """A 2025-11-25 session through ``port``; its Mcp-Session-Id."""
    params = {
        "protocolVersion": LATEST,
        "capabilities": {},
        "clientInfo": {"name": "nginx-test", "version": "1"},
    }
    response = raw_rpc(port, "initialize", params)
    assert response.status == 200, response
    return response.headers["mcp-session-id"]


def session_headers(session: str) -> dict[str, str]:
    return {"Mcp-Session-Id": session, "MCP-Protocol-Version": LATEST}


def sessionless_meta(**extra: Any) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": SESSIONLESS,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "nginx-test", "version": "1"},
        **extra,
    }


def sessionless_call_bytes(
    tool: str,
    arguments: dict[str, Any],
    *,
    name_header: str | None = None,
    host: str = "127.0.0.1",
    **meta: Any,
) -> bytes:
    """A 2026-07-28 tools/call: no session; the headers repeat the method and the tool's name."""
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments, "_meta": sessionless_meta(**meta)},
    }
    headers = {
        **MCP_HEADERS,
        "MCP-Protocol-Version": SESSIONLESS,
        "Mcp-Method": "tools/call",
        "Mcp-Name": name_header or tool,
    }
    return client_request_bytes("POST", "/mcp", orjson.dumps(body), headers, host=host)


class SseReader:
    """A streamed response read event by event (httpx2, sync), with a deadline per read."""

    def __init__(self, response: httpx2.Response) -> None:
        self.response = response
        self._lines = response.iter_lines()

    def next_block(self) -> list[str]:
        """The lines of the next SSE block (an event or a comment), up to its blank line."""
        block: list[str] = []
        for line in self._lines:
            if line == "":
                if block:
                    return block
                continue
            block.append(line)
        raise AssertionError(f"the stream ended; last lines {block}")

    def next_message(self) -> dict[str, Any]:
        """The JSON of the next event with data (comments and the empty priming event skipped)."""
        while True:
            data = [line[5:].lstrip() for line in self.next_block() if line.startswith("data:")]
            if data and "".join(data):
                message: dict[str, Any] = orjson.loads("\n".join(data))
                return message


# -- the shipped configuration ----------------------------------------------------------------------


def _directive(path: Path, name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", path.read_text(), flags=re.MULTILINE)


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value.strip())
    assert match, value
    return int(match[1]) * units[match[2] or "s"]


def _bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmMgG])?", value.strip())
    assert match, value
    return int(match[1]) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[(match[2] or "").lower()]


def test_shipped_numbers_agree_with_mcp_fast_defaults() -> None:
    """The rules mcp_fast.conf states, checked against mcp_fast's own defaults (config.py)."""
    defaults = {option.name: option.default for option in OPTIONS}
    snippet, full = DEPLOY / "mcp_fast.conf", DEPLOY / "nginx.conf"
    [body_limit] = _directive(snippet, "client_max_body_size")
    # nginx refuses a larger body first: mcp_fast never has to refuse one mid-upload (see
    # test_mcp_fast_refusing_a_body_mid_upload_keeps_the_fleet_up for what happens otherwise).
    assert _bytes(body_limit) <= defaults["max_body_size"]
    [read_timeout] = _directive(snippet, "proxy_read_timeout")
    assert _seconds(read_timeout) > 2 * defaults["sse_keepalive"]
    # nginx closes an idle upstream connection before mcp_fast does (test_upstream_keepalive_*).
    upstream_timeouts = _directive(full, "keepalive_timeout")
    assert len(upstream_timeouts) == 3
    assert all(_seconds(value) < defaults["keepalive_timeout"] for value in upstream_timeouts)
    assert _directive(snippet, "proxy_http_version") == ["1.1"]
    assert _directive(snippet, "proxy_set_header") == ['Connection ""', "Host $host"]
    assert _directive(snippet, "proxy_buffering") == ["off"]
    # No sticky sessions for Streamable HTTP.
    assert not _directive(full, "ip_hash") and not _directive(full, "hash") and not _directive(full, "sticky")


# -- Streamable HTTP through nginx -----------------------------------------------------------------


def test_official_client_session_round_robin_over_both_instances(fleet: Fleet) -> None:
    """The official client's session works while nginx alternates its requests between the two
    instances: tools, progress and log notifications over SSE, resources, prompts."""
    recorder = Recorder()
    logs: list[Any] = []
    updates: list[tuple[float, float]] = []  # (progress, when it arrived)

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, time.monotonic()))

    async def body(client: Client) -> dict[str, Any]:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        echoes = [only_text(await client.call_tool("echo", {"message": f"m{i}"})) for i in range(4)]
        logged = only_text(await client.call_tool("test_tool_with_logging", {}))
        # slow_report: progress at once, then the result after `seconds` (4 steps).
        await client.call_tool("slow_report", {"seconds": 1.2}, progress_callback=on_progress)
        finished = time.monotonic()
        resource = await client.read_resource("test://static-text")
        [contents] = resource.contents
        assert isinstance(contents, types.TextResourceContents)
        prompt = await client.get_prompt("test_prompt_with_arguments", {"arg1": "x", "arg2": "y"})
        return {
            "tools": tools, "echoes": echoes, "logged": logged, "finished": finished,
            "resource": contents.text, "prompt": len(prompt.messages),
        }  # fmt: skip

    seen = run_client(fleet.nginx.url, body, recorder, logging_callback=on_log)
    assert {"echo", "slow_report", "test_tool_with_logging"} <= seen["tools"]
    assert seen["echoes"] == ["m0", "m1", "m2", "m3"]
    assert seen["logged"] == "Logging test completed"
    assert logs == ["Tool execution started", "Tool processing data", "Tool execution completed"]
    assert seen["resource"] == "This is the content of the static text resource."
    assert seen["prompt"] == 1
    assert [value for value, _ in updates] == [0, 1, 2, 3]
    # Streamed, not buffered to the end: the first progress arrived while the tool still had
    # three 0.3 s sleeps to go (buffered, it would arrive with the result).
    assert seen["finished"] - updates[0][1] > 0.45, (seen["finished"], updates)
    # One session, both instances: every request after initialize carried the same session id,
    # and the tool calls were answered by a and by b.
    [init] = recorder.calls("initialize")
    later = [e for e in recorder.exchanges if e.rpc_method != "initialize"]
    sessions = {e.session for e in later}
    assert len(sessions) == 1 and None not in sessions, sessions
    assert all(e.status in (200, 202) for e in later), later
    calls = recorder.calls("tools/call")
    assert {fleet.instance_of(e.upstream) for e in calls} == {"a", "b"}, calls
    assert init.status == 200


def test_server_to_client_requests_find_the_instance_that_asked(fleet: Fleet) -> None:
    """Sampling and elicitation under round-robin: the tool runs on one instance and waits; the
    client's answer, a new POST, goes to the other one, which passes it on through what the
    instances share (--fleet-dir here; Redis in test_fleet_nginx.py). Each call completes, with
    the answer its own session gave."""
    recorder = Recorder()

    async def sampling(
        context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        content = types.TextContent(type="text", text="Paris")
        return types.CreateMessageResult(role="assistant", content=content, model="m", stop_reason="endTurn")

    async def elicitation(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"username": "ann", "email": "ann@example.com"})

    async def body(client: Client) -> list[str]:
        texts = []
        for _ in range(2):
            texts.append(only_text(await client.call_tool("test_sampling", {"prompt": "capital?"})))
            texts.append(only_text(await client.call_tool("test_elicitation", {"message": "who?"})))
        return texts

    texts = run_client(
        fleet.nginx.url, body, recorder, sampling_callback=sampling, elicitation_callback=elicitation
    )
    assert (
        texts
        == [
            "LLM response: Paris",
            "User response: action=accept, content={'username': 'ann', 'email': 'ann@example.com'}",
        ]
        * 2
    )
    # The answers did cross: some reached the instance that had not asked (each answer POST
    # follows the head of its own tools/call's stream).
    asker, crossed = None, 0
    for exchange in recorder.exchanges:
        if exchange.rpc_method == "tools/call":
            asker = fleet.instance_of(exchange.upstream)
        elif exchange.method == "POST" and exchange.rpc_method is None and asker is not None:
            crossed += fleet.instance_of(exchange.upstream) != asker
    assert crossed > 0, recorder.exchanges


def test_get_stream_gets_notifications_and_keepalive_comments(fleet: Fleet) -> None:
    """GET /mcp through nginx: the stream flows at once (keep-alive comments every
    --sse-keepalive), and a list-changed notification sent by its instance arrives."""
    session = initialize(fleet.nginx.http_port)
    headers = {**session_headers(session), "Accept": "text/event-stream"}
    with (
        httpx2.Client(timeout=httpx2.Timeout(TIMEOUT_S, read=10.0)) as http,
        http.stream("GET", fleet.nginx.url, headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        # nginx acts on X-Accel-Buffering and does not pass it on.
        assert "x-accel-buffering" not in response.headers
        holder = fleet.instance_of(response.headers.get("x-upstream-addr"))
        stream = SseReader(response)
        assert stream.next_block()[0].startswith("id:")  # 2025-11-25 priming event
        assert stream.next_block() == [": keep-alive"]
        assert stream.next_block() == [": keep-alive"]  # and again: the stream is live
        # Notifications of the list kind go to the GET streams of the instance where the list
        # changed: trigger it through nginx until the instance holding this stream runs it.
        for _ in range(6):
            triggered = raw_rpc(
                fleet.nginx.http_port, "tools/call", {"name": "test_trigger_tool_change", "arguments": {}},
                **session_headers(session),
            )  # fmt: skip
            assert triggered.status == 200, triggered
            if fleet.instance_of(triggered.headers.get("x-upstream-addr")) == holder:
                break
        else:
            raise AssertionError("nginx never sent the trigger to the stream's instance")
        assert stream.next_message() == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}


def test_sessionless_2026_request_and_its_headers_pass_unchanged(fleet: Fleet) -> None:
    """A 2026-07-28 request has no session: any instance answers it. mcp_fast compares the
    Mcp-Method/Mcp-Name headers with the body, so a 200 and a -32020 show nginx kept them."""
    with RawClient(fleet.nginx.http_port, timeout=TIMEOUT_S) as client:
        client.send(sessionless_call_bytes("echo", {"message": "sessionless"}))
        answer = client.read_response()
        assert answer.status == 200, answer
        result = answer.json()["result"]
        assert result["content"] == [{"type": "text", "text": "sessionless"}]
        assert result["resultType"] == "complete"
        client.send(sessionless_call_bytes("echo", {"message": "x"}, name_header="add"))
        mismatch = client.read_response()
    assert mismatch.status == 400, mismatch
    assert mismatch.json()["error"]["code"] == -32020  # HeaderMismatch: Mcp-Name says add


def test_delete_ends_the_session_on_the_instance_that_takes_it(fleet: Fleet) -> None:
    session = initialize(fleet.nginx.http_port)
    with RawClient(fleet.nginx.http_port, timeout=TIMEOUT_S) as client:
        client.send(client_request_bytes("DELETE", "/mcp", b"", session_headers(session)))
        deleted = client.read_response()
    assert deleted.status == 200, deleted
    instance = fleet.backends[fleet.instance_of(deleted.headers.get("x-upstream-addr"))]
    gone = raw_rpc(instance.port, "ping", None, **session_headers(session))
    assert gone.status == 404 and gone.json()["error"]["code"] == -32001, gone


def test_delete_ends_the_session_on_every_instance(fleet: Fleet) -> None:
    """The instances share --fleet-dir (as a fleet shares a volume): a DELETE through
    nginx reaches one of them, and within the poll interval (0.1 s) both answer 404."""
    session = initialize(fleet.nginx.http_port)
    with RawClient(fleet.nginx.http_port, timeout=TIMEOUT_S) as client:
        client.send(client_request_bytes("DELETE", "/mcp", b"", session_headers(session)))
        assert client.read_response().status == 200
    time.sleep(0.3)  # each instance looks at the directory at most every 0.1 s
    statuses = [
        raw_rpc(server.port, "ping", None, **session_headers(session)).status
        for server in fleet.backends.values()
    ]
    assert statuses == [404, 404]
    assert raw_rpc(fleet.nginx.http_port, "ping", None, **session_headers(session)).status == 404


BAD_REQUESTS: dict[str, tuple[dict[str, str], bytes, str]] = {
    # name: (headers, body, method)
    "400 no session id": ({**MCP_HEADERS}, b'{"jsonrpc":"2.0","id":1,"method":"ping"}', "POST"),
    "400 parse error": ({**MCP_HEADERS}, b'{"jsonrpc":', "POST"),
    "400 unsupported version": (
        {**MCP_HEADERS, "MCP-Protocol-Version": "1999-01-01"}, b'{"jsonrpc":"2.0","id":1,"method":"ping"}', "POST",
    ),
    "404 unknown session": (
        {**MCP_HEADERS, "Mcp-Session-Id": "not-a-session"}, b'{"jsonrpc":"2.0","id":1,"method":"ping"}', "POST",
    ),
    "406 accept": (
        {"Content-Type": "application/json", "Accept": "text/html"}, b'{"jsonrpc":"2.0","id":1,"method":"ping"}', "POST",
    ),
    "415 content type": (
        {"Content-Type": "text/plain", "Accept": "application/json"}, b'{"jsonrpc":"2.0","id":1,"method":"ping"}', "POST",
    ),
    "405 put": ({**MCP_HEADERS}, b"{}", "PUT"),
    "403 origin": ({**MCP_HEADERS, "Origin": "https://evil.example"}, b'{"jsonrpc":"2.0","id":1,"method":"ping"}', "POST"),
    "421 host": ({**MCP_HEADERS, "Host": "evil.example"}, b'{"jsonrpc":"2.0","id":1,"method":"ping"}', "POST"),
}  # fmt: skip


def _send(port: int, method: str, headers: dict[str, str], body: bytes) -> Response:
    headers = dict(headers)
    host = headers.pop("Host", "127.0.0.1")
    with RawClient(port, timeout=TIMEOUT_S) as client:
        client.send(client_request_bytes(method, "/mcp", body, headers, host=host))
        return client.read_response()


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_error_answers_pass_through_unchanged(fleet: Fleet, case: str) -> None:
    """nginx hands mcp_fast's error statuses and bodies (JSON-RPC or plain) to the client as
    they are (proxy_intercept_errors is off): byte for byte what the instance answers itself."""
    headers, body, method = BAD_REQUESTS[case]
    direct = _send(fleet.backends["a"].port, method, headers, body)
    proxied = _send(fleet.nginx.http_port, method, headers, body)
    assert direct.status == int(case.split()[0]), direct
    assert (proxied.status, proxied.headers.get("content-type"), proxied.body) == (
        direct.status, direct.headers.get("content-type"), direct.body,
    ), (direct, proxied)  # fmt: skip
    assert proxied.headers.get("x-upstream-addr")  # mcp_fast's answer, not nginx's
    if direct.headers.get("content-type") == "application/json":
        assert "error" in proxied.json()


def test_public_host_name_is_accepted_with_allowed_hosts(fleet: Fleet) -> None:
    """`proxy_set_header Host $host` passes the client's name on; the loopback-bound instances
    accept it because they run with --allowed-hosts naming it (and refuse other names: 421,
    test_error_answers_pass_through_unchanged)."""
    with RawClient(fleet.nginx.http_port, timeout=TIMEOUT_S) as client:
        client.send(sessionless_call_bytes("echo", {"message": "by name"}, host=PUBLIC_HOST))
        answer = client.read_response()
    assert answer.status == 200, answer
    assert answer.json()["result"]["content"][0]["text"] == "by name"


def test_large_body_passes_and_an_oversized_one_gets_413(fleet: Fleet) -> None:
    session = initialize(fleet.nginx.http_port)
    message = "x" * (1 << 20)
    body = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": message}},
        }
    )
    headers = {**MCP_HEADERS, **session_headers(session)}
    with RawClient(fleet.nginx.http_port, timeout=TIMEOUT_S) as client:
        client.send(client_request_bytes("POST", "/mcp", body, headers))
        echoed = client.read_response()
    assert echoed.status == 200, echoed.status
    assert echoed.json()["result"]["content"][0]["text"] == message
    # Over client_max_body_size (= mcp_fast's --max-body-size, 4M): nginx refuses it itself.
    oversized = b'{"jsonrpc":"2.0","id":4,"method":"ping","params":{"x":"' + b"y" * (4 << 20) + b'"}}'
    with RawClient(fleet.nginx.http_port, timeout=TIMEOUT_S) as client:
        client.send(client_request_bytes("POST", "/mcp", oversized, headers))
        refused = client.read_response()
    assert refused.status == 413, refused.status
    assert "x-upstream-addr" not in refused.headers or not refused.headers["x-upstream-addr"]
    # And the fleet is unaffected.
    assert raw_rpc(fleet.nginx.http_port, "ping", None, **session_headers(session)).status == 200


# -- the old HTTP+SSE transport ---------------------------------------------------------------------


def test_old_sse_transport_reaches_the_instance_that_holds_the_stream(fleet: Fleet) -> None:
    """GET /sse goes to any instance; its `endpoint` event names that instance's own messages
    path, which nginx routes back to it. The official sse_client works on both instances."""
    paths: set[str] = set()
    with httpx2.Client(timeout=httpx2.Timeout(TIMEOUT_S, read=10.0)) as http:
        for _ in range(2):  # round-robin: one stream on each instance
            url = f"http://127.0.0.1:{fleet.nginx.http_port}/sse"
            with http.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
                assert response.status_code == 200
                block = SseReader(response).next_block()
                assert block[0] == "event: endpoint", block
                paths.add(block[1].removeprefix("data:").strip().split("?")[0])
    assert paths == {"/messages/a", "/messages/b"}

    updates: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(progress)

    async def session() -> str:
        url = f"http://127.0.0.1:{fleet.nginx.http_port}/sse"
        async with Client(sse_client(url), mode="legacy", cache=None) as client:
            text = only_text(await client.call_tool("echo", {"message": "old transport"}))
            await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert "echo" in tools
            return text

    async def main() -> list[str]:
        with anyio.fail_after(TIMEOUT_S):
            return [await session(), await session()]  # one after the other: a then b

    log_start = len(fleet.nginx.access_log())
    assert anyio.run(main) == ["old transport", "old transport"]
    assert updates == [0, 50, 100, 0, 50, 100]
    # nginx's access log: every POST to /messages/<x> went to instance x, and both were used.
    posts = re.findall(
        r"^POST /messages/(\w)\?session_id=\w+ (\d+) up=(\S+) ", fleet.nginx.access_log()[log_start:], re.M
    )
    assert {path for path, _, _ in posts} == {"a", "b"}, posts
    assert all(fleet.instance_of(upstream) == path for path, _, upstream in posts), posts
    # 202 each; nginx logs 499 for a POST whose client closed the connection before the answer
    # (seen once in a full run on a loaded machine, as the client closed its session).
    assert all(status in ("202", "499") for _, status, _ in posts), posts
    assert sum(status == "202" for _, status, _ in posts) >= len(posts) - 1, posts


# -- upstream keep-alive -----------------------------------------------------------------------------


def _nginx_side_ports(backend_ports: set[int]) -> set[int]:
    """Local ports of connections to the instances (ESTABLISHED, or TIME_WAIT after nginx closed
    them: each is one upstream connection nginx opened in the last minute)."""
    return {
        s.local_port
        for s in tcp_sockets()
        if s.remote_port in backend_ports and s.local_port not in backend_ports
    }


def test_upstream_keepalive_reuses_few_connections(fleet: Fleet) -> None:
    session = initialize(fleet.nginx.http_port)
    backend_ports = {server.port for server in fleet.backends.values()}
    before = _nginx_side_ports(backend_ports)
    ping = rpc_bytes("ping", None, 1, **session_headers(session))
    requests, clients = 240, 4

    def client_loop(_: int) -> list[int]:
        statuses = []
        with RawClient(fleet.nginx.http_port, timeout=TIMEOUT_S) as client:
            for _ in range(requests // clients):
                client.send(ping)
                statuses.append(client.read_response().status)
        return statuses

    with ThreadPoolExecutor(clients) as pool:
        statuses = [status for batch in pool.map(client_loop, range(clients)) for status in batch]
    assert statuses == [200] * requests
    opened = _nginx_side_ports(backend_ports) - before
    # At most one connection per concurrent request per instance, not one per request.
    assert len(opened) <= 2 * clients, opened


@pytest.fixture(scope="module")
def idle_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One instance that closes idle keep-alive connections after 1 s (default 75 s)."""
    server = start_backend(tmp_path_factory.mktemp("idle"), "a", "--keepalive-timeout", "1")
    try:
        yield server
    finally:
        stop_server(server)
    assert "Traceback" not in server.log(), server.log()


@contextlib.contextmanager
def nginx_for(tmp: Path, backend: RunningServer, **options: str) -> Iterator[Nginx]:
    """nginx with both upstream entries on ``backend`` (nginx shares one keepalive pool per address)."""
    nginx = start_nginx(tmp, [backend.port], **options)
    try:
        yield nginx
    finally:
        stop_nginx(nginx)


def _warm_up(nginx: Nginx, backend: RunningServer) -> int:
    """One request, so nginx keeps an idle connection to ``backend``; its nginx-side port.
    (Only this nginx's worker's: one of an earlier test's nginx may still be open for a moment.)"""
    assert raw_rpc(nginx.http_port, "ping", None).status == 400  # mcp_fast: no session id
    worker_sockets = _socket_inodes(nginx.worker_pid)
    [idle] = [
        local_port
        for local_port, remote_port, state, inode in _tcp_sockets_with_inodes()
        if remote_port == backend.port and state == "ESTABLISHED" and inode in worker_sockets
    ]
    return idle


def _tcp_sockets_with_inodes() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) of the IPv4 TCP sockets in /proc/net/tcp."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        rows.append((int(local.split(":")[1], 16), int(remote.split(":")[1], 16), TCP_STATES.get(state, state), int(inode)))
    return rows


def _socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def _closed_by(backend: RunningServer, nginx_port: int) -> str | None:
    """Who closed the connection between ``nginx_port`` and the backend: the side that closed
    first holds it in TIME_WAIT (or FIN_WAIT2 while the other side has not closed yet)."""
    for s in tcp_sockets():
        if s.state in ("TIME_WAIT", "FIN_WAIT2"):
            if s.local_port == backend.port and s.remote_port == nginx_port:
                return "mcp_fast"
            if s.local_port == nginx_port and s.remote_port == backend.port:
                return "nginx"
    return None


def test_requests_after_mcp_fast_closed_an_idle_upstream_connection_succeed(
    idle_backend: RunningServer, tmp_path: Path
) -> None:
    """The instance closes the pooled connection first (its 1 s against nginx's 60 s): nginx
    sees the close while the connection is idle, drops it, and the next requests, POST and
    GET, go out on a new connection."""
    with nginx_for(tmp_path, idle_backend) as nginx:
        port = _warm_up(nginx, idle_backend)
        wait_until(
            lambda: _closed_by(idle_backend, port) == "mcp_fast", "mcp_fast to close the idle connection"
        )
        assert initialize(nginx.http_port)
        with RawClient(nginx.http_port, timeout=TIMEOUT_S) as client:
            client.send(client_request_bytes("GET", "/mcp", b"", {"Accept": "text/event-stream"}))
            assert client.read_response().status == 400  # mcp_fast's answer: no session id


def test_post_sent_as_mcp_fast_closes_the_idle_connection_gets_502(
    idle_backend: RunningServer, tmp_path: Path
) -> None:
    """Why the upstream keepalive_timeout must stay below mcp_fast's --keepalive-timeout.

    The race, made deterministic: nginx's worker is stopped while a request waits for it and
    the instance closes the pooled connection; resumed, nginx reads the request first (a
    `deferred` listener hands it over with the accept) and sends it on the dead connection.
    A GET is then retried on a new connection; a POST, possibly a tools/call, is not: 502.
    """
    with nginx_for(tmp_path, idle_backend, test_listen_options=" deferred") as nginx:

        def racing(request: bytes) -> Response:
            port = _warm_up(nginx, idle_backend)
            worker = nginx.worker_pid
            os.kill(worker, signal.SIGSTOP)
            try:
                client = RawClient(nginx.http_port, timeout=TIMEOUT_S)
                client.send(request)
                wait_until(lambda: _closed_by(idle_backend, port) == "mcp_fast", "mcp_fast to close it")
            finally:
                os.kill(worker, signal.SIGCONT)
            with client:
                return client.read_response()

        get = racing(client_request_bytes("GET", "/mcp", b"", {"Accept": "text/event-stream"}))
        assert get.status == 400, get  # mcp_fast's answer, on the second try
        assert get.headers["x-upstream-addr"].count(",") == 1, get.headers  # two attempts
        post = racing(rpc_bytes("ping", None, 1))
        assert post.status == 502, post
        assert (
            "upstream prematurely closed connection" in nginx.error_log()
            or "reset by peer" in nginx.error_log()
        )


def test_recommended_order_nginx_closes_idle_upstream_connections_first(
    idle_backend: RunningServer, tmp_path: Path
) -> None:
    """The shipped rule, scaled down: nginx's upstream keepalive_timeout (500 ms here, 60 s
    shipped) below mcp_fast's --keepalive-timeout (1 s here, 75 s by default). nginx closes
    the idle connection itself, so it never sends on one mcp_fast is closing."""
    port = idle_backend.port
    before = {s.local_port for s in tcp_sockets() if s.remote_port == port}

    def pooled() -> list[TcpSocket]:
        return [s for s in tcp_sockets() if s.remote_port == port and s.state == "ESTABLISHED"]

    with nginx_for(tmp_path, idle_backend, upstream_keepalive_timeout="500ms") as nginx:
        for _ in range(3):
            assert raw_rpc(nginx.http_port, "ping", None).status == 400  # mcp_fast: no session id
            wait_until(lambda: not pooled(), "the idle upstream connection to close")
        assert initialize(nginx.http_port)
        opened = {s.local_port for s in tcp_sockets() if s.remote_port == port} - before
        assert len(opened) >= 3, opened
        closers = [_closed_by(idle_backend, nginx_port) for nginx_port in opened]
        assert "mcp_fast" not in closers and closers.count("nginx") >= 3, closers


# -- streaming, causally; and cancellation by closing the stream ---------------------------------------


@pytest.fixture(scope="module")
def blocking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """nginx in front of one instance of tests/apps/transport_app.py, whose `block` tool reports
    progress once and then waits until it is cancelled (`counters` counts both)."""
    tmp = tmp_path_factory.mktemp("blocking")
    server = start_backend(tmp, "a", "tests.apps.transport_app:server", "--shutdown-timeout", "1")
    try:
        with nginx_for(tmp / "nginx", server) as nginx:
            yield nginx
    finally:
        stop_server(server)
    assert "Traceback" not in server.log(), server.log()


def _first_progress_of_block(nginx: Nginx) -> bytes:
    """Call `block` (2026-07-28, with a progress token) through nginx; the stream up to its
    first progress event, read while the tool is certainly still running; then hang up."""
    with RawClient(nginx.http_port, timeout=TIMEOUT_S) as client:
        client.send(sessionless_call_bytes("block", {}, progressToken="p1"))
        head = client._read_until(b"\r\n\r\n").decode("latin-1").lower()
        assert head.startswith("http/1.1 200"), head
        assert "content-type: text/event-stream" in head
        received = bytes(client.buffer)  # what came with the head
        while b"notifications/progress" not in received:
            chunk = client.sock.recv(65536)
            assert chunk, received
            received += chunk
    return received


def _counters(nginx: Nginx) -> dict[str, int]:
    with RawClient(nginx.http_port, timeout=TIMEOUT_S) as client:
        client.send(sessionless_call_bytes("counters", {}))
        result: dict[str, int] = client.read_response().json()["result"]["structuredContent"]
        return result


def test_sse_flows_through_nginx_while_the_tool_runs(blocking: Nginx) -> None:
    """A causal check that nginx does not hold SSE back: the progress event of a tool that never
    finishes by itself reaches the client (buffered, it would wait for the end of the answer)."""
    before = _counters(blocking)["started"]
    received = _first_progress_of_block(blocking)
    assert b'"progressToken":"p1"' in received and b'"progress":0' in received
    assert _counters(blocking)["started"] == before + 1


def test_closing_the_stream_through_nginx_cancels_the_request(blocking: Nginx) -> None:
    """2026-07-28 "Cancellation": closing a request's stream cancels it. Behind nginx the
    client's close reaches mcp_fast as nginx closing the upstream connection."""
    before = _counters(blocking)["cancelled"]
    _first_progress_of_block(blocking)
    deadline = time.monotonic() + 3
    while _counters(blocking)["cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _counters(blocking)["cancelled"] == before + 1


def test_a_client_that_dropped_its_get_stream_can_open_it_again(tmp_path: Path) -> None:
    server = start_backend(tmp_path, "a", "--sse-keepalive", "15")  # the default
    try:
        with nginx_for(tmp_path / "nginx", server) as nginx:
            session = initialize(nginx.http_port)
            headers = {**session_headers(session), "Accept": "text/event-stream"}
            with httpx2.Client(timeout=httpx2.Timeout(TIMEOUT_S, read=10.0)) as http:
                with http.stream("GET", nginx.url, headers=headers) as response:
                    assert response.status_code == 200
                    SseReader(response).next_block()  # the priming event: the stream is open
                statuses = []
                for _ in range(2):  # as the official client retries: twice, 1 s apart
                    time.sleep(1.0)
                    with http.stream("GET", nginx.url, headers=headers) as response:
                        statuses.append(response.status_code)
                    if statuses[-1] == 200:
                        break
        assert statuses[-1] == 200, statuses
    finally:
        stop_server(server)
    assert "Traceback" not in server.log(), server.log()


# -- graceful restart, TLS -----------------------------------------------------------------------------


def test_sigterm_finishes_the_call_in_flight_and_the_session_moves_on(tmp_path: Path) -> None:
    """A rolling restart: SIGTERM the instance running a tool call; the call still completes
    (mcp_fast finishes requests in flight), and the session's next requests go to the other
    instance (nginx: connection refused -> next upstream, safe for POST: nothing was sent; a
    connection already pooled to the stopping one may carry one more, answered in its grace)."""
    with running_fleet(tmp_path) as fleet:
        recorder = Recorder()
        stopped: list[str] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            if not stopped:
                [call] = recorder.calls("tools/call")
                stopped.append(fleet.instance_of(call.upstream))
                fleet.backends[stopped[0]].process.send_signal(signal.SIGTERM)

        async def body(client: Client) -> list[str]:
            texts = [
                only_text(
                    await client.call_tool("slow_report", {"seconds": 0.8}, progress_callback=on_progress)
                )
            ]
            for index in range(4):
                texts.append(only_text(await client.call_tool("echo", {"message": f"after {index}"})))
            return texts

        texts = run_client(fleet.nginx.url, body, recorder)
        assert texts == ["report ready after 0.8 s", "after 0", "after 1", "after 2", "after 3"]
        [gone] = stopped
        survivor = "b" if gone == "a" else "a"
        assert fleet.backends[gone].process.wait(timeout=15) == 0
        after = recorder.calls("tools/call")[1:]
        where = [fleet.instance_of(e.upstream) for e in after]
        # A connection nginx pooled to the stopping instance may still carry a request in its
        # shutdown grace (answered, with Connection: close, which takes it out of the pool);
        # then the survivor takes every request.
        assert where[-1] == survivor and where == sorted(where, key=lambda name: name == survivor), where
        assert all(e.status == 200 for e in after)


def test_tls_and_http2_at_nginx_with_the_shipped_server_block(fleet: Fleet) -> None:
    """The shipped example's own servers: HTTPS with HTTP/2 to the client, cleartext HTTP/1.1
    to mcp_fast; port 80 redirects to https."""
    recorder = Recorder()

    async def body(client: Client) -> str:
        return only_text(await client.call_tool("countdown", {"steps": 2}))

    url = f"https://127.0.0.1:{fleet.nginx.tls_port}/mcp"
    tls = ssl.create_default_context(cafile=str(fleet.nginx.ca_file))
    http = {"verify": tls, "http2": True, "headers": {"Host": PUBLIC_HOST}}
    assert run_client(url, body, recorder, http_options=http) == "liftoff"
    assert {e.http_version for e in recorder.exchanges} == {"HTTP/2"}
    assert all(e.status in (200, 202) for e in recorder.exchanges), recorder.exchanges
    redirect = _send(fleet.nginx.redirect_port, "GET", {"Host": PUBLIC_HOST}, b"")
    assert redirect.status == 301
    assert redirect.headers["location"] == f"https://{PUBLIC_HOST}/mcp"


# -- a misconfiguration that mcp_fast could survive ----------------------------------------------------


def test_mcp_fast_refusing_a_body_mid_upload_keeps_the_fleet_up(tmp_path: Path) -> None:
    """nginx's client_max_body_size above the instances' --max-body-size (4m against 1M here):
    mcp_fast refuses the body itself. The client should get that 413, and the fleet go on."""
    with running_fleet(tmp_path, "--max-body-size", "1M") as fleet:
        oversized = client_request_bytes("POST", "/mcp", b"y" * (3 << 20), MCP_HEADERS)
        statuses = []
        for _ in range(3):
            with RawClient(fleet.nginx.http_port, timeout=TIMEOUT_S) as client:
                client.send(oversized)
                statuses.append(client.read_response().status)
        after = raw_rpc(fleet.nginx.http_port, "ping", None).status
        assert (statuses, after) == ([413, 413, 413], 400), fleet.nginx.error_log()[-2000:]
