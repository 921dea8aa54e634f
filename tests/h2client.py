"""HTTP/2 test clients built on the `h2` library in client mode (independent of the server's code).

- `H2Peer`: a sans-I/O client; produces wire bytes and parses the server's answers per stream.
- `H2Socket`: the same over a real TCP socket (h2c with prior knowledge), blocking with timeouts.
- `frame(...)` / raw frame builders (hyperframe) for hostile sequences h2 would refuse to send.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import orjson
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MCP_HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
}


@dataclass
class Answer:
    """What one stream received."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    informational: list[int] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None  # RST_STREAM error code from the server

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    def json(self) -> Any:
        return orjson.loads(bytes(self.body))

    def sse_messages(self) -> list[Any]:
        messages = []
        for block in bytes(self.body).decode().split("\n\n"):
            data = [line[5:].lstrip() for line in block.splitlines() if line.startswith("data:")]
            if data and "".join(data):
                messages.append(orjson.loads("\n".join(data)))
        return messages

    def message(self) -> Any:
        """The JSON-RPC answer, whether sent as JSON or as the last SSE event."""
        if self.headers.get("content-type", "").startswith("text/event-stream"):
            return self.sse_messages()[-1]
        return self.json()


class H2Peer:
    """A sans-I/O HTTP/2 client. ``auto_ack``: give back the window of every DATA received."""

    def __init__(self, settings: dict[int, int] | None = None, auto_ack: bool = True) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        if settings:
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings)  # type: ignore[arg-type]
        self.conn.initiate_connection()
        self.auto_ack = auto_ack
        self.answers: dict[int, Answer] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.events: list[h2.events.Event] = []
        self.pending: dict[int, tuple[bytes, bool]] = {}  # request bodies waiting for window

    def request(
        self,
        method: str = "POST",
        path: str = "/mcp",
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        body: bytes = b"",
        *,
        authority: str = "localhost",
        end: bool = True,
    ) -> int:
        sid: int = self.conn.get_next_available_stream_id()
        items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        fields = [
            (":method", method),
            (":path", path),
            (":scheme", "http"),
            (":authority", authority),
            *items,
        ]
        encoded = [(k.encode(), v.encode()) for k, v in fields]
        self.conn.send_headers(sid, encoded, end_stream=end and not body)
        self.answers[sid] = Answer()
        if body:
            sent = self.send_body(sid, body, end=end)
            if sent < len(body):
                self.pending[sid] = (body[sent:], end)
        return sid

    def send_body(self, sid: int, body: bytes, end: bool = True) -> int:
        """Send as much of ``body`` as the windows allow now; returns the bytes sent
        (``request`` sends the rest as the server gives the window back)."""
        sent = 0
        while sent < len(body):
            window = self.conn.local_flow_control_window(sid)
            if window <= 0:
                break
            chunk = body[sent : sent + min(window, self.conn.max_outbound_frame_size)]
            self.conn.send_data(sid, chunk)
            sent += len(chunk)
        if sent == len(body) and end:
            self.conn.end_stream(sid)
        return sent

    def data(self) -> bytes:
        out: bytes = self.conn.data_to_send()
        return out

    def receive(self, data: bytes) -> list[h2.events.Event]:
        events: list[h2.events.Event] = self.conn.receive_data(data)
        self.events += events
        for ev in events:
            sid = getattr(ev, "stream_id", None)
            answer = self.answers.setdefault(sid, Answer()) if sid else None
            if isinstance(ev, h2.events.ResponseReceived):
                assert answer is not None
                fields = {k.decode(): v.decode() for k, v in ev.headers}
                answer.status = int(fields.pop(":status"))
                answer.headers = fields
            elif isinstance(ev, h2.events.InformationalResponseReceived):
                assert answer is not None
                answer.informational.append(int(dict(ev.headers)[b":status"]))
            elif isinstance(ev, h2.events.DataReceived):
                assert answer is not None
                answer.body += ev.data
                if self.auto_ack:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                assert answer is not None
                answer.ended = True
            elif isinstance(ev, h2.events.StreamReset):
                assert answer is not None
                answer.reset = int(ev.error_code)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev
        for sid, (rest, end) in list(self.pending.items()):
            if self.answers[sid].done or self.goaway is not None:
                del self.pending[sid]
                continue
            sent = self.send_body(sid, rest, end)
            if sent == len(rest):
                del self.pending[sid]
            else:
                self.pending[sid] = (rest[sent:], end)
        return events


def connect(
    host: str, port: int, timeout: float, ssl_context: ssl.SSLContext | None, rcvbuf: int | None = None
) -> socket.socket:
    """A TCP connection, or a TLS one when ``ssl_context`` is given (its ALPN decides the protocol)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect((host, port))
    if ssl_context is None:
        return sock
    return ssl_context.wrap_socket(sock, server_hostname=host)


def client_context(cafile: str | Path, alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLContext:
    """A TLS client context that trusts ``cafile`` and offers ``alpn``."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.set_alpn_protocols(list(alpn))
    return context


class H2Socket(H2Peer):
    """An HTTP/2 client over a real socket: prior knowledge, or TLS with ALPN h2."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        timeout: float = 10.0,
        settings: dict[int, int] | None = None,
        auto_ack: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(settings, auto_ack)
        self.sock = connect(host, port, timeout, ssl_context)
        self.timeout = timeout
        self.closed = False
        self.flush()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> H2Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        data = self.data()
        if data:
            self.sock.sendall(data)

    def pump(self, timeout: float | None = None) -> bool:
        """Read once and process; False when the server closed the connection."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.receive(chunk)
        self.flush()
        return True

    def wait(self, *sids: int, timeout: float | None = None) -> None:
        """Read until each stream has ended or was reset."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not all(self.answers[sid].done for sid in sids):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"streams {sids} not done")
            if not self.pump(left):
                raise ConnectionError("the server closed the connection")

    def call(
        self,
        body: bytes,
        headers: dict[str, str] | None = None,
        method: str = "POST",
        path: str = "/mcp",
    ) -> Answer:
        sid = self.request(method, path, {**MCP_HEADERS, **(headers or {})}, body)
        self.flush()
        self.wait(sid)
        return self.answers[sid]

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)


def rpc(method: str, params: dict[str, Any] | None = None, request_id: int | None = 1) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if request_id is not None:
        message["id"] = request_id
    if params is not None:
        message["params"] = params
    return orjson.dumps(message)


# -- raw frames (hyperframe) -------------------------------------------------------------


def frame_bytes(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """Any frame, valid or not (RFC 9113 section 4.1 layout)."""
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload


def frames_of(data: bytes) -> list[Frame]:
    """Split server output into frames (hyperframe), for checks the h2 client cannot make."""
    frames = []
    view = memoryview(data)
    while view:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9 : 9 + length])
        frames.append(frame)
        view = view[9 + length :]
    return frames


def raw(frame: Frame) -> bytes:
    out: bytes = frame.serialize()
    return out


def settings_frame(values: dict[int, int] | None = None, ack: bool = False) -> bytes:
    f = SettingsFrame(0, settings=values or {})
    if ack:
        f.flags.add("ACK")
    return raw(f)


def headers_frame(sid: int, block: bytes, end_stream: bool = True, end_headers: bool = True) -> bytes:
    f = HeadersFrame(sid, data=block)
    if end_stream:
        f.flags.add("END_STREAM")
    if end_headers:
        f.flags.add("END_HEADERS")
    return raw(f)


def continuation_frame(sid: int, block: bytes, end_headers: bool = False) -> bytes:
    f = ContinuationFrame(sid, data=block)
    if end_headers:
        f.flags.add("END_HEADERS")
    return raw(f)


def data_frame(sid: int, data: bytes, end_stream: bool = False) -> bytes:
    f = DataFrame(sid, data=data)
    if end_stream:
        f.flags.add("END_STREAM")
    return raw(f)


def rst_frame(sid: int, code: int = 8) -> bytes:
    return raw(RstStreamFrame(sid, error_code=code))


def ping_frame(payload: bytes = b"\0" * 8) -> bytes:
    return raw(PingFrame(0, opaque_data=payload))


def window_update_frame(sid: int, increment: int) -> bytes:
    return raw(WindowUpdateFrame(sid, window_increment=increment))


def encode_block(fields: list[tuple[bytes, bytes]]) -> bytes:
    """An HPACK block from a fresh encoder (no dynamic-table references)."""
    import hpack

    encoder = hpack.Encoder()
    out: bytes = encoder.encode(fields)
    return out


def get_headers(
    path: bytes = b"/mcp", extra: list[tuple[bytes, bytes]] | None = None
) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":path", path),
        (b":scheme", b"http"),
        (b":authority", b"localhost"),
        *(extra or []),
    ]
