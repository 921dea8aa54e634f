"""The differential oracle of the HTTP/2 core: the server side over the ``h2`` state machine.

This is what ``mcp_fast/wire/h2.py`` was before the core got its own frame layer (kept
as it was, limits and all), so that ``fuzz/test_h2_differential.py`` can feed the same
frame sequences to both and compare the events and answers, as ``test_h1_fuzz.py``
does with h11. ``h2`` is a test dependency only. The original description follows.

Sans-I/O HTTP/2 server side (RFC 9113) over the ``h2`` state machine.

No asyncio and no I/O here. The network layer feeds received bytes to
``H2Connection.receive_data`` and pulls events with ``next_event`` (h11 style,
like ``h1.H1Connection``): ``Request`` (head plus complete body, with its
``stream_id``), ``StreamReset`` (a stream the application holds ended without
a complete exchange), ``CONNECTION_CLOSED``; a broken connection raises
``ProtocolError`` once the events before the error were taken. Answers go out
through ``respond`` / ``start_stream`` / ``send_data`` / ``end_stream`` /
``reset``, and ``data_to_send`` returns the bytes to write.

``h2`` does the framing, HPACK and the stream state machines. It is fed one
frame at a time, and the core reacts to each frame's events before the next
frame, so the outcome depends on the frame sequence only, never on how the bytes
were split into reads. This module adds what a server needs on top, enforced
where the bytes arrive:

* A frame-header scanner looks at every frame header before ``h2`` buffers the
  frame: an overlong frame is refused as soon as its 9-byte header is seen
  (``h2`` would first buffer up to 16 MiB of it), a header block that grows
  past twice ``max_header_bytes`` or 32 frames is a CONTINUATION flood
  (CVE-2024-27316 family), RST_STREAM frames spend a reset budget (rapid reset,
  CVE-2023-44487) and frames that cost work without carrying any (PING and
  SETTINGS, which ``h2`` answers automatically, PRIORITY, empty DATA) spend a
  control-frame budget. An exhausted budget is GOAWAY ENHANCE_YOUR_CALM.
* Request limits answer that stream only: a field section over
  ``max_header_bytes`` (RFC 9113 section 6.5.2 size) or ``max_header_count``
  fields gets 431, a ``:path`` over ``max_target_bytes`` 414, a body over
  ``max_body_bytes`` 413 (a Content-Length over it before any DATA). The
  answer is followed by RST_STREAM(NO_ERROR) when the body is still coming
  (RFC 9113 section 8.1), and the stream's data is dropped from then on.
* Request bodies are flow-controlled end to end: received DATA is
  acknowledged (WINDOW_UPDATE) only as it is taken into the stream's body
  buffer, which is bounded by ``max_body_bytes``.
* SETTINGS_MAX_CONCURRENT_STREAMS is advertised and enforced with
  REFUSED_STREAM (RFC 9113 section 5.1.2). A stream counts against it until the
  application is done with it (``release``), not just until the client resets
  it, so resetting streams cannot make the server run more handlers at once.
* Output honours the peer's flow-control windows (RFC 9113 section 6.9):
  what does not fit is queued per stream and sent by ``flush`` when
  WINDOW_UPDATE or SETTINGS opens the window. ``queued`` tells the network
  layer how much a stream has waiting, so it can bound it.

Time comes from an injected clock (for the budgets and ``check_timeouts``).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame

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
from mcp_fast.wire.h1 import valid_host

__all__ = ["PREFACE", "H2Connection", "H2Limits", "H2Timeouts"]

# RFC 9113 section 3.4: the client connection preface.
PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass(frozen=True, slots=True)
class H2Limits:
    """Per-connection limits; see the module docstring for what each answers."""

    max_header_bytes: int = 16 * 1024  # field section size (RFC 9113 6.5.2) -> 431
    max_header_count: int = 100  # fields other than pseudo-header fields -> 431
    max_target_bytes: int = 8 * 1024  # :path -> 414
    max_body_bytes: int = 4 * 1024 * 1024  # -> 413
    max_concurrent_streams: int = 100  # SETTINGS_MAX_CONCURRENT_STREAMS -> REFUSED_STREAM
    # Rapid reset (CVE-2023-44487): RST_STREAM frames received plus streams we
    # refused, as a token bucket: a burst, then a rate per second.
    reset_burst: int = 200
    reset_rate: float = 50.0
    # PING, SETTINGS, PRIORITY and empty DATA frames (CVE-2019-9512/9515/9518).
    control_burst: int = 1000
    control_rate: float = 100.0

    def __post_init__(self) -> None:
        if min(self.max_header_bytes, self.max_header_count, self.max_target_bytes) < 1:
            raise ValueError("H2Limits: header and target limits must be positive")
        if self.max_body_bytes < 0:
            raise ValueError("H2Limits: max_body_bytes must not be negative")
        if not 1 <= self.max_concurrent_streams < 2**31:
            raise ValueError("H2Limits: max_concurrent_streams must be between 1 and 2**31 - 1")


@dataclass(frozen=True, slots=True)
class H2Timeouts:
    """Seconds; checked by ``check_timeouts``."""

    header: float = 10.0  # the client preface, and each header block (HEADERS + CONTINUATION)
    body: float = 30.0  # a request body, from the end of its head
    idle: float = 75.0  # the connection has no open stream
    write: float = 30.0  # a stream with output waiting whose window the peer keeps shut


# ---------------------------------------------------------------------------
# Frame-header constants (RFC 9113 sections 4.1 and 6)

_FRAME_HEADER: Final = 9
_DATA: Final = 0x0
_HEADERS: Final = 0x1
_PRIORITY: Final = 0x2
_RST_STREAM: Final = 0x3
_SETTINGS: Final = 0x4
_PING: Final = 0x6
_GOAWAY: Final = 0x7
_CONTINUATION: Final = 0x9
_FLAG_END_STREAM: Final = 0x1  # DATA, HEADERS
_FLAG_ACK: Final = 0x1  # SETTINGS, PING
_FLAG_END_HEADERS: Final = 0x4  # HEADERS, CONTINUATION
# SETTINGS_MAX_FRAME_SIZE we advertise (the RFC 9113 section 6.5.2 initial value).
_MAX_FRAME: Final = 16384
# Frames in one header block; h2 itself gives up at 64.
_MAX_BLOCK_FRAMES: Final = 32
# Closed stream ids h2 remembers to tell late frames from protocol errors; its
# default (65,536 per connection) costs megabytes on a long-lived connection.
_CLOSED_STREAMS_KEPT: Final = 2048

# Bodies at least this long are handed out as a memoryview (as h1 does).
_ZERO_COPY_MIN: Final = 8192

# RFC 9113 section 8.2.2: connection-specific fields must not appear in HTTP/2;
# our transports may pass them, so they are dropped from responses.
_CONNECTION_SPECIFIC: Final = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
# RFC 9113 section 8.2.1: lower-case token characters only in a field name;
# no NUL, CR or LF in a value.
_BAD_NAME: Final = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]")
_BAD_VALUE: Final = re.compile(rb"[\x00\r\n]")
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 section 5.6.2
_TARGET: Final = re.compile(rb"[\x21-\x7e]+")  # visible ASCII, as h1 accepts in a target
# Request fields (name, value) that passed _field_problem: clients repeat the same
# ones on every request. Bounded; a miss is exactly as strict as a hit.
_VALID_FIELDS: dict[tuple[bytes, bytes], None] = {}
_VALID_FIELDS_MAX: Final = 1024
_TEXT_PLAIN: Final = ((b"content-type", b"text/plain; charset=utf-8"),)

_Fields = list[tuple[bytes, bytes]]
_FIELD_CACHE: dict[tuple[int, tuple[tuple[bytes, bytes], ...]], _Fields] = {}
_FIELD_CACHE_MAX: Final = 64


# ---------------------------------------------------------------------------
# Helpers


class _LocalSettings(h2.settings.Settings):
    """Our SETTINGS, with h2's own concurrent-stream check moved out of the way.

    h2 treats a HEADERS frame beyond SETTINGS_MAX_CONCURRENT_STREAMS as a
    connection error; RFC 9113 section 5.1.2 allows a stream error, and a client
    that opens streams before it has seen our SETTINGS should only have those
    refused. So the advertised value is enforced here with REFUSED_STREAM and
    h2 enforces only ``backstop`` (a client far beyond the limit loses the
    connection: h2 keeps every stream of a read, so this bounds that).
    """

    def __init__(self, advertised: dict[SettingCodes, int], backstop: int) -> None:
        super().__init__(client=False, initial_values=advertised)
        self._backstop = backstop

    @property
    def max_concurrent_streams(self) -> int:
        return self._backstop

    @max_concurrent_streams.setter
    def max_concurrent_streams(self, value: int) -> None:
        self[SettingCodes.MAX_CONCURRENT_STREAMS] = value


class _ServerConnection(h2.connection.H2Connection):
    MAX_CLOSED_STREAMS = _CLOSED_STREAMS_KEPT


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


class _Stream:
    """What the core keeps per stream; small, since thousands may stay open (SSE)."""

    __slots__ = (
        "answered",
        "blocked_since",
        "body",
        "closed",
        "end_after",
        "finishing",
        "queue",
        "queued",
        "received",
        "released",
        "remote_ended",
        "request",
        "reset_after",
        "since",
    )

    def __init__(self, request: Request | None, now: float) -> None:
        self.request = request  # the head while its body arrives; None once handed out
        self.body: bytes | bytearray | None = None
        self.received = 0  # body bytes so far
        self.since = now  # when the head ended (body timeout)
        self.remote_ended = False
        self.answered = False  # response HEADERS sent
        self.finishing = False  # END_STREAM sent or queued: no more output
        self.closed = False  # END_STREAM sent or reset: done at the HTTP/2 level
        self.released = False  # the application is done with it (or never had it)
        self.reset_after = -1  # RST_STREAM code to send once the response is out (-1: none)
        self.queue: deque[memoryview] | None = None  # output waiting for window
        self.queued = 0
        self.end_after = False  # END_STREAM after the queue
        self.blocked_since = 0.0  # output waiting on a shut window since (0: not)


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
        if name in _CONNECTION_SPECIFIC or (name == b"te" and value.lower() != b"trailers"):
            continue
        if not name or _BAD_NAME.search(name) is not None:
            raise ValueError("invalid response header name")
        if _BAD_VALUE.search(value) is not None:
            raise ValueError("NUL, CR or LF in a response header value")
        fields.append((name, value.strip(b" \t")))
    return fields


def _response_fields(status: int, headers: Sequence[tuple[bytes, bytes]]) -> _Fields:
    """The response's field list; constant header sets (tuples) are remembered."""
    if type(headers) is not tuple:
        return _field_list(status, headers)
    key = (status, headers)
    fields = _FIELD_CACHE.get(key)
    if fields is None:
        fields = _field_list(status, headers)
        if len(_FIELD_CACHE) < _FIELD_CACHE_MAX:
            _FIELD_CACHE[key] = fields
    return fields.copy()


def _field_problem(name: bytes, value: bytes) -> str:
    """What is wrong with a request field (RFC 9113 section 8.2), or ""."""
    if not name or _BAD_NAME.search(name) is not None:
        # Lower-case token characters only (sections 8.2 and 8.2.1; RFC 9110 5.1).
        return "invalid field name"
    if name in _CONNECTION_SPECIFIC or (name == b"te" and value.lower() != b"trailers"):
        return "connection-specific field"  # section 8.2.2
    if value and (_BAD_VALUE.search(value) is not None or value[0] in b" \t" or value[-1] in b" \t"):
        return "invalid field value"  # section 8.2.1
    return ""


def _request_problem(
    method: bytes | None,
    path: bytes | None,
    scheme: bytes | None,
    authority: bytes | None,
    host: bytes | None,
) -> str:
    """What is wrong with a request's control data (RFC 9113 section 8.3.1), or ""."""
    if method is None or path is None or scheme is None:
        return "missing :method, :scheme or :path"
    if _TOKEN.fullmatch(method) is None:
        return "invalid :method"
    if _TARGET.fullmatch(path) is None or (path[0] != 0x2F and not (path == b"*" and method == b"OPTIONS")):
        return "invalid :path"  # origin-form, or "*" for OPTIONS (as in HTTP/1.1)
    given = authority if authority is not None else host
    if given is None:
        return "no :authority or host"
    if host is not None and given != host:
        return ":authority and host differ"
    if not valid_host(given):
        return "invalid :authority"
    return ""


def _h2_error_code(exc: h2.exceptions.ProtocolError) -> ErrorCodes:
    code = getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR)
    try:
        return ErrorCodes(code)
    except ValueError:
        return ErrorCodes.PROTOCOL_ERROR


# h2 raises these from a write on a stream that the peer already reset.
_STREAM_GONE: Final = (h2.exceptions.StreamClosedError, h2.exceptions.NoSuchStreamError)


# ---------------------------------------------------------------------------
# The connection


class H2Connection:
    """Server side of one HTTP/2 connection, without I/O.

    Starts after the client preface was recognised (the preface itself is the
    first thing ``receive_data`` expects). ``receive_data(b"")`` signals EOF.
    """

    __slots__ = (
        "_block_bytes",
        "_block_cap",
        "_block_frames",
        "_block_since",
        "_born",
        "_clock",
        "_conn",
        "_control",
        "_dead",
        "_draining",
        "_ends",
        "_eof",
        "_error",
        "_events",
        "_extra",
        "_failed",
        "_head",
        "_idle_since",
        "_input_done",
        "_limits",
        "_output_blocked",
        "_preface_done",
        "_queued",
        "_resets",
        "_skip",
        "_streams",
        "_timeouts",
        "_violation",
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
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            # Requests are validated by _on_request, responses by _response_fields:
            # cheaper than h2's pipelines, and a malformed request is a stream error
            # (RFC 9113 section 8.1.1), where h2 would end the whole connection.
            validate_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        conn = _ServerConnection(config)
        n = limits.max_concurrent_streams
        conn.local_settings = _LocalSettings(
            {
                SettingCodes.MAX_CONCURRENT_STREAMS: n,
                # RFC 9113 section 6.5.2: advisory; above it a request gets 431.
                SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_bytes,
            },
            backstop=min(2 * n, 2**31 - 1),
        )
        # HPACK decoding stops (COMPRESSION/ENHANCE_YOUR_CALM) at twice the
        # limit: between the two the request gets a 431 instead.
        self._block_cap = 2 * limits.max_header_bytes
        conn.decoder.max_header_list_size = self._block_cap
        conn.initiate_connection()  # our SETTINGS: the server connection preface (section 3.4)
        self._conn = conn
        self._streams: dict[int, _Stream] = {}
        self._queued: dict[int, _Stream] = {}  # streams with output waiting for window
        self._events: deque[Event | _Failed] = deque()
        self._extra = bytearray()  # frames we build ourselves (graceful GOAWAY)
        self._error: ProtocolError | None = None
        self._failed = False
        self.error_code: ErrorCodes | None = None  # the GOAWAY code of a failed connection
        self._dead = False  # h2 can send nothing more (GOAWAY sent or received)
        self._eof = False
        self._draining = False  # graceful GOAWAY sent: new streams are refused
        self._output_blocked = False
        # Frame scanner.
        self._skip = len(PREFACE)  # bytes of the current frame (first: the preface) to pass
        self._head = bytearray()  # a frame header split across reads
        self._ends: list[int] = []  # where frames end in the current read
        self._violation: tuple[ErrorCodes, str] | None = None
        self._input_done = False  # a GOAWAY came in: h2 takes no frame after it
        self._block_bytes = 0
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

        h2 gets one frame at a time and its events are handled before the next
        frame: what the core does about a frame (a refusal, a reset, a WINDOW_UPDATE)
        is in effect for the next one, and the outcome does not depend on how the
        bytes were split into reads.
        """
        if self._dead or self._eof or self._failed or self._error is not None:
            return
        if not data:
            self._eof = True
            self._events.append(CONNECTION_CLOSED)
            return
        ends = self._ends
        cut = self._scan(data)
        stop = len(data) if cut < 0 else cut
        if len(ends) == 1 and ends[0] == stop == len(data):
            self._feed(data)  # the common case: one frame, or the end of one
        else:
            view = memoryview(data)
            begin = 0
            for end in ends:
                self._feed(view[begin:end])
                begin = end
                if self._dead or self._error is not None:
                    return
            if begin < stop:
                self._feed(view[begin:stop])  # the start of a frame that continues
        if self._violation is not None and not self._dead and self._error is None:
            # A frame broke a limit: the frames before it were handled, then the
            # connection ends.
            code, reason = self._violation
            self._die(code, reason)

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

    # -- the frame scanner ---------------------------------------------------

    def _scan(self, data: bytes) -> int:
        """Check each frame header as it arrives, and note in ``_ends`` where each
        frame (the preface first) ends in ``data``. Returns -1, or the offset in
        ``data`` where input for h2 ends: the frame that broke a limit
        (``_violation`` says which), or the end of a GOAWAY."""
        ends = self._ends
        ends.clear()
        i = 0
        n = len(data)
        skip = self._skip
        head = self._head
        while True:
            if skip:
                if n - i < skip:
                    self._skip = skip - (n - i)
                    return -1
                i += skip
                skip = 0
                ends.append(i)
                if i == n:
                    self._skip = 0
                    return -1
            if self._input_done:
                self._skip = 0
                return i
            if head:
                start = 0  # the header began in an earlier read
                need = _FRAME_HEADER - len(head)
                if n - i < need:
                    head += data[i:]
                    self._skip = 0
                    return -1
                head += data[i : i + need]
                header = bytes(head)
                head.clear()
                i += need
            else:
                start = i
                if n - i < _FRAME_HEADER:
                    head += data[i:]
                    self._skip = 0
                    return -1
                header = data[i : i + _FRAME_HEADER]
                i += _FRAME_HEADER
            length = (header[0] << 16) | (header[1] << 8) | header[2]
            if not self._frame(length, header[3], header[4]):
                self._skip = 0
                return start
            skip = length
            if not length:
                ends.append(i)
                if i == n:
                    self._skip = 0
                    return -1

    def _frame(self, length: int, kind: int, flags: int) -> bool:
        """One frame header; False when it breaks a limit."""
        # RFC 9113 section 3.4: the client preface is the magic and a SETTINGS frame;
        # a frame header after the magic ends the preface timeout.
        self._preface_done = True
        if length > _MAX_FRAME:
            # RFC 9113 section 4.2: FRAME_SIZE_ERROR, decided before buffering it.
            return self._violate(ErrorCodes.FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
        if kind == _GOAWAY and not self._block_since:
            # h2 refuses every frame after the peer's GOAWAY (its state machine is
            # closed), so the input ends with it, however the bytes were split.
            self._input_done = True
        if self._block_since:
            # Inside a header block only CONTINUATION may follow (section 6.10;
            # h2 refuses anything else).
            if kind == _CONTINUATION:
                self._block_bytes += length
                self._block_frames += 1
                if self._block_bytes > self._block_cap or self._block_frames > _MAX_BLOCK_FRAMES:
                    return self._violate(ErrorCodes.ENHANCE_YOUR_CALM, "header block too large")
                if flags & _FLAG_END_HEADERS:
                    self._block_since = 0.0
            return True
        if kind == _HEADERS:
            if length > self._block_cap:
                return self._violate(ErrorCodes.ENHANCE_YOUR_CALM, "header block too large")
            if not flags & _FLAG_END_HEADERS:
                self._block_since = self._clock()
                self._block_bytes = length
                self._block_frames = 1
            return True
        if kind == _DATA:
            if length or flags & _FLAG_END_STREAM:
                return True
        elif kind == _RST_STREAM:
            if self._resets.spend(self._clock()):
                return True
            return self._violate(ErrorCodes.ENHANCE_YOUR_CALM, "too many stream resets")
        elif kind in (_PING, _SETTINGS):
            if flags & _FLAG_ACK:
                return True
        elif kind != _PRIORITY:
            return True
        if self._control.spend(self._clock()):
            return True
        return self._violate(ErrorCodes.ENHANCE_YOUR_CALM, "too many control frames")

    def _violate(self, code: ErrorCodes, reason: str) -> bool:
        self._violation = (code, reason)
        return False

    # -- h2 events -----------------------------------------------------------

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 queued GOAWAY with the matching code (RFC 9113 section 5.4.1).
            self._fail(_h2_error_code(exc), "HTTP/2 protocol error")
            return
        if events and type(events[-1]) is h2.events.ConnectionTerminated:
            # The peer's GOAWAY (always the last frame, see _scan): h2 sends nothing
            # after it (section 6.8), not even answers to the frames before it.
            self._dead = True
        for event in events:
            kind = type(event)
            if kind is h2.events.RequestReceived:
                assert isinstance(event, h2.events.RequestReceived)
                self._on_request(event.stream_id, event.headers, event.stream_ended is not None)
            elif kind is h2.events.DataReceived:
                assert isinstance(event, h2.events.DataReceived)
                self._on_data(
                    event.stream_id, event.data, event.flow_controlled_length, event.stream_ended is not None
                )
            elif kind is h2.events.StreamEnded:
                assert isinstance(event, h2.events.StreamEnded)
                self._on_end(event.stream_id)
            elif kind is h2.events.StreamReset:
                assert isinstance(event, h2.events.StreamReset)
                self._on_reset(event.stream_id)
            elif kind is h2.events.TrailersReceived:
                assert isinstance(event, h2.events.TrailersReceived)
                self._on_trailers(event.stream_id, event.headers)
            elif kind is h2.events.ConnectionTerminated:
                self._events.append(CONNECTION_CLOSED)
            # WindowUpdated and RemoteSettingsChanged need nothing here: ``flush``
            # asks h2 for the current windows. PING and SETTINGS are answered by h2;
            # PRIORITY and unknown frames are ignored.
            if self._error is not None:
                return  # a limit ended the connection: nothing after it counts

    def _on_request(self, stream_id: int, fields: list[tuple[bytes, bytes]], ended: bool) -> None:
        limits = self._limits
        if self._draining or len(self._streams) >= limits.max_concurrent_streams:
            self._refuse(stream_id)
            return
        method = path = scheme = authority = None
        headers: dict[bytes, bytes] = {}
        size = 0
        count = 0
        malformed = ""
        regular = False
        for field in fields:
            name, value = field
            size += len(name) + len(value) + 32  # RFC 9113 section 6.5.2
            if name.startswith(b":"):  # pseudo-header fields (section 8.3)
                if regular:
                    malformed = "pseudo-header field after a regular field"
                elif name == b":method":
                    malformed = malformed or ("repeated :method" if method is not None else "")
                    method = value
                elif name == b":path":
                    malformed = malformed or ("repeated :path" if path is not None else "")
                    path = value
                elif name == b":scheme":
                    malformed = malformed or ("repeated :scheme" if scheme is not None else "")
                    scheme = value
                elif name == b":authority":
                    malformed = malformed or ("repeated :authority" if authority is not None else "")
                    authority = value
                else:
                    malformed = "unknown pseudo-header field"
                continue
            regular = True
            count += 1
            if field not in _VALID_FIELDS:
                problem = _field_problem(name, value)
                if problem:
                    malformed = problem
                    continue
                if len(_VALID_FIELDS) >= _VALID_FIELDS_MAX:
                    _VALID_FIELDS.clear()
                _VALID_FIELDS[field] = None
            previous = headers.get(name)
            if previous is None:
                headers[name] = value
            elif name == b"host":
                malformed = "repeated host"  # (as in HTTP/1.1, RFC 9112 section 3.2)
            else:
                # Repeated fields joined as in HTTP/1.1 (RFC 9110 section 5.3); h2
                # already joined cookie fields with "; " (section 8.2.3).
                headers[name] = previous + b", " + value
        st = _Stream(None, self._clock())
        st.remote_ended = ended  # (its StreamEnded event follows)
        self._streams[stream_id] = st
        if size > limits.max_header_bytes or count > limits.max_header_count:
            self._reject(stream_id, st, 431, "request header fields too large")
            return
        if method == b"CONNECT":
            self._reject(stream_id, st, 501, "CONNECT is not implemented")
            return
        if not malformed:
            malformed = _request_problem(method, path, scheme, authority, headers.get(b"host"))
        if malformed:
            # Section 8.1.1: a malformed request is a stream error of type
            # PROTOCOL_ERROR; a response may go first.
            self._reject(stream_id, st, 400, "malformed request: " + malformed, ErrorCodes.PROTOCOL_ERROR)
            return
        assert method is not None and path is not None
        if len(path) > limits.max_target_bytes:
            self._reject(stream_id, st, 414, "request-target too long")
            return
        length = headers.get(b"content-length")
        # h2 has checked that it is a number and checks it against the DATA.
        if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
            self._reject(stream_id, st, 413, "request body too large")
            return
        if authority is not None and b"host" not in headers:
            headers[b"host"] = authority  # section 8.3.1
        st.request = Request(method, path, path_of(path), headers, b"", True, b"2", stream_id, self.client)
        expect = headers.get(b"expect")
        if expect is not None and expect.lower() == b"100-continue":
            # RFC 9110 section 10.1.1; an END_STREAM already here makes it moot.
            self._send_headers(stream_id, st, [(b":status", b"100")], False)

    def _on_trailers(self, stream_id: int, fields: list[tuple[bytes, bytes]]) -> None:
        """Trailers are dropped, but must be well-formed (RFC 9113 section 8.1)."""
        st = self._streams.get(stream_id)
        if st is None or st.request is None:
            return
        for name, value in fields:
            if name.startswith(b":"):
                problem = "pseudo-header field in trailers"
            else:
                problem = _field_problem(name, value)
            if problem:
                self._reject(stream_id, st, 400, "malformed request: " + problem, ErrorCodes.PROTOCOL_ERROR)
                return

    def _refuse(self, stream_id: int) -> None:
        """REFUSED_STREAM: the client may retry it (RFC 9113 section 8.7)."""
        self._send_reset(stream_id, ErrorCodes.REFUSED_STREAM)
        if not self._resets.spend(self._clock()):
            self._die(ErrorCodes.ENHANCE_YOUR_CALM, "too many refused streams")

    def _reject(
        self, stream_id: int, st: _Stream, status: int, reason: str, code: int = ErrorCodes.NO_ERROR
    ) -> None:
        """Answer a request ourselves, then (if its body is still coming) RST_STREAM
        with ``code``: the body is not read."""
        st.request = None
        st.body = None
        st.released = True  # the application never sees it
        st.reset_after = -1 if st.remote_ended else code
        body = (reason + "\n").encode()
        self._respond(stream_id, st, status, _TEXT_PLAIN, body)

    def _ack(self, size: int, stream_id: int) -> None:
        if size and not self._dead:
            self._conn.acknowledge_received_data(size, stream_id)

    def _on_data(self, stream_id: int, data: bytes, flow_controlled: int, ended: bool) -> None:
        st = self._streams.get(stream_id)
        if st is None or st.request is None:
            self._ack(flow_controlled, stream_id)  # dropped; the connection window goes on
            return
        if ended:
            st.remote_ended = True  # (its StreamEnded event follows)
        size = st.received + len(data)
        if size > self._limits.max_body_bytes:
            self._ack(flow_controlled, stream_id)
            self._reject(stream_id, st, 413, "request body too large")
            return
        if data:
            body = st.body
            if body is None:
                st.body = data  # usually the whole body: kept without a copy
            elif type(body) is bytes:
                st.body = bytearray(body) + data
            else:
                assert isinstance(body, bytearray)
                body += data
            st.received = size
        # Taken into the (bounded) body buffer: only now may the client send more.
        self._ack(flow_controlled, stream_id)

    def _on_end(self, stream_id: int) -> None:
        st = self._streams.get(stream_id)
        if st is None:
            return
        st.remote_ended = True
        st.reset_after = -1
        request = st.request
        if request is None:
            return
        body = st.body
        if body is not None:
            if type(body) is bytes:
                request.body = body
            elif len(body) >= _ZERO_COPY_MIN:
                request.body = memoryview(body)
            else:
                request.body = bytes(body)
        st.request = None
        st.body = None
        self._events.append(request)

    def _on_reset(self, stream_id: int) -> None:
        """The peer reset the stream, or h2 did (a stream error)."""
        st = self._streams.get(stream_id)
        if st is not None:
            self._stream_gone(stream_id, st)

    def _stream_gone(self, stream_id: int, st: _Stream) -> None:
        held = st.request is None and not st.released  # the application has it
        if not held:
            st.released = True  # nobody will release it
        st.request = None
        st.body = None
        self._close_stream(stream_id, st)
        if held:
            self._events.append(StreamReset(stream_id))

    def _close_stream(self, stream_id: int, st: _Stream) -> None:
        """Done at the HTTP/2 level; forgotten once the application is done too."""
        st.closed = True
        st.finishing = True
        if st.queue is not None:
            st.queue = None
            st.queued = 0
            self._queued.pop(stream_id, None)
        if st.released:
            self._forget(stream_id)

    def _forget(self, stream_id: int) -> None:
        if self._streams.pop(stream_id, None) is not None and not self._streams:
            self._idle_since = self._clock()

    # -- output ----------------------------------------------------------------

    def _writable(self, stream_id: int) -> _Stream | None:
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
        self._respond(stream_id, st, status, headers, body)

    def _respond(
        self, stream_id: int, st: _Stream, status: int, headers: Sequence[tuple[bytes, bytes]], body: Body
    ) -> None:
        fields = _response_fields(status, headers)
        if status == 204 or status == 304 or status < 200:
            if body:
                raise ValueError("this status has no content: " + str(status))
        else:
            fields.append((b"content-length", b"%d" % len(body)))
        st.answered = True
        if not body:
            self._send_headers(stream_id, st, fields, True)
            return
        if self._send_headers(stream_id, st, fields, False):
            self._write(stream_id, st, body, True)

    def start_stream(self, stream_id: int, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        """Response HEADERS of a body that follows in pieces (SSE)."""
        st = self._writable(stream_id)
        if st is None or st.answered:
            return
        st.answered = True
        self._send_headers(stream_id, st, _response_fields(status, headers), False)

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

    def reset(self, stream_id: int, error_code: int = ErrorCodes.CANCEL) -> None:
        """RST_STREAM: drop the stream and its queued output (no StreamReset event)."""
        st = self._streams.get(stream_id)
        if st is None or st.closed or self._dead:
            return
        self._send_reset(stream_id, error_code)
        st.request = None
        st.body = None
        self._close_stream(stream_id, st)

    def release(self, stream_id: int) -> None:
        """The application is done with the stream (it answered, or gave up)."""
        st = self._streams.get(stream_id)
        if st is None:
            return
        st.released = True
        if st.closed or self._dead:
            self._forget(stream_id)

    def _send_reset(self, stream_id: int, error_code: int) -> None:
        if self._dead:
            return
        with contextlib.suppress(*_STREAM_GONE):  # the peer reset it first
            self._conn.reset_stream(stream_id, error_code)

    def _send_headers(self, stream_id: int, st: _Stream, fields: _Fields, end: bool) -> bool:
        if self._dead:
            return False
        try:
            self._conn.send_headers(stream_id, fields, end_stream=end)
        except _STREAM_GONE:
            self._stream_gone(stream_id, st)
            return False
        if end:
            st.finishing = True
            self._ended(stream_id, st)
        return True

    def _write(self, stream_id: int, st: _Stream, data: Body, end: bool) -> None:
        """Send as much as the windows allow now; queue the rest (RFC 9113 section 6.9)."""
        if end:
            st.finishing = True
        if self._dead:
            return
        if st.queue is not None or self._output_blocked:
            self._enqueue(stream_id, st, data, end)
            return
        conn = self._conn
        n = len(data)
        try:
            window = conn.local_flow_control_window(stream_id)
            frame = conn.max_outbound_frame_size
            if n <= frame and (n <= window or n == 0):  # the common case: one frame
                conn.send_data(stream_id, data, end_stream=end)
                if end:
                    self._ended(stream_id, st)
                return
            view = memoryview(data)
            pos = 0
            while pos < n and window > 0:
                take = min(n - pos, window, frame)
                last = end and pos + take == n
                conn.send_data(stream_id, view[pos : pos + take], end_stream=last)
                pos += take
                window -= take
        except _STREAM_GONE:
            self._stream_gone(stream_id, st)
            return
        if pos == n and end:
            self._ended(stream_id, st)  # (n > 0 here, so the last frame carried END_STREAM)
        elif pos < n:
            self._enqueue(stream_id, st, view[pos:], end)
            st.blocked_since = self._clock()

    def _enqueue(self, stream_id: int, st: _Stream, data: Body, end: bool) -> None:
        if st.queue is None:
            st.queue = deque()
            self._queued[stream_id] = st
        if data:
            st.queue.append(data if type(data) is memoryview else memoryview(data))
            st.queued += len(data)
        if end:
            st.end_after = True

    def _ended(self, stream_id: int, st: _Stream) -> None:
        """END_STREAM went out."""
        if st.reset_after >= 0:
            # RFC 9113 section 8.1: the client may stop sending the request.
            self._send_reset(stream_id, st.reset_after)
            st.reset_after = -1
            self._close_stream(stream_id, st)
        elif st.remote_ended:
            self._close_stream(stream_id, st)
        else:
            # Cannot happen for a request the application got (it gets complete
            # requests only); keep the bookkeeping right anyway.
            st.closed = True
            if st.released:
                self._forget(stream_id)

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

    def _pump(self, stream_id: int, st: _Stream, budget: int) -> int:
        conn = self._conn
        queue = st.queue
        assert queue is not None
        sent = 0
        try:
            window = conn.local_flow_control_window(stream_id)
            frame = conn.max_outbound_frame_size
            while queue and window > 0 and sent < budget:
                chunk = queue[0]
                take = min(len(chunk), window, frame, budget - sent)
                if take == len(chunk):
                    queue.popleft()
                else:
                    queue[0] = chunk[take:]
                    chunk = chunk[:take]
                st.queued -= take
                conn.send_data(stream_id, chunk, end_stream=st.end_after and not queue)
                sent += take
                window -= take
            if not queue and st.end_after and not sent:
                conn.send_data(stream_id, b"", end_stream=True)  # END_STREAM alone
        except _STREAM_GONE:
            self._stream_gone(stream_id, st)
            return sent
        if not queue:
            st.queue = None
            st.blocked_since = 0.0
            del self._queued[stream_id]
            if st.end_after:
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
        out = self._conn.data_to_send()
        if self._extra:
            out = bytes(self._extra) + out
            self._extra.clear()
        return out

    # -- connection end ----------------------------------------------------------

    def goaway(self) -> None:
        """Graceful shutdown (RFC 9113 section 6.8): GOAWAY(NO_ERROR) naming the
        last stream we took; open streams finish, new ones are refused.

        Built here because h2's ``close_connection`` would also stop the streams
        still being answered."""
        if self._dead or self._draining:
            return
        self._draining = True
        frame = GoAwayFrame(0, last_stream_id=self._conn.highest_inbound_stream_id, error_code=0)
        self._extra += self._conn.data_to_send()
        self._extra += frame.serialize()

    def close(self, error_code: int = ErrorCodes.NO_ERROR, reason: bytes = b"") -> None:
        """GOAWAY and stop: nothing more is sent or received."""
        if self._dead:
            return
        self._dead = True
        self._conn.close_connection(error_code, additional_data=reason or None)
        self._events.append(CONNECTION_CLOSED)

    def _die(self, code: ErrorCodes, reason: str) -> None:
        """A connection error of ours (a limit): GOAWAY with ``code``, then ProtocolError."""
        if not self._dead:
            self._conn.close_connection(code)
        self._fail(code, reason)

    def _fail(self, code: ErrorCodes, reason: str) -> None:
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
                self.close(ErrorCodes.NO_ERROR, b"no client preface")
            return
        if self._block_since and now - self._block_since > timeouts.header:
            self.close(ErrorCodes.NO_ERROR, b"header block not completed in time")
            return
        if not self._streams:
            if now - self._idle_since > timeouts.idle:
                self.close(ErrorCodes.NO_ERROR, b"idle")
            return
        for stream_id, st in list(self._streams.items()):
            if st.request is not None:
                if now - st.since > timeouts.body:
                    self._reject(stream_id, st, 408, "request timeout: the body was not received in time")
            elif st.blocked_since and now - st.blocked_since > timeouts.write:
                # The peer keeps the window shut: drop this stream, not the connection.
                self.reset(stream_id, ErrorCodes.CANCEL)
                if not st.released:
                    self._events.append(StreamReset(stream_id))
