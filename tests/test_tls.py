"""TLS on the server itself: ALPN (h2 and http/1.1), real clients, certificate reload, start-up errors.

Every certificate is made by the test (``tlscerts.CertAuthority``, with `cryptography`). Clients:
curl (`--http2` and `--http1.1`), the official MCP SDK client over httpx2 with HTTP/2 on and the
test CA trusted, h2load (installed with apt-get when missing, every response's status checked),
Python's `ssl` sockets with the `h2` client (tests/h2client.py). The HTTP/2 attacks over TLS are
in fuzz/test_h2_frames.py (each runs over h2c and over TLS).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import orjson
import pytest
from conftest import ROOT, RunningServer, free_port, start_server, stop_server
from h2client import H2Socket, client_context, connect, rpc
from httpclient import RawClient, rpc_bytes
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from test_nginx import ensure_tool
from tlscerts import CertAuthority, Issued, peer_serial

APP = "examples.conformance:server"


def echo(message: str, request_id: int = 1) -> bytes:
    return rpc("tools/call", {"name": "echo", "arguments": {"message": message}}, request_id)


def text_of(message: Any) -> str:
    text: str = message["result"]["content"][0]["text"]
    return text


def https_url(server: RunningServer) -> str:
    return f"https://127.0.0.1:{server.port}/mcp"


def tls_flags(issued: Issued) -> tuple[str, ...]:
    return ("--certfile", str(issued.cert), "--keyfile", str(issued.key))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def server(ca: CertAuthority, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("tls"), "--stateless", *tls_flags(ca.issue("server")))
    try:
        yield running
    finally:
        stop_server(running)
    assert "Traceback" not in running.log(), running.log()


def tls_socket(port: int, cafile: Path, alpn: tuple[str, ...]) -> ssl.SSLSocket:
    sock = connect("127.0.0.1", port, 10.0, client_context(cafile, alpn))
    assert isinstance(sock, ssl.SSLSocket)
    return sock


# -- clients ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "version"), [("--http2", "2"), ("--http1.1", "1.1")])
def test_curl_over_tls(server: RunningServer, ca: CertAuthority, flag: str, version: str) -> None:
    """curl verifies the certificate against the test CA; ALPN picks h2 for --http2."""
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed for this test"
    result = subprocess.run(
        [curl, "-sS", flag, "--cacert", str(ca.path), "-w", "\n%{http_version} %{http_code}", https_url(server),
         "-H", "Content-Type: application/json", "-H", "Accept: application/json, text/event-stream",
         "--data-binary", echo(f"via curl {flag}").decode()],
        capture_output=True, timeout=20, check=True,
    )  # fmt: skip
    body, _, status = result.stdout.rpartition(b"\n")
    assert status == f"{version} 200".encode()
    assert text_of(orjson.loads(body)) == f"via curl {flag}"


def test_alpn_chooses_the_protocol(server: RunningServer, ca: CertAuthority) -> None:
    """RFC 9113 section 3.2: h2 by ALPN; http/1.1 (or no ALPN at all) is served as HTTP/1.1; the
    HTTP/2 preface without ALPN h2 is not taken as prior knowledge over TLS."""
    with tls_socket(server.port, ca.path, ("h2", "http/1.1")) as sock:
        assert sock.selected_alpn_protocol() == "h2"
    for alpn in (("http/1.1",), ()):
        with RawClient(server.port, ssl_context=client_context(ca.path, alpn)) as raw:
            assert raw.sock.selected_alpn_protocol() == (alpn[0] if alpn else None)  # type: ignore[attr-defined]
            raw.send(rpc_bytes("ping"))
            assert raw.read_response().status == 200
    with tls_socket(server.port, ca.path, ("http/1.1",)) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 505 ")


def test_h2_socket_over_tls_many_streams_and_the_peer_address(server: RunningServer, ca: CertAuthority) -> None:
    with H2Socket(server.port, ssl_context=client_context(ca.path)) as client:
        sids = [
            client.request("POST", "/mcp", {"content-type": "application/json",
                                            "accept": "application/json, text/event-stream"}, echo(f"m{i}", i))
            for i in range(30)
        ]  # fmt: skip
        client.flush()
        client.wait(*sids)
        assert [text_of(client.answers[s].json()) for s in sids] == [f"m{i}" for i in range(30)]


def test_official_sdk_client_over_https(server: RunningServer, ca: CertAuthority) -> None:
    """The `mcp` SDK's streamable HTTP client on httpx2 with http2 on, trusting the test CA."""
    versions: list[str] = []

    async def main() -> None:
        async def on_response(response: httpx2.Response) -> None:
            versions.append(response.http_version)

        context = ssl.create_default_context(cafile=str(ca.path))
        http = httpx2.AsyncClient(http2=True, verify=context, timeout=30, event_hooks={"response": [on_response]})
        async with http:
            transport = streamable_http_client(https_url(server), http_client=http)
            with anyio.fail_after(30):
                async with Client(transport, mode="legacy", cache=None) as sdk:
                    result = await sdk.call_tool("echo", {"message": "sdk over https"})
                    assert result.content[0].text == "sdk over https"  # type: ignore[union-attr]
                    progress = await sdk.call_tool("test_tool_with_progress", {})
                    assert not progress.is_error
                    tools = await sdk.list_tools()
                    assert "echo" in {tool.name for tool in tools.tools}

    anyio.run(main)
    assert versions and set(versions) == {"HTTP/2"}


def h2load_checked(h2load: str, url: str, tmp_path: Path, requests: int) -> None:
    """h2load: ``requests`` tools/call echo, 4 connections x 10 streams; every request of its
    per-request log must have answered 200, and the summary must agree."""
    body = tmp_path / "body.json"
    body.write_bytes(echo("load"))
    log_file = tmp_path / f"h2load-{url.partition(':')[0]}.log"
    log_file.unlink(missing_ok=True)  # (h2load appends)
    result = subprocess.run(
        [h2load, "-n", str(requests), "-c", "4", "-m", "10", "-t", "1", "-d", str(body),
         "-H", "content-type: application/json", "-H", "accept: application/json, text/event-stream",
         "-H", "mcp-protocol-version: 2025-06-18", "--log-file", str(log_file), url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line.split("\t") for line in log_file.read_text().splitlines() if line.strip()]
    assert len(lines) == requests
    assert {line[1] for line in lines} == {"200"}, "a response that was not 200"
    assert f"{requests} succeeded, 0 failed, 0 errored" in result.stdout, result.stdout
    assert f"status codes: {requests} 2xx" in result.stdout, result.stdout


def test_h2load_over_tls_and_h2c(server: RunningServer, tmp_path: Path) -> None:
    h2load = ensure_tool("h2load", "nghttp2-client")
    h2load_checked(h2load, https_url(server), tmp_path, 2000)
    cleartext = start_server(tmp_path, "--stateless")
    try:
        h2load_checked(h2load, cleartext.url, tmp_path, 2000)
    finally:
        stop_server(cleartext)


def test_mutual_tls(ca: CertAuthority, tmp_path: Path) -> None:
    """--ssl-ca-certs + --ssl-cert-reqs required: a client without a certificate of that CA
    does not get through the handshake; one with it is served."""
    running = start_server(
        tmp_path, "--stateless", *tls_flags(ca.issue("mtls-server")),
        "--ssl-ca-certs", str(ca.path), "--ssl-cert-reqs", "required",
    )  # fmt: skip
    try:
        without = client_context(ca.path, ("http/1.1",))
        with pytest.raises((ssl.SSLError, ConnectionError)), RawClient(running.port, ssl_context=without) as raw:
            raw.send(rpc_bytes("ping"))
            raw.read_response()
        client_cert = ca.issue("client", client=True)
        context = client_context(ca.path, ("h2",))
        context.load_cert_chain(client_cert.cert, client_cert.key)
        with H2Socket(running.port, ssl_context=context) as client:
            assert text_of(client.call(echo("with a client certificate")).json()) == "with a client certificate"
    finally:
        stop_server(running)
    assert "Traceback" not in running.log()


def test_encrypted_key_with_its_password(ca: CertAuthority, tmp_path: Path) -> None:
    issued = ca.issue("encrypted", password=b"s3cret")
    running = start_server(tmp_path, "--stateless", *tls_flags(issued), env={"MCP_FAST_KEYFILE_PASSWORD": "s3cret"})
    try:
        with H2Socket(running.port, ssl_context=client_context(ca.path)) as client:
            assert text_of(client.call(echo("decrypted")).json()) == "decrypted"
    finally:
        stop_server(running)


def test_the_start_up_summary_says_https_and_alpn(server: RunningServer) -> None:
    """The one INFO line names the scheme and how HTTP/2 is chosen over TLS."""
    log = server.log()
    assert f" on https://127.0.0.1:{server.port} (Streamable HTTP on /mcp" in log, log
    assert "; HTTP/1.1 and h2 by ALPN; MCP " in log, log


def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MCP_FAST_")}
    return subprocess.run(
        [sys.executable, "-m", "mcp_fast.healthcheck"],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_the_healthcheck_speaks_https(server: RunningServer, ca: CertAuthority) -> None:
    issued = ca.issue("probe")
    env = {"MCP_FAST_PORT": str(server.port), "MCP_FAST_CERTFILE": str(issued.cert)}
    result = healthcheck(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"healthy: GET /health on https://127.0.0.1:{server.port}: 200 OK"


class UnixTlsClient(RawClient):
    """RawClient over TLS over a Unix socket (``--uds`` with ``--certfile``)."""

    def __init__(self, path: Path, context: ssl.SSLContext, timeout: float = 10.0) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(str(path))
        self.sock = context.wrap_socket(sock, server_hostname="localhost")
        self.buffer = bytearray()


def test_tls_over_a_unix_socket(ca: CertAuthority, tmp_path: Path) -> None:
    """--uds with --certfile: the socket speaks HTTPS (HTTP/1.1 or h2 by ALPN), the healthcheck too."""
    path = tmp_path / "mcp.sock"
    log = tmp_path / "uds-tls.log"
    issued = ca.issue("uds")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mcp_fast", APP, "--uds", str(path), "--stateless", *tls_flags(issued)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not path.exists():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        with UnixTlsClient(path, client_context(ca.path, ("http/1.1",))) as client:
            assert client.sock.selected_alpn_protocol() == "http/1.1"  # type: ignore[attr-defined]
            client.send(rpc_bytes("tools/call", {"name": "echo", "arguments": {"message": "tls over uds"}}))
            assert text_of(client.read_response().json()) == "tls over uds"
        with UnixTlsClient(path, client_context(ca.path, ("h2", "http/1.1"))) as client:
            assert client.sock.selected_alpn_protocol() == "h2"  # type: ignore[attr-defined]
        result = healthcheck({"MCP_FAST_UDS": str(path), "MCP_FAST_CERTFILE": str(issued.cert)})
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == f"healthy: GET /health on unix:{path}: 200 OK"
    finally:
        process.terminate()
        code = process.wait(timeout=15)
    assert code == 0, log.read_text()
    assert f"on unix:{path} over TLS (" in log.read_text(), log.read_text()
    assert "Traceback" not in log.read_text()


# -- certificate reload ---------------------------------------------------------------------


def serial_seen(port: int, *cafiles: Path) -> int:
    context = client_context(cafiles[0])
    for cafile in cafiles[1:]:
        context.load_verify_locations(cafile=str(cafile))
    with connect("127.0.0.1", port, 10.0, context) as sock:
        assert isinstance(sock, ssl.SSLSocket)
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        return peer_serial(der)


def wait_for_log(running: RunningServer, text: str, count: int = 1, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while running.log().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged {count} times:\n{running.log()}"
        time.sleep(0.05)


def install(issued: Issued, directory: Path) -> None:
    """Replace the served files (as a certificate renewal does)."""
    for source, name in ((issued.cert, "server.crt"), (issued.key, "server.key")):
        shutil.copyfile(source, directory / (name + ".new"))
        os.replace(directory / (name + ".new"), directory / name)


def test_sighup_reloads_the_certificate_without_dropping_connections(tmp_path: Path) -> None:
    first_ca = CertAuthority(tmp_path / "ca1", name="first CA")
    second_ca = CertAuthority(tmp_path / "ca2", name="second CA")
    served = tmp_path / "served"
    served.mkdir()
    first = first_ca.issue("first")
    install(first, served)
    running = start_server(
        tmp_path, "--stateless", "--certfile", str(served / "server.crt"), "--keyfile", str(served / "server.key")
    )
    try:
        kept = H2Socket(running.port, ssl_context=client_context(first_ca.path))
        assert text_of(kept.call(echo("before")).json()) == "before"
        assert serial_seen(running.port, first_ca.path) == first.serial

        second = second_ca.issue("second")
        install(second, served)
        running.process.send_signal(signal.SIGHUP)
        wait_for_log(running, "reloaded the TLS certificate")
        # New handshakes get the new certificate, with or without SNI ...
        assert serial_seen(running.port, second_ca.path) == second.serial
        context = client_context(second_ca.path)
        context.check_hostname = False
        with socket.create_connection(("127.0.0.1", running.port)) as raw, context.wrap_socket(raw) as sock:
            der = sock.getpeercert(binary_form=True)
            assert der is not None and peer_serial(der) == second.serial
        # ... and the connection made before the reload goes on with its own.
        assert text_of(kept.call(echo("after the reload")).json()) == "after the reload"
        der = kept.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        assert peer_serial(der) == first.serial

        # A bad new certificate is refused; the one in use stays.
        (served / "server.crt").write_text("not a certificate\n")
        running.process.send_signal(signal.SIGHUP)
        wait_for_log(running, "certificate reload failed")
        assert "--certfile" in running.log() and str(served / "server.crt") in running.log()
        assert serial_seen(running.port, second_ca.path) == second.serial
        assert text_of(kept.call(echo("still open")).json()) == "still open"
        kept.close()
        assert running.process.poll() is None
    finally:
        stop_server(running)
    assert "Traceback" not in running.log(), running.log()


def test_sighup_reaches_every_worker(tmp_path: Path) -> None:
    first_ca = CertAuthority(tmp_path / "ca1", name="first CA")
    second_ca = CertAuthority(tmp_path / "ca2", name="second CA")
    served = tmp_path / "served"
    served.mkdir()
    install(first_ca.issue("first"), served)
    running = start_server(
        tmp_path, "--stateless", "--workers", "2",
        "--certfile", str(served / "server.crt"), "--keyfile", str(served / "server.key"),
    )  # fmt: skip
    try:
        second = second_ca.issue("second")
        install(second, served)
        # The workers log nothing when they listen (the parent's one summary line speaks for
        # them), and one ignores SIGHUP until its loop handles it: send it until both reloaded.
        reloaded: set[str] = set()
        deadline = time.monotonic() + 15
        while len(reloaded) < 2:
            assert time.monotonic() < deadline, running.log()
            running.process.send_signal(signal.SIGHUP)
            time.sleep(0.3)
            reloaded = set(re.findall(r"reloaded the TLS certificate from \S+ \(pid (\d+)\)", running.log()))
        assert str(running.process.pid) not in reloaded  # the parent passes it on, it does not serve
        # Whichever worker the kernel picks, new connections get the new certificate.
        assert {serial_seen(running.port, second_ca.path) for _ in range(12)} == {second.serial}
        assert running.process.poll() is None
    finally:
        stop_server(running)
    assert "Traceback" not in running.log(), running.log()


# -- start-up errors --------------------------------------------------------------------------


def bad_setups(ca: CertAuthority, directory: Path) -> list[tuple[str, list[str], str, str]]:
    """(id, flags, the flag named, the file named) of setups that must not start."""
    good = ca.issue("good")
    other = ca.issue("other")
    encrypted = ca.issue("encrypted", password=b"pw")
    garbage = directory / "garbage.pem"
    garbage.write_text("hello\n")
    missing = str(directory / "missing.pem")
    cert, key = str(good.cert), str(good.key)
    return [
        ("missing-cert", ["--certfile", missing, "--keyfile", key], "--certfile", missing),
        ("missing-key", ["--certfile", cert, "--keyfile", missing], "--keyfile", missing),
        ("directory", ["--certfile", str(directory), "--keyfile", key], "--certfile", str(directory)),
        ("garbage-cert", ["--certfile", str(garbage), "--keyfile", key], "--certfile", str(garbage)),
        ("garbage-key", ["--certfile", cert, "--keyfile", str(garbage)], "--keyfile", str(garbage)),
        ("cert-as-key", ["--certfile", cert, "--keyfile", cert], "--keyfile", cert),
        ("mismatch", ["--certfile", cert, "--keyfile", str(other.key)], "--keyfile", str(other.key)),
        ("no-key", ["--certfile", cert], "--certfile", cert),
        ("encrypted", ["--certfile", str(encrypted.cert), "--keyfile", str(encrypted.key)], "--keyfile-password",
         str(encrypted.key)),
        ("wrong-password", ["--certfile", str(encrypted.cert), "--keyfile", str(encrypted.key),
                            "--keyfile-password", "nope"], "--keyfile-password", str(encrypted.key)),
        ("missing-ca", ["--certfile", cert, "--keyfile", key, "--ssl-ca-certs", missing], "--ssl-ca-certs", missing),
        ("reqs-without-ca", ["--certfile", cert, "--keyfile", key, "--ssl-cert-reqs", "required"],
         "--ssl-ca-certs", ""),
        ("key-without-cert", ["--keyfile", key], "--keyfile", key),
    ]  # fmt: skip


def test_bad_certificate_files_stop_start_up_naming_the_flag_and_the_file(
    ca: CertAuthority, tmp_path: Path
) -> None:
    for name, flags, flag, file in bad_setups(ca, tmp_path):
        for workers in ("1", "2"):
            result = subprocess.run(
                [sys.executable, "-m", "mcp_fast", APP, "--port", str(free_port()), "--workers", workers, *flags],
                cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            output = result.stdout + result.stderr
            assert result.returncode == 2, (name, workers, output)
            assert flag in output and file in output, (name, output)
            assert "Traceback" not in output, (name, output)
            assert "mcp_fast serving" not in output, (name, output)


def test_config_of_the_tls_options() -> None:
    from mcp_fast.config import load_config

    config = load_config([], {})
    assert (config.certfile, config.keyfile, config.keyfile_password) == ("", "", "")
    assert (config.ssl_ca_certs, config.ssl_cert_reqs) == ("", "none")
    assert config.h2_max_connection_buffer == 16 << 20
    env = {
        "MCP_FAST_CERTFILE": "c.pem", "MCP_FAST_KEYFILE": "k.pem", "MCP_FAST_KEYFILE_PASSWORD": "pw",
        "MCP_FAST_SSL_CA_CERTS": "ca.pem", "MCP_FAST_SSL_CERT_REQS": "2",
        "MCP_FAST_H2_MAX_CONNECTION_BUFFER": "4M",
    }  # fmt: skip
    config = load_config([], env)
    assert (config.certfile, config.keyfile, config.keyfile_password) == ("c.pem", "k.pem", "pw")
    assert (config.ssl_ca_certs, config.ssl_cert_reqs) == ("ca.pem", "required")
    assert config.h2_max_connection_buffer == 4 << 20
    config = load_config(["--certfile", "x.pem", "--ssl-cert-reqs", "optional"], env)  # the command line wins
    assert (config.certfile, config.ssl_cert_reqs) == ("x.pem", "optional")
    with pytest.raises(SystemExit):
        load_config(["--ssl-cert-reqs", "sometimes"], {})
