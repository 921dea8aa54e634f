"""Sans-I/O HTTP/2 server side (RFC 9113), on our own frame layer.

No asyncio and no I/O here. The network layer feeds received bytes to
``H2Connection.receive_data`` and pulls events with ``next_event`` (h11 style,
like ``h1.H1Connection``): ``Request`` (head plus complete body, with its
``stream_id``), ``StreamReset`` (a stream the application holds ended without
a complete exchange), ``CONNECTION_CLOSED``; a broken connection raises
``ProtocolError`` once the events before the error were taken. Answers go out
through ``respond`` / ``start_stream`` / ``send_data`` / ``end_stream`` /
``reset``, and ``data_to_send`` returns the bytes to write.

The pieces, each in its own module: ``h2frames`` (the frame header, each frame
type's payload rules, the frames we write), ``h2hpack`` (HPACK: the ``hpack``
package decodes, our encoder caches the encoding of constant header sets),
``h2streams`` (stream states as a transition table), ``h2settings`` (the peer's
SETTINGS and the receive windows). This module is the connection: it reads one
frame at a time and acts on it before the next, so the outcome depends on the
frame sequence only, never on how the bytes were split into reads. It enforces,
where the bytes arrive:

* Frame headers are judged from their 9 bytes, before the payload is buffered: an
  overlong frame is FRAME_SIZE_ERROR at once, a header block that grows past
  twice ``max_header_bytes`` or 32 frames is a CONTINUATION flood
  (CVE-2024-27316 family), RST_STREAM frames spend a reset budget (rapid reset,
  CVE-2023-44487) and frames that cost work without carrying any (PING, SETTINGS,
  PRIORITY, empty DATA) spend a control-frame budget. An exhausted budget is
  GOAWAY ENHANCE_YOUR_CALM. HPACK decoding stops at twice ``max_header_bytes`` of
  decoded fields (HPACK bombs).
* Request limits answer that stream only: a field section over
  ``max_header_bytes`` (RFC 9113 section 6.5.2 size) or ``max_header_count``
  fields gets 431, a ``:path`` over ``max_target_bytes`` 414, a body over
  ``max_body_bytes`` 413 (a Content-Length over it before any DATA). The
  answer is followed by RST_STREAM(NO_ERROR) when the body is still coming
  (RFC 9113 section 8.1), and the stream's data is dropped from then on.
* A malformed request (section 8.1.1) is a stream error PROTOCOL_ERROR: a 400
  response without END_STREAM, then RST_STREAM(PROTOCOL_ERROR); the connection's
  other streams go on. A header block that cannot be decoded is a connection
  error COMPRESSION_ERROR (section 4.3); the client preface must be followed by a
  SETTINGS frame (section 3.4).
* Request bodies are flow-controlled end to end: received DATA is
  acknowledged (WINDOW_UPDATE) only as it is taken into the stream's body
  buffer, which is bounded by ``max_body_bytes``.
* SETTINGS_MAX_CONCURRENT_STREAMS is advertised and enforced with
  REFUSED_STREAM (section 5.1.2). A stream counts against it until the
  application is done with it (``release``), not just until the client resets
  it, so resetting streams cannot make the server run more handlers at once.
* Output honours the peer's flow-control windows (section 6.9): what does not fit
  is queued per stream and sent by ``flush`` when WINDOW_UPDATE or SETTINGS opens
  the window. ``queued`` tells the network layer how much a stream has waiting.
* Memory a client can pin is bounded per connection: partial request bodies plus
  queued output stay under ``max_connection_buffer``. An answer that does not fit
  resets its stream (ENHANCE_YOUR_CALM) and starts a graceful GOAWAY: new streams
  are refused and the connection closes once the streams in flight are done (or
  reset by the write timeout). A request body that does not fit refuses its
  stream (REFUSED_STREAM), with the same GOAWAY. Both spend the reset budget.

Time comes from an injected clock (for the budgets and ``check_timeouts``).
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from mcp_fast.wire import h2frames as frames
from mcp_fast.wire.events import (
    CONNECTION_CLOSED,
    NEED_DATA,
    Body,
    Event,
    ProtocolError,
    Request,
    StreamReset,
    path_of,
)
from mcp_fast.wire.h2frames import (
    FRAME_HEADER_SIZE,
    MAX_WINDOW,
    PREFACE,
    ErrorCode,
    Flag,
    FrameError,
    FrameType,
    Setting,
)
from mcp_fast.wire.h2hpack import (
    DecodeError,
    HeaderDecoder,
    HeaderEncoder,
    HeaderListTooLarge,
    content_length_field,
    encode_fields,
)
from mcp_fast.wire.h2request import CONNECTION_SPECIFIC, Head, field_problem, parse_head
from mcp_fast.wire.h2settings import PeerSettings, ReceiveWindow, window_update_due
from mcp_fast.wire.h2streams import Input, State, Stream

__all__ = ["PREFACE", "ErrorCode", "H2Connection", "H2Limits", "H2Timeouts"]


@dataclass(frozen=True, slots=True)
class H2Limits:
    """Per-connection limits; see the module docstring for what each answers."""

    max_header_bytes: int = 16 * 1024  # field section size (RFC 9113 6.5.2) -> 431
    max_header_count: int = 100  # fields other than pseudo-header fields -> 431
    max_target_bytes: int = 8 * 1024  # :path -> 414
    max_body_bytes: int = 4 * 1024 * 1024  # -> 413
    max_concurrent_streams: int = 100  # SETTINGS_MAX_CONCURRENT_STREAMS -> REFUSED_STREAM
    # Rapid reset (CVE-2023-44487): RST_STREAM frames received plus streams we
    # refused or reset for memory, as a token bucket: a burst, then a rate per second.
    reset_burst: int = 200
    reset_rate: float = 50.0
    # PING, SETTINGS, PRIORITY and empty DATA frames (CVE-2019-9512/9515/9518).
    control_burst: int = 1000
    control_rate: float = 100.0
    # Partial request bodies plus output waiting for the client's windows, per connection.
    max_connection_buffer: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if min(self.max_header_bytes, self.max_header_count, self.max_target_bytes) < 1:
            raise ValueError("H2Limits: header and target limits must be positive")
        if self.max_body_bytes < 0:
            raise ValueError("H2Limits: max_body_bytes must not be negative")
        if not 1 <= self.max_concurrent_streams < 2**31:
            raise ValueError("H2Limits: max_concurrent_streams must be between 1 and 2**31 - 1")
        if self.max_connection_buffer < 1:
            raise ValueError("H2Limits: max_connection_buffer must be positive")


@dataclass(frozen=True, slots=True)
class H2Timeouts:
    """Seconds; checked by ``check_timeouts``."""

    header: float = 10.0  # the client preface, and each header block (HEADERS + CONTINUATION)
    body: float = 30.0  # a request body, from the end of its head
    idle: float = 75.0  # the connection has no open stream
    write: float = 30.0  # a stream with output waiting whose window the peer keeps shut


# Frame types and flags as plain ints (enum arithmetic is slow on the hot path).
_DATA: Final = int(FrameType.DATA)
_HEADERS: Final = int(FrameType.HEADERS)
_PRIORITY: Final = int(FrameType.PRIORITY)
_RST_STREAM: Final = int(FrameType.RST_STREAM)
_SETTINGS: Final = int(FrameType.SETTINGS)
_PUSH_PROMISE: Final = int(FrameType.PUSH_PROMISE)
_PING: Final = int(FrameType.PING)
_GOAWAY: Final = int(FrameType.GOAWAY)
_WINDOW_UPDATE: Final = int(FrameType.WINDOW_UPDATE)
_CONTINUATION: Final = int(FrameType.CONTINUATION)
_END_STREAM: Final = int(Flag.END_STREAM)
_ACK: Final = int(Flag.ACK)
_END_HEADERS: Final = int(Flag.END_HEADERS)
_PRIORITY_FLAG: Final = int(Flag.PRIORITY)
_STREAM_FRAMES: Final = frozenset((_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _PUSH_PROMISE, _CONTINUATION))
_CONNECTION_FRAMES: Final = frozenset((_SETTINGS, _PING, _GOAWAY))
_unpack_header: Final = frames.HEADER.unpack_from
# SETTINGS_MAX_FRAME_SIZE we advertise (the RFC 9113 section 6.5.2 initial value).
_MAX_FRAME: Final = frames.MIN_MAX_FRAME_SIZE
# Frames in one header block.
_MAX_BLOCK_FRAMES: Final = 32
# Stream ids we reset, remembered so that the frames the client sent before it saw
# the reset are ignored (RFC 9113 section 5.1, "closed").
_RESETS_KEPT: Final = 2048
# DATA framed by one write call; the rest waits for ``flush`` (so a huge answer
# reaches the transport at the pace the transport drains, and is counted meanwhile).
_WRITE_NOW: Final = 256 * 1024

# Parsed request heads remembered per connection.
_HEADS_KEPT: Final = 64
# Bodies at least this long are handed out as a memoryview (as h1 does).
_ZERO_COPY_MIN: Final = 8192

# RFC 9113 section 8.2.1: no NUL, CR or LF in a response field value.
_BAD_NAME: Final = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]")
_BAD_VALUE: Final = re.compile(rb"[\x00\r\n]")
_TEXT_PLAIN: Final = ((b"content-type", b"text/plain; charset=utf-8"),)

_Fields = list[tuple[bytes, bytes]]
# (status, constant header tuple) -> the encoded field block (without content-length).
_BLOCK_CACHE: dict[tuple[int, tuple[tuple[bytes, bytes], ...]], bytes] = {}
_BLOCK_CACHE_MAX: Final = 64
_CONTINUE_BLOCK: Final = encode_fields([(b":status", b"100")])


# ---------------------------------------------------------------------------
# Helpers


class _Budget:
    """A token bucket: ``burst`` events at once, then ``rate`` per second."""

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, burst: int, rate: float, now: float) -> None:
        self._burst = float(burst)
        self._rate = rate
        self._tokens = float(burst)
        self._at = now

    def spend(self, now: float) -> bool:
        """Take one token; False when the bucket is empty."""
        tokens = self._tokens + (now - self._at) * self._rate
        self._at = now
        if tokens > self._burst:
            tokens = self._burst
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


class _Failed:
    """Marks the place of a connection error among the queued events."""

    __slots__ = ()


_FAILED: Final = _Failed()


def _status_bytes(status: int) -> bytes:
    if not 100 <= status <= 999:
        raise ValueError("invalid HTTP status code")
    return b"%d" % status


def _field_list(status: int, headers: Sequence[tuple[bytes, bytes]]) -> _Fields:
    """:status plus the fields, lower-cased, connection-specific ones dropped (RFC 9113 8.2.2)."""
    fields: _Fields = [(b":status", _status_bytes(status))]
    for name, value in headers:
        name = name.lower()
        if name in CONNECTION_SPECIFIC or (name == b"te" and value.lower() != b"trailers"):
            continue
        if not name or _BAD_NAME.search(name) is not None:
            raise ValueError("invalid response header name")
        if _BAD_VALUE.search(value) is not None:
            raise ValueError("NUL, CR or LF in a response header value")
        fields.append((name, value.strip(b" \t")))
    return fields


def _response_block(status: int, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The response's encoded fields; constant header sets (tuples) are encoded once."""
    if type(headers) is not tuple:
        return encode_fields(_field_list(status, headers))
    key = (status, headers)
    block = _BLOCK_CACHE.get(key)
    if block is None:
        block = encode_fields(_field_list(status, headers))
        if len(_BLOCK_CACHE) < _BLOCK_CACHE_MAX:
            _BLOCK_CACHE[key] = block
    return block


# ---------------------------------------------------------------------------
# The connection


class H2Connection:
    """Server side of one HTTP/2 connection, without I/O.

    Starts after the client preface was recognised (the preface itself is the
    first thing ``receive_data`` expects). ``receive_data(b"")`` signals EOF.
    """

    __slots__ = (
        "_block",
        "_block_end",
        "_block_frames",
        "_block_id",
        "_block_since",
        "_born",
        "_buffered",
        "_clock",
        "_control",
        "_dead",
        "_decoder",
        "_draining",
        "_encoder",
        "_eof",
        "_error",
        "_events",
        "_failed",
        "_first_frame",
        "_header_checked",
        "_heads",
        "_heads_generation",
        "_highest",
        "_idle_since",
        "_inbuf",
        "_limits",
        "_out",
        "_output_blocked",
        "_peer",
        "_peer_reset_ids",
        "_preface_done",
        "_preface_left",
        "_queued",
        "_recv",
        "_reset_ids",
        "_reset_order",
        "_resets",
        "_send_window",
        "_streams",
        "_timeouts",
        "_wanted",
        "client",
        "error_code",
    )

    def __init__(
        self,
        limits: H2Limits = H2Limits(),
        timeouts: H2Timeouts = H2Timeouts(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = limits
        self._timeouts = timeouts
        self._clock = clock
        # The peer's address, put on every request (set by the network adapter).
        self.client: tuple[str, int] | None = None
        now = clock()
        # HPACK decoding stops (ENHANCE_YOUR_CALM) at twice the limit: between the two
        # the request gets a 431 instead.
        block_cap = 2 * limits.max_header_bytes
        self._decoder = HeaderDecoder(block_cap)
        self._encoder = HeaderEncoder()
        self._heads: dict[bytes, Head] = {}  # parsed heads of reusable header blocks
        self._heads_generation = 0
        self._peer = PeerSettings()
        self._recv = ReceiveWindow()
        self._send_window = frames.DEFAULT_WINDOW  # the connection's (section 6.9.1)
        self._streams: dict[int, Stream] = {}
        self._queued: dict[int, Stream] = {}  # streams with output waiting for window
        self._buffered = 0  # partial request bodies + queued output (max_connection_buffer)
        self._highest = 0  # the highest stream id the client opened
        self._reset_ids: set[int] = set()  # streams we reset (their late frames are ignored)
        self._peer_reset_ids: set[int] = set()  # streams the client reset
        self._reset_order: deque[int] = deque()  # both, oldest first (bounded)
        self._events: deque[Event | _Failed] = deque()
        # Our SETTINGS: the server connection preface (section 3.4).
        self._out: list[Body] = [
            frames.settings(
                {
                    Setting.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                    # Section 6.5.2: advisory; above it a request gets 431.
                    Setting.MAX_HEADER_LIST_SIZE: limits.max_header_bytes,
                }
            )
        ]
        self._error: ProtocolError | None = None
        self._failed = False
        self.error_code: ErrorCode | None = None  # the GOAWAY code of a failed connection
        self._dead = False  # nothing more is sent (GOAWAY sent or received)
        self._eof = False
        self._draining = False  # graceful GOAWAY sent: new streams are refused
        self._output_blocked = False
        # Input.
        self._preface_left = len(PREFACE)
        self._inbuf = bytearray()  # a frame (or header) that continues in a later read
        self._wanted = 0  # bytes _inbuf must hold before it is worth looking at again
        self._header_checked = False  # the frame at the start of _inbuf was judged already
        self._first_frame = True
        self._block = bytearray()  # a header block waiting for its CONTINUATION frames
        self._block_id = 0
        self._block_end = False  # the block's HEADERS had END_STREAM
        self._block_frames = 0
        self._block_since = 0.0  # a header block is in progress since (0: none)
        self._preface_done = False
        self._resets = _Budget(limits.reset_burst, limits.reset_rate, now)
        self._control = _Budget(limits.control_burst, limits.control_rate, now)
        # Timers.
        self._born = now
        self._idle_since = now

    # -- state for the network layer ---------------------------------------------

    @property
    def open_streams(self) -> int:
        """Streams that count against the concurrency limit."""
        return len(self._streams)

    @property
    def has_queued(self) -> bool:
        """Some stream has output waiting (for window, or for ``flush``)."""
        return bool(self._queued)

    @property
    def has_events(self) -> bool:
        """``next_event`` has something (a write may have reset a stream)."""
        return bool(self._events)

    @property
    def buffered(self) -> int:
        """Bytes held for this connection: partial request bodies and queued output."""
        return self._buffered

    @property
    def closed(self) -> bool:
        """Nothing more can be sent: a GOAWAY went out or came in."""
        return self._dead

    @property
    def draining(self) -> bool:
        return self._draining

    def queued(self, stream_id: int) -> int:
        """Bytes of ``stream_id`` waiting to be sent (0 for an unknown stream)."""
        st = self._streams.get(stream_id)
        return 0 if st is None else st.queued

    def set_output_blocked(self, blocked: bool) -> None:
        """While the transport's buffer is full, DATA waits in the stream queues
        instead of being framed, so a stream's backlog stays measurable."""
        self._output_blocked = blocked

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add received bytes; ``b""`` means the peer closed its side.

        Frames are handled one at a time, each before the next is looked at: what
        the core does about a frame (a refusal, a reset, a WINDOW_UPDATE) is in
        effect for the next one, and the outcome does not depend on how the bytes
        were split into reads.
        """
        if self._dead or self._eof or self._error is not None:
            return
        if not data:
            self._eof = True
            self._events.append(CONNECTION_CLOSED)
            return
        inbuf = self._inbuf
        if inbuf:
            inbuf += data
            if len(inbuf) < self._wanted:
                return  # (a frame's payload is at most _MAX_FRAME bytes: bounded)
            data = bytes(inbuf)
            inbuf.clear()
        self._read(data)

    def _read(self, data: bytes) -> None:
        n = len(data)
        i = 0
        if self._preface_left:
            i = self._read_preface(data)
            if i < 0:
                return
        checked = self._header_checked
        self._header_checked = False
        while not self._dead:
            if n - i < FRAME_HEADER_SIZE:
                if i < n:
                    self._inbuf += data[i:]
                    self._wanted = FRAME_HEADER_SIZE
                return
            length, flags, stream_id = _unpack_header(data, i)
            kind = length & 0xFF
            length >>= 8
            stream_id &= 0x7FFFFFFF  # (the reserved bit is ignored, section 4.1)
            if not checked and not self._judge_header(length, kind, flags, stream_id):
                return
            checked = False
            end = i + FRAME_HEADER_SIZE + length
            if end > n:
                self._inbuf += data[i:]
                self._wanted = FRAME_HEADER_SIZE + length
                self._header_checked = True
                return
            payload = data[i + FRAME_HEADER_SIZE : end]
            i = end
            try:
                self._on_frame(kind, flags, stream_id, payload)
            except FrameError as exc:
                if exc.stream_id:
                    self._stream_error(exc.stream_id, exc.code)
                else:
                    self._die(exc.code, exc.reason)

    def _read_preface(self, data: bytes) -> int:
        """Match the client preface's magic (section 3.4); the offset after it, or -1."""
        left = self._preface_left
        start = len(PREFACE) - left
        take = min(left, len(data))
        if data[:take] != PREFACE[start : start + take]:
            # Section 3.4: a connection error; the GOAWAY may be omitted, since the peer
            # is not speaking HTTP/2.
            self._dead = True
            self._fail(ErrorCode.PROTOCOL_ERROR, "invalid HTTP/2 connection preface")
            return -1
        self._preface_left = left - take
        return -1 if self._preface_left else take

    def next_event(self) -> Event:
        """The next event, ``NEED_DATA`` when none; raises ``ProtocolError``
        (sticky) once the events before a connection error were taken."""
        if not self._failed and self._events:
            event = self._events.popleft()
            if event is not _FAILED:
                assert not isinstance(event, _Failed)
                return event
            self._failed = True
        if self._failed:
            error = self._error
            assert error is not None
            raise ProtocolError(error.status, error.reason)
        return CONNECTION_CLOSED if self._dead or self._eof else NEED_DATA

    # -- frame headers: the limits that act before a payload is buffered -------

    def _judge_header(self, length: int, kind: int, flags: int, stream_id: int) -> bool:
        """One frame header; False when it ends the connection."""
        self._preface_done = True
        if length > _MAX_FRAME:
            # RFC 9113 section 4.2: FRAME_SIZE_ERROR, decided before buffering it.
            return self._refuse_frame(ErrorCode.FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
        if self._first_frame:
            self._first_frame = False
            if kind != _SETTINGS or flags & _ACK:
                # Section 3.4: the preface's magic is followed by a SETTINGS frame.
                return self._refuse_frame(ErrorCode.PROTOCOL_ERROR, "the client preface lacks its SETTINGS")
        if kind in _STREAM_FRAMES:
            if not stream_id:
                # Sections 6.1-6.4, 6.10: these frames belong to a stream.
                return self._refuse_frame(ErrorCode.PROTOCOL_ERROR, "a stream's frame on stream 0")
        elif kind in _CONNECTION_FRAMES and stream_id:
            # Sections 6.5, 6.7, 6.8: these frames belong to the connection.
            return self._refuse_frame(ErrorCode.PROTOCOL_ERROR, "a connection's frame on a stream")
        if self._block_since:
            # Section 6.10: inside a header block only CONTINUATION frames of its
            # stream may follow.
            if kind != _CONTINUATION or stream_id != self._block_id:
                return self._refuse_frame(ErrorCode.PROTOCOL_ERROR, "header block interrupted")
            self._block_frames += 1
            if len(self._block) + length > 2 * self._limits.max_header_bytes or (
                self._block_frames > _MAX_BLOCK_FRAMES
            ):
                return self._refuse_frame(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
            return True
        if kind == _HEADERS:
            if length > 2 * self._limits.max_header_bytes:
                return self._refuse_frame(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
            return True
        if kind == _DATA:
            if length or flags & _END_STREAM:
                return True
        elif kind == _RST_STREAM:
            if self._resets.spend(self._clock()):
                return True
            return self._refuse_frame(ErrorCode.ENHANCE_YOUR_CALM, "too many stream resets")
        elif kind in (_PING, _SETTINGS):
            if flags & _ACK:
                return True
        elif kind == _CONTINUATION:
            return self._refuse_frame(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        elif kind != _PRIORITY:
            return True
        if self._control.spend(self._clock()):
            return True
        return self._refuse_frame(ErrorCode.ENHANCE_YOUR_CALM, "too many control frames")

    def _refuse_frame(self, code: ErrorCode, reason: str) -> bool:
        self._die(code, reason)
        return False

    # -- frames ----------------------------------------------------------------

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        """One complete frame (section 6); raises ``FrameError``."""
        if kind == _HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif kind == _DATA:
            self._on_data_frame(flags, stream_id, payload)
        elif kind == _CONTINUATION:
            self._on_continuation(flags, payload)
        elif kind == _WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == _SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif kind == _PING:
            if stream_id:
                raise FrameError(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise FrameError(ErrorCode.FRAME_SIZE_ERROR, "PING of the wrong size")
            if not flags & _ACK:
                self._out.append(frames.ping_ack(payload))  # section 6.7
        elif kind == _RST_STREAM:
            self._on_rst_stream(stream_id, payload)
        elif kind == _PRIORITY:
            if not stream_id:
                raise FrameError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
            frames.check_priority(payload, stream_id)  # otherwise ignored (section 5.3.2)
        elif kind == _GOAWAY:
            self._on_goaway(stream_id, payload)
        elif kind == _PUSH_PROMISE:
            raise FrameError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client")  # section 8.4
        # Other frame types are ignored (section 4.1).

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise FrameError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        fragment = frames.unpad(payload, flags, stream_id)
        self_dependent = False
        if flags & _PRIORITY_FLAG:
            if len(fragment) < 5:
                raise FrameError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            self_dependent = int.from_bytes(fragment[:4], "big") & 0x7FFFFFFF == stream_id
            fragment = fragment[5:]
        end_stream = bool(flags & _END_STREAM)
        if not flags & _END_HEADERS:
            self._block += fragment
            self._block_id = stream_id
            self._block_end = end_stream
            self._block_frames = 1
            self._block_since = self._clock()
            return
        self._on_header_block(stream_id, fragment, end_stream, self_dependent)

    def _on_continuation(self, flags: int, payload: bytes) -> None:
        # (_judge_header checked that a header block of this stream is in progress.)
        self._block += payload
        if flags & _END_HEADERS:
            block = bytes(self._block)
            self._block.clear()
            self._block_since = 0.0
            self._on_header_block(self._block_id, block, self._block_end, False)

    def _on_header_block(self, stream_id: int, block: bytes, end_stream: bool, self_dependent: bool) -> None:
        # Every block is decoded, even one we will refuse: the HPACK state is the
        # connection's (section 4.3).
        try:
            fields = self._decoder.decode(block)
        except HeaderListTooLarge as exc:
            raise FrameError(ErrorCode.ENHANCE_YOUR_CALM, "header list too large") from exc
        except DecodeError as exc:
            raise FrameError(ErrorCode.COMPRESSION_ERROR, "header block cannot be decoded") from exc
        if not stream_id % 2:
            raise FrameError(ErrorCode.PROTOCOL_ERROR, "even stream id from a client")  # 5.1.1
        st = self._streams.get(stream_id)
        if st is not None and (st.state is State.OPEN or st.state is State.HALF_CLOSED_LOCAL):
            if not end_stream:
                # Section 8.1: a trailer section ends the stream; anything else is malformed.
                raise FrameError(
                    ErrorCode.PROTOCOL_ERROR, "HEADERS without END_STREAM after the head", stream_id
                )
            self._on_trailers(stream_id, st, fields)
            if not st.closed:  # (malformed trailers reset it)
                self._on_end(stream_id, st)
            return
        if st is not None or stream_id <= self._highest:
            self._on_closed_stream(stream_id, st)
            return
        self._highest = stream_id  # lower idle streams are closed now (section 5.1.1)
        if self_dependent:
            raise FrameError(ErrorCode.PROTOCOL_ERROR, "stream depends on itself", stream_id)  # 5.3.1
        self._on_request(stream_id, self._head(block, fields), end_stream)

    def _on_closed_stream(self, stream_id: int, st: Stream | None) -> None:
        """DATA or a header block on a stream that is not open (RFC 9113 section 5.1)."""
        if st is not None and st.state is State.HALF_CLOSED_REMOTE:
            # "half-closed (remote)": a stream error STREAM_CLOSED.
            raise FrameError(ErrorCode.STREAM_CLOSED, "frame after END_STREAM", stream_id)
        if stream_id in self._reset_ids:
            return  # "closed" by our RST_STREAM: ignored (the client may not have seen it)
        if stream_id in self._peer_reset_ids:
            # "closed" by the client's RST_STREAM: a stream error STREAM_CLOSED.
            raise FrameError(ErrorCode.STREAM_CLOSED, "frame after RST_STREAM", stream_id)
        # "closed" after END_STREAM (ours and the client's): a connection error STREAM_CLOSED.
        raise FrameError(ErrorCode.STREAM_CLOSED, "frame on a closed stream")

    def _head(self, block: bytes, fields: list[tuple[bytes, bytes]]) -> Head:
        """The parsed head of a header block; a block the decoder could reuse (the same
        bytes, the same HPACK table) reuses its parsed head too."""
        decoder = self._decoder
        if decoder.generation != self._heads_generation:
            self._heads.clear()
            self._heads_generation = decoder.generation
        head = self._heads.get(block)
        if head is None:
            head = parse_head(fields)
            if decoder.reusable(block) and len(self._heads) < _HEADS_KEPT:
                self._heads[block] = head
        return head

    def _on_data_frame(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise FrameError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)  # the whole frame counts against the windows (section 6.9.1)
        st = self._streams.get(stream_id)
        if st is None and self._idle(stream_id):
            raise FrameError(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream")  # section 5.1
        self._recv.consume(size)
        data = frames.unpad(payload, flags, stream_id)
        if st is None or st.state is State.CLOSED or st.state is State.HALF_CLOSED_REMOTE:
            self._ack_connection(size)
            self._on_closed_stream(stream_id, st)
            return
        if size > st.recv_window:
            self._ack_connection(size)
            raise FrameError(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the stream window", stream_id)
        st.recv_window -= size
        self._on_data(stream_id, st, data, size, bool(flags & _END_STREAM))

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        increment = frames.window_increment(payload)
        if not stream_id:
            if not increment:
                raise FrameError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")  # section 6.9
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise FrameError(ErrorCode.FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            return
        st = self._streams.get(stream_id)
        if st is None:
            if self._idle(stream_id):
                raise FrameError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return  # a closed stream: allowed (section 6.9)
        if st.closed:
            return
        if not increment:
            raise FrameError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0", stream_id)
        st.send_window += increment
        if st.send_window > MAX_WINDOW:
            raise FrameError(ErrorCode.FLOW_CONTROL_ERROR, "stream window above 2^31-1", stream_id)

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise FrameError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")  # section 6.5
        if flags & _ACK:
            if payload:
                raise FrameError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        peer = self._peer
        delta = peer.apply(frames.settings_of(payload))
        self._encoder.peer_table_size(peer.header_table_size)
        if delta:
            # Section 6.9.2: the change applies to every stream's window, and may
            # make one exceed the maximum (a connection error).
            for st in self._streams.values():
                st.send_window += delta
                if st.send_window > MAX_WINDOW:
                    raise FrameError(ErrorCode.FLOW_CONTROL_ERROR, "a stream window above 2^31-1")
        self._out.append(frames.SETTINGS_ACK)

    def _on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise FrameError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")  # section 6.4
        frames.error_code_of(payload)
        st = self._streams.get(stream_id)
        if st is None:
            if self._idle(stream_id):
                raise FrameError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream")  # 6.4
            return
        if not st.closed:
            st.move(Input.RECV_RST_STREAM)
            self._remember_reset(stream_id, self._peer_reset_ids)
            self._stream_gone(stream_id, st)

    def _idle(self, stream_id: int) -> bool:
        """Section 5.1.1: a stream the client has not opened yet; even ids are the
        server's, and a server that never pushes opens none."""
        return stream_id > self._highest or not stream_id % 2

    def _on_goaway(self, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise FrameError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")  # section 6.8
        if len(payload) < 8:
            raise FrameError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY too short")
        # The peer is done: nothing more is read or sent (as h2 does), and the
        # application's streams end with the connection.
        self._dead = True
        self._events.append(CONNECTION_CLOSED)

    # -- requests --------------------------------------------------------------

    def _on_request(self, stream_id: int, head: Head, ended: bool) -> None:
        limits = self._limits
        if (
            self._draining
            or len(self._streams) >= limits.max_concurrent_streams
            or self._buffered >= limits.max_connection_buffer
        ):
            self._refuse(stream_id)
            return
        st = Stream(None, self._clock(), self._peer.initial_window, frames.DEFAULT_WINDOW)
        if ended:
            st.move(Input.RECV_END_STREAM)
        self._streams[stream_id] = st
        if head.size > limits.max_header_bytes or head.field_count > limits.max_header_count:
            self._reject(stream_id, st, 431, "request header fields too large")
            return
        method = head.method
        if method == b"CONNECT":
            self._reject(stream_id, st, 501, "CONNECT is not implemented")
            return
        headers = head.headers
        if head.malformed:
            self._reject_malformed(stream_id, st, head.malformed)
            return
        path = head.path
        assert method is not None and path is not None
        if len(path) > limits.max_target_bytes:
            self._reject(stream_id, st, 414, "request-target too long")
            return
        length = headers.get(b"content-length")
        if length is not None:
            st.expected = int(length)
            if st.expected > limits.max_body_bytes:
                self._reject(stream_id, st, 413, "request body too large")
                return
            if ended and st.expected:
                self._reject_malformed(stream_id, st, "content-length and the body differ")  # 8.1.1
                return
        headers = headers.copy()  # (the Head is shared by the repeats of its header block)
        if head.authority is not None and b"host" not in headers:
            headers[b"host"] = head.authority  # section 8.3.1
        request = Request(method, path, path_of(path), headers, b"", True, b"2", stream_id, self.client)
        if ended:
            self._events.append(request)
            return
        st.request = request
        expect = headers.get(b"expect")
        if expect is not None and expect.lower() == b"100-continue":
            # RFC 9110 section 10.1.1; an END_STREAM already here makes it moot.
            self._out.append(frames.frame(_HEADERS, _END_HEADERS, stream_id, _CONTINUE_BLOCK))

    def _on_trailers(self, stream_id: int, st: Stream, fields: list[tuple[bytes, bytes]]) -> None:
        """Trailers are dropped, but must be well-formed (RFC 9113 section 8.1)."""
        if st.request is None:
            return
        for name, value in fields:
            if name.startswith(b":"):
                problem = "pseudo-header field in trailers"
            else:
                problem = field_problem(name, value)
            if problem:
                self._reject_malformed(stream_id, st, problem)
                return

    def _refuse(self, stream_id: int) -> None:
        """REFUSED_STREAM: the client may retry it (RFC 9113 section 8.7)."""
        self._send_reset(stream_id, ErrorCode.REFUSED_STREAM)
        if not self._resets.spend(self._clock()):
            self._die(ErrorCode.ENHANCE_YOUR_CALM, "too many refused streams")

    def _drop_request(self, st: Stream) -> None:
        """The request will not reach the application: its partial body goes."""
        if st.body is not None:
            self._buffered -= st.received
        st.request = None
        st.body = None
        st.released = True  # the application never sees it

    def _reject(self, stream_id: int, st: Stream, status: int, reason: str) -> None:
        """Answer a request ourselves, then (if its body is still coming)
        RST_STREAM(NO_ERROR): the body is not read (section 8.1)."""
        self._drop_request(st)
        st.reset_after = -1 if st.remote_ended else ErrorCode.NO_ERROR
        self._respond_fields(stream_id, st, status, _TEXT_PLAIN, (reason + "\n").encode(), True)

    def _reject_malformed(self, stream_id: int, st: Stream, problem: str) -> None:
        """Section 8.1.1: a malformed request is a stream error PROTOCOL_ERROR; a 400
        goes first (without END_STREAM, so that the stream can still be reset)."""
        self._drop_request(st)
        st.answered = True
        body = ("malformed request: " + problem + "\n").encode()
        block = _response_block(400, _TEXT_PLAIN) + content_length_field(len(body))
        self._send_block(stream_id, self._encoder.block(block), False)
        size = len(body)
        if size <= min(st.send_window, self._send_window, self._peer.max_frame):
            self._out += (frames.data_header(size, False, stream_id), body)
            st.send_window -= size
            self._send_window -= size
        self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR)

    def _ack_connection(self, size: int) -> None:
        if size and not self._dead:
            increment = self._recv.taken(size)
            if increment:
                self._out.append(frames.window_update(0, increment))

    def _ack(self, stream_id: int, st: Stream, size: int) -> None:
        """``size`` bytes of the stream were taken in: the client may send more."""
        self._ack_connection(size)
        if not size or self._dead or st.remote_ended or st.request is None:
            return  # (no more DATA is wanted on this stream)
        st.recv_unacked += size
        if window_update_due(st.recv_unacked, st.recv_window, frames.DEFAULT_WINDOW):
            st.recv_window += st.recv_unacked
            self._out.append(frames.window_update(stream_id, st.recv_unacked))
            st.recv_unacked = 0

    def _on_data(self, stream_id: int, st: Stream, data: bytes, flow_controlled: int, ended: bool) -> None:
        if ended:
            st.move(Input.RECV_END_STREAM)
        if st.request is None:
            self._ack(stream_id, st, flow_controlled)  # dropped; the connection window goes on
            if ended:
                self._on_end(stream_id, st)
            return
        size = st.received + len(data)
        if size > self._limits.max_body_bytes:
            self._ack(stream_id, st, flow_controlled)
            self._reject(stream_id, st, 413, "request body too large")
            return
        if st.expected >= 0 and (size > st.expected or (ended and size != st.expected)):
            self._ack(stream_id, st, flow_controlled)
            self._reject_malformed(stream_id, st, "content-length and the body differ")  # 8.1.1
            return
        if data:
            if not ended and self._buffered + len(data) > self._limits.max_connection_buffer:
                # The connection holds as much as it may: this request is refused
                # (it never reached the application, so the client may retry it).
                self._ack(stream_id, st, flow_controlled)
                self._drop_request(st)
                self._stream_error(stream_id, ErrorCode.REFUSED_STREAM)
                self.goaway()
                if not self._resets.spend(self._clock()):
                    self._die(ErrorCode.ENHANCE_YOUR_CALM, "too many refused streams")
                return
            body = st.body
            if body is None:
                st.body = data  # usually the whole body: kept without a copy
            elif type(body) is bytes:
                st.body = bytearray(body) + data
            else:
                assert isinstance(body, bytearray)
                body += data
            st.received = size
            self._buffered += len(data)
        # Taken into the (bounded) body buffer: only now may the client send more.
        self._ack(stream_id, st, flow_controlled)
        if ended:
            self._on_end(stream_id, st)

    def _on_end(self, stream_id: int, st: Stream) -> None:
        """The client's END_STREAM: a waiting request is complete."""
        if st.state is State.OPEN or st.state is State.HALF_CLOSED_LOCAL:
            st.move(Input.RECV_END_STREAM)
        st.reset_after = -1
        request = st.request
        if request is None:
            if st.closed:
                self._close_stream(stream_id, st)
            return
        body = st.body
        if body is not None:
            self._buffered -= st.received
            if type(body) is bytes:
                request.body = body
            elif len(body) >= _ZERO_COPY_MIN:
                request.body = memoryview(body)
            else:
                request.body = bytes(body)
        st.request = None
        st.body = None
        self._events.append(request)

    def _stream_error(self, stream_id: int, code: int) -> None:
        """Section 5.4.2: RST_STREAM; the application's stream (if any) ends."""
        self._send_reset(stream_id, code)
        st = self._streams.get(stream_id)
        if st is not None and not st.closed:
            st.move(Input.SEND_RST_STREAM)
            self._stream_gone(stream_id, st)

    def _stream_gone(self, stream_id: int, st: Stream) -> None:
        held = st.request is None and not st.released  # the application has it
        if not held:
            st.released = True  # nobody will release it
        if st.request is not None:
            self._drop_request(st)
        self._close_stream(stream_id, st)
        if held:
            self._events.append(StreamReset(stream_id))

    def _close_stream(self, stream_id: int, st: Stream) -> None:
        """Done at the HTTP/2 level; forgotten once the application is done too."""
        st.state = State.CLOSED
        st.finishing = True
        if st.queue is not None:
            self._buffered -= st.queued
            st.queue = None
            st.queued = 0
            self._queued.pop(stream_id, None)
        if st.released:
            self._forget(stream_id)

    def _forget(self, stream_id: int) -> None:
        if self._streams.pop(stream_id, None) is not None and not self._streams:
            self._idle_since = self._clock()

    # -- output ----------------------------------------------------------------

    def _writable(self, stream_id: int) -> Stream | None:
        if self._dead:
            return None
        st = self._streams.get(stream_id)
        if st is None or st.finishing:
            return None
        return st

    def respond(
        self, stream_id: int, status: int, headers: Sequence[tuple[bytes, bytes]], body: Body
    ) -> None:
        """A complete response (HEADERS, DATA, END_STREAM); ignored on a finished stream."""
        st = self._writable(stream_id)
        if st is None or st.answered:
            return
        self._respond_fields(stream_id, st, status, headers, body, True)

    def _respond_fields(
        self,
        stream_id: int,
        st: Stream,
        status: int,
        headers: Sequence[tuple[bytes, bytes]],
        body: Body,
        end: bool,
    ) -> None:
        block = _response_block(status, headers)
        if status == 204 or status == 304 or status < 200:
            if body:
                raise ValueError("this status has no content: " + str(status))
        else:
            block += content_length_field(len(body))
        st.answered = True
        if not body:
            self._send_headers(stream_id, st, block, end)
            return
        self._send_headers(stream_id, st, block, False)
        self._write(stream_id, st, body, end)

    def start_stream(self, stream_id: int, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        """Response HEADERS of a body that follows in pieces (SSE)."""
        st = self._writable(stream_id)
        if st is None or st.answered:
            return
        block = _response_block(status, headers)
        st.answered = True
        self._send_headers(stream_id, st, block, False)

    def send_data(self, stream_id: int, data: Body) -> None:
        """A piece of a streamed body; queued when the windows are shut."""
        st = self._writable(stream_id)
        if st is None or not st.answered or not data:
            return
        self._write(stream_id, st, data, False)

    def end_stream(self, stream_id: int) -> None:
        """END_STREAM after whatever is queued."""
        st = self._writable(stream_id)
        if st is None or not st.answered:
            return
        self._write(stream_id, st, b"", True)

    def reset(self, stream_id: int, error_code: int = ErrorCode.CANCEL) -> None:
        """RST_STREAM: drop the stream and its queued output (no StreamReset event)."""
        st = self._streams.get(stream_id)
        if st is None or st.closed or self._dead:
            return
        self._send_reset(stream_id, error_code)
        if st.request is not None:
            self._drop_request(st)
        st.move(Input.SEND_RST_STREAM)
        self._close_stream(stream_id, st)

    def release(self, stream_id: int) -> None:
        """The application is done with the stream (it answered, or gave up)."""
        st = self._streams.get(stream_id)
        if st is None:
            return
        st.released = True
        if st.closed or self._dead:
            self._forget(stream_id)

    def _send_reset(self, stream_id: int, code: int) -> None:
        if self._dead:
            return
        self._out.append(frames.rst_stream(stream_id, code))
        self._remember_reset(stream_id, self._reset_ids)

    def _remember_reset(self, stream_id: int, ids: set[int]) -> None:
        """Note who reset a stream (bounded: the oldest are forgotten)."""
        if stream_id in ids:
            return
        ids.add(stream_id)
        self._reset_order.append(stream_id)
        if len(self._reset_order) > _RESETS_KEPT:
            old = self._reset_order.popleft()
            self._reset_ids.discard(old)
            self._peer_reset_ids.discard(old)

    def _send_block(self, stream_id: int, block: bytes, end: bool) -> None:
        max_frame = self._peer.max_frame
        if len(block) <= max_frame:
            flags = _END_HEADERS | _END_STREAM if end else _END_HEADERS
            self._out.append(frames.frame(_HEADERS, flags, stream_id, block))
        else:
            self._out += frames.headers_frames(stream_id, block, end, max_frame)

    def _send_headers(self, stream_id: int, st: Stream, fields_block: bytes, end: bool) -> None:
        if self._dead:
            return
        self._send_block(stream_id, self._encoder.block(fields_block), end)
        if end:
            st.finishing = True
            self._ended(stream_id, st)

    def _write(self, stream_id: int, st: Stream, data: Body, end: bool) -> None:
        """Send as much as the windows allow now; queue the rest (RFC 9113 section 6.9)."""
        if end:
            st.finishing = True
        if self._dead:
            return
        if st.queue is not None or self._output_blocked:
            self._enqueue(stream_id, st, data, end)
            return
        n = len(data)
        window = min(st.send_window, self._send_window)
        max_frame = self._peer.max_frame
        out = self._out
        if n <= max_frame and (n <= window or n == 0):  # the common case: one frame
            out.append(frames.data_header(n, end, stream_id))
            if n:
                out.append(data)
                st.send_window -= n
                self._send_window -= n
            if end:
                self._ended(stream_id, st)
            return
        view = memoryview(data)
        pos = 0
        budget = min(window, _WRITE_NOW)
        while pos < n and budget > 0:
            take = min(n - pos, budget, max_frame)
            last = end and pos + take == n
            out.append(frames.data_header(take, last, stream_id))
            out.append(view[pos : pos + take])
            pos += take
            budget -= take
        sent = pos
        st.send_window -= sent
        self._send_window -= sent
        if pos == n and end:
            self._ended(stream_id, st)  # (n > 0 here, so the last frame carried END_STREAM)
        elif pos < n:
            self._enqueue(stream_id, st, view[pos:], end)
            if st.closed:
                return  # reset: the connection could not hold it
            if st.send_window <= 0 or self._send_window <= 0:
                st.blocked_since = self._clock()

    def _enqueue(self, stream_id: int, st: Stream, data: Body, end: bool) -> None:
        size = len(data)
        if size and self._buffered + size > self._limits.max_connection_buffer:
            self._overflow(stream_id, st)
            return
        if st.queue is None:
            st.queue = deque()
            self._queued[stream_id] = st
        if size:
            st.queue.append(data if type(data) is memoryview else memoryview(data))
            st.queued += size
            self._buffered += size
        if end:
            st.end_after = True

    def _overflow(self, stream_id: int, st: Stream) -> None:
        """An answer that does not fit in what the connection may hold: its stream is
        reset (its queue freed) and the connection is shut down gracefully (GOAWAY:
        new streams are refused, the streams in flight finish or time out)."""
        self._send_reset(stream_id, ErrorCode.ENHANCE_YOUR_CALM)
        st.move(Input.SEND_RST_STREAM)
        self._stream_gone(stream_id, st)
        self.goaway()
        if not self._resets.spend(self._clock()):
            self._die(ErrorCode.ENHANCE_YOUR_CALM, "the client does not read what it asked for")

    def _ended(self, stream_id: int, st: Stream) -> None:
        """END_STREAM went out."""
        st.move(Input.SEND_END_STREAM)
        if st.reset_after >= 0 and not st.closed:
            # RFC 9113 section 8.1: the client may stop sending the request.
            self._send_reset(stream_id, st.reset_after)
            st.reset_after = -1
            st.move(Input.SEND_RST_STREAM)
        if st.closed:
            self._close_stream(stream_id, st)

    def flush(self, budget: int = 256 * 1024) -> int:
        """Send queued output as far as the windows allow, at most ``budget``
        bytes, taking turns among streams. Returns the bytes sent."""
        if self._output_blocked or self._dead or not self._queued:
            return 0
        sent = 0
        for stream_id, st in list(self._queued.items()):
            sent += self._pump(stream_id, st, budget - sent)
            if sent >= budget:
                break
        return sent

    def _pump(self, stream_id: int, st: Stream, budget: int) -> int:
        queue = st.queue
        assert queue is not None
        out = self._out
        max_frame = self._peer.max_frame
        sent = 0
        window = min(st.send_window, self._send_window)
        while queue and window > 0 and sent < budget:
            chunk = queue[0]
            take = min(len(chunk), window, max_frame, budget - sent)
            if take == len(chunk):
                queue.popleft()
            else:
                queue[0] = chunk[take:]
                chunk = chunk[:take]
            out.append(frames.data_header(take, st.end_after and not queue, stream_id))
            out.append(chunk)
            sent += take
            window -= take
        st.queued -= sent
        self._buffered -= sent
        st.send_window -= sent
        self._send_window -= sent
        if not queue:
            st.queue = None
            st.blocked_since = 0.0
            del self._queued[stream_id]
            if st.end_after:
                if not sent:
                    out.append(frames.data_header(0, True, stream_id))  # END_STREAM alone
                self._ended(stream_id, st)
            return sent
        # Still waiting: go last in the turn order.
        del self._queued[stream_id]
        self._queued[stream_id] = st
        if window <= 0 and (sent or not st.blocked_since):
            st.blocked_since = self._clock()
        return sent

    def data_to_send(self) -> bytes:
        """Bytes to write to the transport (and forget)."""
        out = self._out
        if not out:
            return b""
        data = b"".join(out)
        out.clear()
        return data

    # -- connection end ----------------------------------------------------------

    def goaway(self) -> None:
        """Graceful shutdown (RFC 9113 section 6.8): GOAWAY(NO_ERROR) naming the
        last stream we took; open streams finish, new ones are refused."""
        if self._dead or self._draining:
            return
        self._draining = True
        self._out.append(frames.goaway(self._highest, ErrorCode.NO_ERROR))

    def close(self, error_code: int = ErrorCode.NO_ERROR, reason: bytes = b"") -> None:
        """GOAWAY and stop: nothing more is sent or received."""
        if self._dead:
            return
        self._out.append(frames.goaway(self._highest, error_code, reason))
        self._dead = True
        self._drop_output()
        self._events.append(CONNECTION_CLOSED)

    def _die(self, code: ErrorCode, reason: str) -> None:
        """A connection error (section 5.4.1): GOAWAY with ``code``, then ProtocolError."""
        if not self._dead:
            self._out.append(frames.goaway(self._highest, code))
        self._dead = True
        self._drop_output()
        self._fail(code, reason)

    def _drop_output(self) -> None:
        """Nothing more will be sent: queued output is freed."""
        for st in self._queued.values():
            st.queue = None
            st.queued = 0
        self._queued.clear()
        self._buffered = 0

    def _fail(self, code: ErrorCode, reason: str) -> None:
        self._dead = True
        self.error_code = code
        if self._error is None:
            self._error = ProtocolError(400, reason)
            self._events.append(_FAILED)

    def check_timeouts(self) -> None:
        """Act on every timeout that passed (called about once a second)."""
        if self._dead:
            return
        now = self._clock()
        timeouts = self._timeouts
        if not self._preface_done:
            if now - self._born > timeouts.header:
                self.close(ErrorCode.NO_ERROR, b"no client preface")
            return
        if self._block_since and now - self._block_since > timeouts.header:
            self.close(ErrorCode.NO_ERROR, b"header block not completed in time")
            return
        if not self._streams:
            if now - self._idle_since > timeouts.idle:
                self.close(ErrorCode.NO_ERROR, b"idle")
            return
        for stream_id, st in list(self._streams.items()):
            if st.request is not None:
                if now - st.since > timeouts.body:
                    self._reject(stream_id, st, 408, "request timeout: the body was not received in time")
            elif st.blocked_since and now - st.blocked_since > timeouts.write:
                # The peer keeps the window shut: drop this stream, not the connection.
                self.reset(stream_id, ErrorCode.CANCEL)
                if not st.released:
                    self._events.append(StreamReset(stream_id))
