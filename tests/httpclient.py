"""A tiny raw-socket HTTP/1.1 client for tests: exact bytes out, h11 parses what comes back."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    http_version: bytes = b"1.1"
    all_headers: list[tuple[str, str]] = field(default_factory=list)

    def json(self) -> Any:
        return orjson.loads(self.body)

    def sse_messages(self) -> list[Any]:
        """The JSON data of every SSE event in the body."""
        messages = []
        for block in self.body.decode().split("\n\n"):
            data = [line[5:].lstrip() for line in block.splitlines() if line.startswith("data:")]
            if data and "".join(data):
                messages.append(orjson.loads("\n".join(data)))
        return messages


class RawClient:
    """One TCP connection; send raw bytes, read responses in order.

    The response parser is deliberately separate from the server's code: it reads the status
    line, headers, then a Content-Length, chunked, or read-until-close body.
    """

    def __init__(
        self, port: int, host: str = "127.0.0.1", timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.sock: socket.socket = socket.create_connection((host, port), timeout=timeout)
        if ssl_context is not None:  # HTTPS (the context's ALPN should offer http/1.1 only)
            self.sock = ssl_context.wrap_socket(self.sock, server_hostname=host)
        self.buffer = bytearray()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def _read_until(self, marker: bytes) -> bytes:
        while (index := self.buffer.find(marker)) == -1:
            if not self._fill():
                raise ConnectionError("closed before a complete response")
        data = bytes(self.buffer[:index])
        del self.buffer[: index + len(marker)]
        return data

    def _read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError("closed before a complete response")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_response(self) -> Response:
        """Read one complete final response (100 Continue is skipped)."""
        while True:
            head = self._read_until(b"\r\n\r\n").decode("latin-1")
            status_line, *header_lines = head.split("\r\n")
            version, status, *_ = status_line.split(" ", 2)
            headers = [
                (k.strip().lower(), v.strip()) for k, v in (line.split(":", 1) for line in header_lines)
            ]
            if int(status) >= 200:
                break
        mapping = dict(headers)
        if "content-length" in mapping:
            body = self._read_exact(int(mapping["content-length"]))
        elif mapping.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._read_until(b"\r\n")
                    break
                body += self._read_exact(size)
                assert self._read_exact(2) == b"\r\n"
        elif int(status) in (204, 304):
            body = b""
        else:
            while self._fill():
                pass
            body = bytes(self.buffer)
            self.buffer.clear()
        return Response(int(status), mapping, body, version.split("/")[1].encode(), headers)

    def expect_closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (reads until EOF)."""
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                pass
            return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False


def client_request_bytes(
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    host: str = "127.0.0.1",
) -> bytes:
    """An HTTP/1.1 request with Host and, for a body, Content-Length."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def rpc_bytes(
    method: str, params: dict[str, Any] | None = None, request_id: Any = 1, **headers: str
) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if request_id is not None:
        message["id"] = request_id
    if params is not None:
        message["params"] = params
    all_headers = {**MCP_HEADERS, **{k.replace("_", "-"): v for k, v in headers.items()}}
    return client_request_bytes("POST", "/mcp", orjson.dumps(message), all_headers)


class OpenStream:
    """A response read as it arrives: the head first, then chunks, then SSE events.

    Uses the RawClient's buffer so the same connection can carry a later request.
    """

    def __init__(self, client: RawClient, timeout: float = 5.0) -> None:
        self.client = client
        client.sock.settimeout(timeout)
        head = client._read_until(b"\r\n\r\n").decode("latin-1")
        status_line, *lines = head.split("\r\n")
        self.status = int(status_line.split(" ", 2)[1])
        self.headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        self.raw = bytearray()  # de-chunked body so far
        self.ended = False  # the terminating chunk (or EOF) was seen
        self.eof = False
        self._text = ""
        if "content-length" in self.headers:
            self.raw += client._read_exact(int(self.headers["content-length"]))
            self._text += self.raw.decode()
            self.ended = True
        else:
            assert self.headers.get("transfer-encoding", "").lower() == "chunked", self.headers

    def read_chunk(self, timeout: float) -> bytes | None:
        """The next chunk's data; None at the end of the body. Raises TimeoutError."""
        if self.ended:
            return None
        self.client.sock.settimeout(timeout)
        try:
            size = int(self.client._read_until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self.client._read_until(b"\r\n")
                self.ended = True
                return None
            data = self.client._read_exact(size)
            assert self.client._read_exact(2) == b"\r\n"
        except (ConnectionError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                raise
            self.ended = self.eof = True
            return None
        self.raw += data
        self._text += data.decode()
        return data

    def next_message(self, timeout: float = 5.0) -> Any:
        """The next SSE event's JSON data; None when the stream ended first."""
        deadline = time.monotonic() + timeout
        while True:
            while "\n\n" in self._text:
                block, self._text = self._text.split("\n\n", 1)
                data = [line[5:].lstrip() for line in block.splitlines() if line.startswith("data:")]
                if data and "".join(data):
                    return orjson.loads("\n".join(data))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no SSE event in time")
            if self.read_chunk(remaining) is None:
                return None

    def rest(self, timeout: float = 5.0) -> list[Any]:
        """Every remaining SSE message until the stream ends."""
        messages = []
        while (message := self.next_message(timeout)) is not None:
            messages.append(message)
        return messages
