"""Peer: the raw ceiling — a bare uvloop ``asyncio.Protocol`` with no framework at all.

For each HTTP/1.1 request it finds the end of the head, reads ``Content-Length`` bytes of body,
``orjson``-parses the body and answers a ``tools/call`` result built from the request's ``id`` and
``params.arguments.message`` (echoed, so the harness's correctness check is honest, not just
"hello" baked in). Keep-alive; pipelined requests in one read are answered in order. A connection
that starts with the HTTP/2 preface is served over HTTP/2 (prior knowledge, h2load) on the ``h2``
state machine, with the same least work per stream.

It does the least work any correct-looking server could do: no header validation, no routing, no
JSON-RPC envelope checks. Whatever mcp_fast loses against it is the price of doing the job right
(plus whatever we waste).

    .bench-venv/bin/python bench/peers/raw_ceiling.py --port 8002
"""

from __future__ import annotations

import argparse
import asyncio

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import orjson
import uvloop

_HEAD_END = b"\r\n\r\n"
_CL = b"content-length:"
_RESPONSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
_BAD = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _answer(body: bytes | memoryview) -> bytes:
    """The echo result for a tools/call body (ValueError/KeyError/TypeError when it is not one)."""
    req = orjson.loads(body)
    message = req["params"]["arguments"]["message"]
    return orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": req["id"],
            "result": {"content": [{"type": "text", "text": message}], "isError": False},
        }
    )


class RawH2:
    """The same least work over HTTP/2 cleartext (prior knowledge), on the ``h2`` state machine
    -- what mcp_fast's HTTP/2 layer is built on, so this is the ceiling for that layer."""

    def __init__(self, transport: asyncio.Transport) -> None:
        config = h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.transport = transport
        self.bodies: dict[int, bytearray] = {}

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.transport.write(conn.data_to_send())
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.bodies[event.stream_id] = bytearray()
            elif isinstance(event, h2.events.DataReceived):
                self.bodies[event.stream_id] += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                body = self.bodies.pop(event.stream_id, bytearray())
                try:
                    answer = _answer(body)
                    status = b"200"
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    answer, status = b"", b"400"
                headers = [(b":status", status), (b"content-type", b"application/json"),
                           (b"content-length", str(len(answer)).encode())]  # fmt: skip
                conn.send_headers(event.stream_id, headers, end_stream=not answer)
                if answer:
                    conn.send_data(event.stream_id, answer, end_stream=True)
            elif isinstance(event, h2.events.StreamReset):
                self.bodies.pop(event.stream_id, None)
        self.transport.write(conn.data_to_send())


def _content_length(head: bytes) -> int:
    lower = head.lower()
    i = lower.find(_CL)
    if i < 0:
        return 0
    j = lower.find(b"\r\n", i)
    return int(lower[i + len(_CL) : j if j >= 0 else len(lower)])


class RawProtocol(asyncio.Protocol):
    __slots__ = ("buf", "h2", "need", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.h2: RawH2 | None = None
        self.buf = bytearray()
        # Bytes the request being received needs in total, once its head is known: a large body
        # arriving in many reads is not rescanned for the head on each one.
        self.need = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass; it has the same methods.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.h2 is not None:
            self.h2.data_received(data)
            return
        buf = self.buf
        if not buf and self.transport is not None and data.startswith(_H2_PREFACE):
            self.h2 = RawH2(self.transport)  # HTTP/2 with prior knowledge (h2load)
            self.h2.data_received(data)
            return
        buf += data
        transport = self.transport
        if transport is None or len(buf) < self.need:
            return
        out: list[bytes] = []
        while True:
            end = buf.find(_HEAD_END)
            if end < 0:
                break
            try:
                length = _content_length(bytes(buf[:end]))
            except ValueError:
                transport.write(_BAD)
                transport.close()
                return
            start = end + 4
            if len(buf) < start + length:
                self.need = start + length
                break
            self.need = 0
            try:
                body = _answer(memoryview(buf)[start : start + length])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                transport.write(_BAD)
                transport.close()
                return
            del buf[: start + length]
            out.append(_RESPONSE_HEAD + str(len(body)).encode() + b"\r\n\r\n" + body)
        if out:
            transport.writelines(out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(RawProtocol, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
