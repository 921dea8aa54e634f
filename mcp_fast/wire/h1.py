"""Sans-I/O HTTP/1.1 server side: a request parser and response writers.

No asyncio and no I/O here. The network layer feeds received bytes to
``H1Connection.receive_data`` and pulls events with ``next_event`` (h11
style): one ``Request`` (head plus complete body) per call, so pipelined
requests come out one at a time and the network layer answers them in order.

Rules follow RFC 9112 (HTTP/1.1 message syntax) and RFC 9110 (semantics);
the comments cite the sections. The parser is deliberately strict wherever
leniency has enabled request smuggling: only CRLF line endings, no obs-fold,
no whitespace before the colon, one unambiguous body length.

A bare LF or a bare CR (RFC 9112 section 2.2) in a head, a chunk-size line or
a trailer section is refused with 400 as soon as it arrives: such a client
would otherwise wait for a CRLFCRLF that never comes. Where the same bytes
break more than one rule, the answer is the refusal the shortest prefix of
them already calls for, so it does not depend on how the bytes were split.

Speed notes (this is the hot path):

* A request that arrives whole in one ``receive_data`` chunk is parsed
  straight from that ``bytes`` object; nothing is copied into the buffer.
  Only partial data is moved into a ``bytearray``.
* The end of a partial head is searched for incrementally (``_scan``), so
  trickled bytes are not rescanned.
* Header lines and request lines are validated by compiled regexes, and the
  validated results are kept in small bounded module-level caches keyed by
  the exact line bytes: clients repeat the same ``Host``, ``User-Agent``,
  ``Accept`` ... lines on every request, so the common request costs one
  ``split`` plus a dict lookup per line. Only lines that passed validation
  are cached, so a cache hit is exactly as strict as a miss.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from mcp_fast.wire.events import (
    CONNECTION_CLOSED,
    NEED_DATA,
    Body,
    ContinueRequested,
    Event,
    ProtocolError,
    Request,
    path_of,
)

__all__ = [
    "CHUNKED_END",
    "CONTINUE_RESPONSE",
    "H1Connection",
    "H1Limits",
    "encode_chunk",
    "encode_response",
    "error_response",
    "response_head",
    "valid_host",
]


@dataclass(frozen=True, slots=True)
class H1Limits:
    """Per-connection size limits; exceeding one is a ``ProtocolError``."""

    max_header_bytes: int = 16 * 1024  # whole head (request line + fields + CRLFCRLF) -> 431
    max_header_count: int = 100  # field lines in the head (and in a trailer section) -> 431
    max_target_bytes: int = 8 * 1024  # request-target length -> 414
    max_body_bytes: int = 4 * 1024 * 1024  # Content-Length or decoded chunked size -> 413

    def __post_init__(self) -> None:
        if min(self.max_header_bytes, self.max_header_count, self.max_target_bytes) < 1:
            raise ValueError("H1Limits: header and target limits must be positive")
        if self.max_body_bytes < 0:
            raise ValueError("H1Limits: max_body_bytes must not be negative")


# ---------------------------------------------------------------------------
# Grammar (RFC 9110 section 5.6.2 token, 5.5 field-value; RFC 9112 section 3)

# tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
#         "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
_TCHAR: Final = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_TCHARS: Final = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Lookup table: _IS_TCHAR[byte] is 1 for a tchar (first byte of a request line).
_IS_TCHAR: Final = bytes(1 if c in _TCHARS else 0 for c in range(256))
# field-vchar = VCHAR / obs-text; field-value = *field-content with SP/HTAB
# only between visible characters (surrounding OWS is not part of the value).
_VCHAR: Final = rb"[\x21-\x7e\x80-\xff]"
_FIELD_VALUE: Final = rb"((?:" + _VCHAR + rb"(?:[\t\x20-\x7e\x80-\xff]*" + _VCHAR + rb")?)?)"

# field-line = field-name ":" OWS field-value OWS (RFC 9112 section 5).
# No whitespace before the colon (section 5.1), no CTL but HTAB in the value,
# so bare CR, bare LF and NUL never match (sections 2.2 and 5.5 of RFC 9110).
_FIELD_LINE: Final = re.compile(b"(" + _TCHAR + rb"+):[ \t]*" + _FIELD_VALUE + rb"[ \t]*")

# request-line = method SP request-target SP HTTP-version (RFC 9112 section 3);
# HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive (section 2.3). The
# target may only hold visible ASCII (RFC 3986 percent-encodes the rest).
_REQUEST_LINE: Final = re.compile(b"(" + _TCHAR + rb"+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")

# absolute-form (RFC 9112 section 3.2.2): scheme "://" authority path-abempty [ "?" query ]
_ABSOLUTE_FORM: Final = re.compile(rb"[Hh][Tt][Tt][Pp][Ss]?://([^/?#]*)([^?#]*)(.*)")

# Host = uri-host [ ":" port ] (RFC 9110 section 7.2); uri-host is an
# IP-literal in brackets or a reg-name/IPv4 (RFC 3986 section 3.2.2). No
# userinfo ("@"), no whitespace. Empty is allowed (RFC 9112 section 3.2).
_HOST: Final = re.compile(rb"(?:\[[0-9A-Za-z:.\-_~!$&'()*+,;=]+\]|[0-9A-Za-z\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")

# chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF (RFC 9112 section 7.1)
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
_QUOTED_STRING: Final = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_CHUNK_LINE: Final = re.compile(
    rb"([0-9A-Fa-f]+)(?:[ \t]*;[ \t]*"
    + _TCHAR
    + rb"+(?:[ \t]*=[ \t]*(?:"
    + _TCHAR
    + rb"+|"
    + _QUOTED_STRING
    + rb"))?)*"
)
# RFC 9112 section 2.2: a line ends in CRLF. A bare LF (one not preceded by CR) may be taken as
# a line end and a bare CR must be refused or read as SP; we refuse both (400): a lone LF that
# two hops read differently is a smuggling vector. "\r[^\n]" needs the byte after the CR, so a
# CR that ends the data so far is not judged until that byte arrives. Searched only where a
# line end is missing or a line failed, never on the common path.
_BARE_CR_LF: Final = re.compile(rb"\r[^\n]|(?<!\r)\n")
_BARE_CR_LF_REASON: Final = "bare CR or LF: lines must end with CRLF"

# A chunk-size line (size plus extensions) longer than this is refused: the
# extensions are discarded, so they must not be a way to make us buffer.
_MAX_CHUNK_LINE: Final = 4096

# RFC 9112 section 2.2: a server SHOULD ignore at least one empty line before
# the request-line. We ignore a few, then treat it as garbage.
_MAX_EMPTY_LINES: Final = 8

# Bodies at least this long are handed out as a memoryview of the received
# data instead of a copy. Smaller copies are cheaper than a memoryview.
_ZERO_COPY_MIN: Final = 8192

# The validated-line caches (see the module docstring). Bounded in entries
# and in key length so a client sending unique lines costs a little memory
# and a cache reset, never more.
_CACHE_MAX_ENTRIES: Final = 1024
_CACHE_MAX_LINE: Final = 1024
# A keep-alive client sends the same head with every request (wrk, an SDK's session: only the
# body changes); the parser keeps its last POST head up to this size and, when the next one is
# the same bytes, takes its parse instead of splitting and looking up each line again. GET heads
# are not kept: a connection holding an idle stream keeps nothing more. After this many
# different heads in a row (a trace id or an idempotency key in each), it stops trying.
_REPEAT_MAX_HEAD: Final = 2048
_REPEAT_GIVE_UP: Final = 4
# Fields whose value is new with every request (a trace id, an idempotency key): their lines are
# never seen twice, so caching them would only push out the lines every request shares. (A
# session id or a token repeats with every request of its client: those are cached.)
_UNCACHED_FIELDS: Final = frozenset(
    {b"traceparent", b"tracestate", b"idempotency-key", b"x-request-id", b"last-event-id"}
)

# What a connection's chunk buffer is while no chunked body is under way (never written to).
_NO_CHUNKS: Final = bytearray()

_V11: Final = b"1.1"
_V10: Final = b"1.0"

# A parsed request line: method, target, path, is HTTP/1.0, authority of an
# absolute-form target (None for origin-form and "*").
_RequestLine = tuple[bytes, bytes, bytes, bool, "bytes | None"]
_RL_CACHE: dict[bytes, _RequestLine] = {}
_FIELD_CACHE: dict[bytes, tuple[bytes, bytes]] = {}
# (size, head bytes, method, target, path, headers, version, body length); kept only for a
# keep-alive POST, so its keep_alive is True
_RepeatedHead = tuple[int, bytes, bytes, bytes, bytes, dict[bytes, bytes], bytes, int]

# Parser states.
_IDLE: Final = 0  # waiting for (or inside) a request head
_BODY: Final = 1  # head parsed, Content-Length body incomplete
_CHUNKED: Final = 2  # head parsed, chunked body incomplete
_DONE: Final = 3  # a request without keep-alive was returned
_ERROR: Final = 4  # a ProtocolError was raised

# Sub-states of the chunked decoder.
_C_SIZE: Final = 0  # expecting a chunk-size line
_C_DATA: Final = 1  # inside chunk-data
_C_CRLF: Final = 2  # expecting the CRLF after chunk-data
_C_TRAILERS: Final = 3  # after the last-chunk: trailer section then CRLF


# ---------------------------------------------------------------------------
# Line parsers (cache misses and error paths; not per request)


def _parse_request_line(line: bytes) -> _RequestLine:
    """Validate a request-line (RFC 9112 section 3) and split it."""
    m = _REQUEST_LINE.fullmatch(line)
    if m is None:
        raise ProtocolError(400, "malformed request line")
    method, target, major, minor = m.groups()
    # RFC 9112 section 2.3 / RFC 9110 section 15.6.6: only HTTP/1.0 and
    # HTTP/1.1 are spoken here; a well-formed other version gets 505.
    if major != b"1" or minor not in (b"0", b"1"):
        raise ProtocolError(505, "HTTP version not supported")
    http10 = minor == b"0"
    first = target[0]
    if first == 0x2F:  # "/": origin-form (RFC 9112 section 3.2.1)
        return method, target, path_of(target), http10, None
    if target == b"*":
        # asterisk-form is only for a server-wide OPTIONS (section 3.2.4).
        if method != b"OPTIONS":
            raise ProtocolError(400, "asterisk-form target is only allowed with OPTIONS")
        return method, target, target, http10, None
    # absolute-form (section 3.2.2): a server MUST accept it; the path is
    # what the application routes on, the authority replaces Host.
    a = _ABSOLUTE_FORM.fullmatch(target)
    if a is None:
        # authority-form (CONNECT) and anything else is not served here.
        raise ProtocolError(400, "unsupported request-target form")
    authority, path, _rest = a.groups()
    if not authority or _HOST.fullmatch(authority) is None:
        raise ProtocolError(400, "invalid authority in request-target")
    return method, target, path or b"/", http10, authority


def valid_host(value: bytes) -> bool:
    """Whether ``value`` is a valid ``Host`` / ``:authority`` (RFC 9110 section 7.2, no userinfo)."""
    return _HOST.fullmatch(value) is not None


def _request_line(line: bytes) -> _RequestLine:
    rl = _parse_request_line(line)
    if len(line) <= _CACHE_MAX_LINE:
        if len(_RL_CACHE) >= _CACHE_MAX_ENTRIES:
            _RL_CACHE.clear()
        _RL_CACHE[line] = rl
    return rl


def _parse_field_line(line: bytes | bytearray) -> tuple[bytes, bytes]:
    """Validate a field-line (RFC 9112 section 5); return (lower-cased name, value)."""
    m = _FIELD_LINE.fullmatch(line)
    if m is None:
        if line[:1] in (b" ", b"\t"):
            # RFC 9112 section 5.2: obs-fold is refused in requests (400).
            raise ProtocolError(400, "obsolete line folding is not allowed")
        name, colon, _ = line.partition(b":")
        if colon and name.rstrip(b" \t") != name:
            # RFC 9112 section 5.1: whitespace between name and colon -> 400.
            raise ProtocolError(400, "whitespace before colon in header field")
        raise ProtocolError(400, "invalid header field")
    name = m.group(1).lower()
    value = m.group(2)
    if name == b"host" and _HOST.fullmatch(value) is None:
        # RFC 9112 section 3.2: an invalid Host value -> 400. Checked here so
        # that a cached Host line is known to be valid.
        raise ProtocolError(400, "invalid Host header")
    return name, value


def _field_line(line: bytes) -> tuple[bytes, bytes]:
    kv = _parse_field_line(line)
    if len(line) <= _CACHE_MAX_LINE and kv[0] not in _UNCACHED_FIELDS:
        if len(_FIELD_CACHE) >= _CACHE_MAX_ENTRIES:
            _FIELD_CACHE.clear()
        _FIELD_CACHE[line] = kv
    return kv


def _fields(lines: list[bytes]) -> dict[bytes, bytes]:
    """Field lines, parsed and cached; a repeated name's values joined with ", " in order
    (RFC 9110 section 5.3)."""
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, value = _FIELD_CACHE.get(line) or _field_line(line)
        if name in headers:
            if name == b"host":
                # RFC 9112 section 3.2: more than one Host -> 400.
                raise ProtocolError(400, "multiple Host header fields")
            value = headers[name] + b", " + value
        headers[name] = value
    return headers


# ---------------------------------------------------------------------------
# Field semantics


def _has_token(value: bytes, token: bytes) -> bool:
    """Whether a comma-separated token list holds ``token`` (case-insensitive)."""
    low = value.lower()
    if low == token:
        return True
    if b"," not in low:
        return False
    return any(item.strip(b" \t") == token for item in low.split(b","))


def _content_length(value: bytes) -> int:
    """Content-Length = 1*DIGIT (RFC 9110 section 8.6).

    Repeated fields arrive joined as ``"5, 5"``; a list of identical values
    may be taken as one (section 8.6), anything else is an error: differing
    lengths are the classic smuggling vector (RFC 9112 section 6.3).
    """
    if not value.isdigit():  # bytes.isdigit is ASCII-only: no "+5", "-1", "0x10", " 5 5"
        items = [item.strip(b" \t") for item in value.split(b",")]
        first = items[0]
        if not first.isdigit() or any(item != first for item in items):
            raise ProtocolError(400, "invalid Content-Length")
        value = first
    if len(value) > 18:
        # Beyond any limit; also keeps int() away from its digit limit.
        value = value.lstrip(b"0") or b"0"
        if len(value) > 18:
            return 10**18
    return int(value)


def _reject_transfer_coding(value: bytes) -> ProtocolError:
    """The error for any Transfer-Encoding other than exactly ``chunked``."""
    codings = [item.strip(b" \t").lower() for item in value.split(b",")]
    if b"chunked" in codings[:-1]:
        # RFC 9112 section 6.3: chunked not final -> length unknown -> 400.
        return ProtocolError(400, "chunked must be the final transfer coding")
    # RFC 9112 section 6.1: an unknown transfer coding -> 501. Only plain
    # "chunked" is accepted, so "gzip, chunked", "xchunked", "chunked ;",
    # "identity" all land here.
    return ProtocolError(501, "unsupported transfer coding")


def _check_trailers(data: bytes | bytearray, start: int, end: int, max_count: int) -> None:
    """Validate a trailer section (RFC 9112 section 7.1.2); the fields are discarded."""
    if _BARE_CR_LF.search(data, start, end + 4) is not None:
        # Checked first: had the section arrived in pieces, the bare CR/LF would have been
        # refused before it was complete (see _next_chunked), whatever else is wrong with it.
        raise ProtocolError(400, _BARE_CR_LF_REASON)
    lines = data[start:end].split(b"\r\n")
    if len(lines) > max_count:
        raise ProtocolError(431, "too many trailer fields")
    for line in lines:
        _parse_field_line(line)


def _incomplete() -> ProtocolError:
    return ProtocolError(400, "incomplete request")


# ---------------------------------------------------------------------------
# The connection


class H1Connection:
    """Server side of one HTTP/1.1 connection, without I/O.

    ``receive_data(b"")`` signals EOF. ``next_event`` returns at most one
    message per call: ``Request``, ``ContinueRequested`` (the request's
    ``Expect: 100-continue`` is waiting for an answer), ``NEED_DATA`` or
    ``CONNECTION_CLOSED``. Bad input raises ``ProtocolError``; the connection
    is dead afterwards and keeps raising it.

    Buffering: pending bytes are either ``_src[_pos:]`` (an immutable chunk
    as received, parsed without a copy) or ``_buf`` (a bytearray that
    accumulates partial data); never both.
    """

    __slots__ = (
        "_buf",
        "_chunks",
        "_cstate",
        "_empty_lines",
        "_eof",
        "_error",
        "_line_limit",
        "_line_ok",
        "_max_body",
        "_max_count",
        "_max_head",
        "_max_target",
        "_need",
        "_pos",
        "_repeat",
        "_repeat_misses",
        "_req",
        "_scan",
        "_src",
        "_state",
        "client",
    )

    def __init__(self, limits: H1Limits = H1Limits()) -> None:
        self._max_head = limits.max_header_bytes
        self._max_count = limits.max_header_count
        self._max_target = limits.max_target_bytes
        self._max_body = limits.max_body_bytes
        # A request-line longer than this is refused with 414 even before it
        # is complete: the target limit plus room for method and version.
        self._line_limit = limits.max_target_bytes + 64
        self._src = b""
        self._pos = 0
        self._buf = bytearray()
        self._eof = False
        self._state = _IDLE
        self._error: ProtocolError | None = None
        # Per-message state.
        self._scan = 0  # pending bytes already searched for the end of the head
        self._line_ok = False  # the request-line end was seen within limits
        self._empty_lines = 0
        self._req: Request | None = None  # head waiting for its body
        # The last POST head and what it parsed to (see _parse_head); misses in a row.
        self._repeat: _RepeatedHead | None = None
        self._repeat_misses = 0
        self._need = 0  # body bytes (or chunk-data bytes) still expected
        self._cstate = _C_SIZE
        self._chunks = _NO_CHUNKS  # a chunked body gets its own (_start_body): idle connections share this
        # The peer's address, put on every request (set by the network adapter).
        self.client: tuple[str, int] | None = None

    # -- properties for the network layer's timeouts and flow control ------

    @property
    def in_body(self) -> bool:
        """A head was parsed and its body is still incomplete."""
        return self._state == _BODY or self._state == _CHUNKED

    @property
    def has_partial_head(self) -> bool:
        """Bytes of a next request head are buffered but not yet returned as a request."""
        return self._state == _IDLE and (bool(self._buf) or self._pos < len(self._src))

    @property
    def at_rest(self) -> bool:
        """Nothing to parse: no pending bytes, no message under way, no EOF to report."""
        return self._state == _IDLE and not self._eof and not self._buf and self._pos == len(self._src)

    @property
    def buffered_bytes(self) -> int:
        """Received bytes not yet consumed (decoded chunk data is not counted)."""
        return len(self._buf) + len(self._src) - self._pos

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add received bytes; ``b""`` means the peer closed its side."""
        if not data:
            self._eof = True
            return
        if self._state >= _DONE or self._eof:
            return  # nothing more will be parsed: drop it
        if type(data) is not bytes:
            data = bytes(data)  # we keep references; a mutable buffer could change
        buf = self._buf
        if buf:
            buf += data
        elif self._pos == len(self._src):
            # Fast path: nothing pending, keep the chunk itself (no copy).
            self._src = data
            self._pos = 0
        else:
            # Partial data left in the previous chunk moves to the buffer.
            buf += memoryview(self._src)[self._pos :]
            buf += data
            self._src = b""
            self._pos = 0

    def feed(self, data: bytes) -> Event:
        """``receive_data(data)`` then ``next_event()``, in one call.

        The common case -- nothing pending and ``data`` starts with a whole
        request head -- goes straight to the head parser: no copy, no state
        juggling. Everything else takes the general path.
        """
        if (
            self._state == _IDLE
            and not self._buf
            and self._pos == len(self._src)
            and type(data) is bytes
            and data
            and not self._eof
            and _IS_TCHAR[data[0]]
        ):
            end = data.find(b"\r\n\r\n", 0, self._max_head)
            if end >= 0:
                # Nothing was pending, so the per-head state (_scan, _line_ok,
                # _empty_lines) is still at rest: _parse_head may skip resetting it.
                self._src = data
                self._pos = 0
                self._empty_lines = 0  # CRLFs skipped before this head (section 2.2) count no more
                try:
                    return self._parse_head(data, 0, end)
                except ProtocolError as exc:
                    error = self._head_error(data, 0, end, exc)
                    self._fail(error)
                    raise error from None
        self.receive_data(data)
        return self.next_event()

    # -- output --------------------------------------------------------------

    def next_event(self) -> Event:
        """Parse at most one message; see the class docstring."""
        state = self._state
        try:
            if state == _IDLE:
                return self._next_head()
            if state == _BODY:
                return self._next_body()
            if state == _CHUNKED:
                return self._next_chunked()
        except ProtocolError as exc:
            self._fail(exc)
            raise
        if state == _DONE:
            return CONNECTION_CLOSED
        error = self._error
        assert error is not None
        raise ProtocolError(error.status, error.reason)

    def _fail(self, exc: ProtocolError) -> None:
        self._state = _ERROR
        self._error = exc
        self._src = b""
        self._pos = 0
        self._buf = bytearray()
        self._chunks = _NO_CHUNKS
        self._req = None

    def _finish(self, req: Request) -> Request:
        """Reset the per-message state after a complete request."""
        self._scan = 0
        self._line_ok = False
        self._empty_lines = 0
        self._req = None
        if req.keep_alive:
            self._state = _IDLE
        else:
            # RFC 9112 section 9.6: after "close" no further request is read.
            self._state = _DONE
            self._src = b""
            self._pos = 0
            self._buf = bytearray()
        return req

    # -- head ----------------------------------------------------------------

    def _skip_empty_lines(self) -> Event | None:
        """Handle a CR at the start of pending data (RFC 9112 section 2.2).

        Returns NEED_DATA/CONNECTION_CLOSED when nothing is left to parse,
        None to go on. A CR that does not start a CRLF is a bare CR: 400.
        """
        buf = self._buf
        while True:
            if buf:
                data: bytes | bytearray = buf
                pos = 0
            else:
                data = self._src
                pos = self._pos
            n = len(data)
            if pos == n:
                return CONNECTION_CLOSED if self._eof else NEED_DATA
            if data[pos] != 0x0D:
                return None
            if n - pos < 2:
                if self._eof:
                    raise _incomplete()
                return NEED_DATA
            if data[pos + 1] != 0x0A:
                raise ProtocolError(400, "bare CR before request line")
            self._empty_lines += 1
            if self._empty_lines > _MAX_EMPTY_LINES:
                raise ProtocolError(400, "too many empty lines before request line")
            if data is buf:
                del buf[:2]
            else:
                self._pos = pos + 2
            self._scan = 0

    def _head_incomplete(self, data: bytes | bytearray, start: int) -> Event:
        """No end of head yet: enforce the limits now, then wait for more.

        Each refusal here shows at a fixed length of the head so far: a request-line with no
        CRLF at ``limit``, a bare CR or LF where it is, a head too large at ``max_head``. The
        one that shows first wins (on a tie, in that order), as it would have had the bytes
        come one at a time, so the answer does not depend on how they were split.
        """
        avail = len(data) - start
        max_head = self._max_head
        # RFC 9112 section 3: a request-line longer than we accept -> 414.
        # Looked for only within max_head so that the answer does not depend
        # on how the bytes were split.
        limit = self._line_limit + 2
        too_long = False
        if not self._line_ok and min(avail, max_head) >= limit:
            if data.find(b"\r\n", start, start + limit) < 0:
                too_long = True
            else:
                self._line_ok = True
        # RFC 9112 section 2.2: a bare CR or LF, searched for in what is new (a CR that ended
        # the previous data is within the 3 bytes rescanned).
        bare = _BARE_CR_LF.search(data, start + self._scan)
        if too_long and (bare is None or bare.end() - start >= limit):
            raise ProtocolError(414, "request-target too long")
        if bare is not None and bare.end() - start <= max_head:
            raise ProtocolError(400, _BARE_CR_LF_REASON)
        if avail >= max_head:
            # The head cannot end within the limit any more (RFC 6585 section 5).
            raise ProtocolError(431, "request header section too large")
        if self._eof:
            raise _incomplete()
        # The terminator may start in the last 3 bytes: rescan only those.
        self._scan = avail - 3 if avail > 3 else 0
        return NEED_DATA

    def _next_head(self) -> Event:
        buf = self._buf
        if buf:
            if buf[0] == 0x0D:
                ev = self._skip_empty_lines()
                if ev is not None:
                    return ev
            if buf:
                if not _IS_TCHAR[buf[0]]:
                    # A request-line starts with a method token: reject
                    # garbage (e.g. TLS to a plain port) at once.
                    raise ProtocolError(400, "malformed request line")
                end = buf.find(b"\r\n\r\n", self._scan, self._max_head)
                if end < 0:
                    return self._head_incomplete(buf, 0)
                # The head is complete: continue from an immutable copy.
                self._src = src = bytes(buf)
                buf.clear()
                self._reset_head_state()
                try:
                    return self._parse_head(src, 0, end)
                except ProtocolError as exc:
                    raise self._head_error(src, 0, end, exc) from None
        src = self._src
        pos = self._pos
        if pos == len(src):
            return CONNECTION_CLOSED if self._eof else NEED_DATA
        first = src[pos]
        if not _IS_TCHAR[first]:
            if first == 0x0D:
                ev = self._skip_empty_lines()
                if ev is not None:
                    return ev
                return self._next_head()
            raise ProtocolError(400, "malformed request line")
        end = src.find(b"\r\n\r\n", pos + self._scan, pos + self._max_head)
        if end < 0:
            return self._head_incomplete(src, pos)
        self._reset_head_state()
        try:
            return self._parse_head(src, pos, end)
        except ProtocolError as exc:
            raise self._head_error(src, pos, end, exc) from None

    def _reset_head_state(self) -> None:
        """The head is complete: what was remembered while it arrived is done with."""
        self._scan = 0
        self._line_ok = False
        self._empty_lines = 0

    def _head_error(self, src: bytes, pos: int, end: int, exc: ProtocolError) -> ProtocolError:
        """The refusal of the complete head ``src[pos:end + 4]`` that raised ``exc``.

        Only on the error path. Had the head come in pieces, a bare CR or LF in it would have
        been refused before it was complete (``_head_incomplete``) unless the request-line was
        too long first (414): that refusal is the answer, whatever else the head breaks, so
        the answer does not depend on how the bytes were split.
        """
        bare = _BARE_CR_LF.search(src, pos, end + 4)
        if bare is None:
            return exc
        limit = self._line_limit + 2
        if self._max_head >= limit and bare.end() - pos >= limit and src.find(b"\r\n", pos, pos + limit) < 0:
            return exc  # the request-line was too long first: _parse_head raised 414
        return ProtocolError(400, _BARE_CR_LF_REASON)

    def _parse_head(self, src: bytes, pos: int, end: int) -> Event:
        """Parse the head ``src[pos:end + 4]`` (``end`` is where CRLFCRLF starts)."""
        repeat = self._repeat
        if repeat is not None and repeat[0] == end - pos and src.startswith(repeat[1], pos):
            # The same bytes as the last POST head: the same request-line, fields and framing.
            _, _, method, target, path, headers, version, length = repeat
            self._repeat_misses = 0
            return self._head_parsed(src, end, method, target, path, headers.copy(), True, version, length)
        return self._parse_new_head(src, pos, end)

    def _parse_new_head(self, src: bytes, pos: int, end: int) -> Event:
        """``_parse_head`` for a head unlike the last one."""
        lines = src[pos:end].split(b"\r\n")
        line = lines[0]
        if len(line) > self._line_limit:
            raise ProtocolError(414, "request-target too long")
        rl = _RL_CACHE.get(line)
        if rl is None:
            rl = _request_line(line)
        method, target, path, http10, authority = rl
        if len(target) > self._max_target:
            raise ProtocolError(414, "request-target too long")
        if len(lines) > self._max_count + 1:
            raise ProtocolError(431, "too many header fields")

        # Field lines: lower-cased names, repeated fields joined with ", "
        # (RFC 9110 section 5.3). Known lines come from the cache in one pass;
        # a name seen twice shows as a dict shorter than the list of fields.
        del lines[0]
        try:
            headers = dict(map(_FIELD_CACHE.__getitem__, lines))
        except KeyError:
            headers = _fields(lines)
        else:
            if len(headers) != len(lines):
                headers = _fields(lines)

        if authority is not None:
            # RFC 9112 section 3.2.2: with an absolute-form target the Host
            # field is ignored and replaced by the target's authority.
            if b"host" not in headers and not http10:
                raise ProtocolError(400, "missing Host header")
            headers[b"host"] = authority
        elif not http10 and b"host" not in headers:
            # RFC 9112 section 3.2: an HTTP/1.1 request without Host -> 400.
            raise ProtocolError(400, "missing Host header")

        # Message body length (RFC 9112 section 6.3).
        length = 0
        te = headers.get(b"transfer-encoding")
        cl = headers.get(b"content-length")
        if te is not None:
            if http10:
                # RFC 9112 section 6.1: Transfer-Encoding in HTTP/1.0 means
                # the framing is faulty.
                raise ProtocolError(400, "Transfer-Encoding in an HTTP/1.0 request")
            if cl is not None:
                # RFC 9112 section 6.1 and 6.3 item 3: both present is a
                # smuggling attempt; refuse instead of guessing.
                raise ProtocolError(400, "both Transfer-Encoding and Content-Length")
            if te.lower() != b"chunked":
                raise _reject_transfer_coding(te)
            length = -1
        elif cl is not None:
            length = int(cl) if cl.isdigit() and len(cl) < 19 else _content_length(cl)
            if length > self._max_body:
                # Refuse before buffering any of the body (RFC 9110 section 15.5.14).
                raise ProtocolError(413, "request body too large")

        # Persistence (RFC 9112 section 9.3): HTTP/1.1 stays open unless
        # "close", HTTP/1.0 closes unless "keep-alive".
        conn = headers.get(b"connection")
        if conn is None:
            keep_alive = not http10
        else:
            conn = conn.lower()
            if conn == b"keep-alive":
                keep_alive = True
            elif conn == b"close":
                keep_alive = False
            elif http10:
                keep_alive = _has_token(conn, b"keep-alive")
            else:
                keep_alive = not _has_token(conn, b"close")
        version = _V10 if http10 else _V11

        if (
            method == b"POST"
            and keep_alive
            and end - pos <= _REPEAT_MAX_HEAD
            and self._repeat_misses < _REPEAT_GIVE_UP
        ):
            if self._repeat is not None:
                self._repeat_misses += 1
            self._repeat = (
                end - pos,
                src[pos:end],
                method,
                target,
                path,
                headers.copy(),
                version,
                length,
            )
        elif self._repeat is not None:
            self._repeat = None  # another kind of request (a GET stream): keep nothing
        return self._head_parsed(src, end, method, target, path, headers, keep_alive, version, length)

    def _head_parsed(
        self,
        src: bytes,
        end: int,
        method: bytes,
        target: bytes,
        path: bytes,
        headers: dict[bytes, bytes],
        keep_alive: bool,
        version: bytes,
        length: int,
    ) -> Event:
        """The request of a parsed head, with its body when all of it is here."""
        start = end + 4
        body: Body
        if length == 0:
            stop = start
            body = b""
        elif length > 0 and len(src) - start >= length:
            # Fast path: the whole body is here.
            stop = start + length
            body = src[start:stop] if length < _ZERO_COPY_MIN else memoryview(src)[start:stop]
        else:
            head = Request(method, target, path, headers, b"", keep_alive, version, 1, self.client)
            return self._start_body(head, start, length)
        if stop == len(src):
            # All of it taken: let the chunk go (a body slice keeps what it needs), so an idle
            # connection or a long GET stream holds no copy of its last request.
            self._src = b""
            self._pos = 0
        else:
            self._pos = stop
        req = Request(method, target, path, headers, body, keep_alive, version, 1, self.client)
        if keep_alive:
            return req  # _finish for the common case: the head state was reset before parsing
        return self._finish(req)

    def _start_body(self, req: Request, start: int, length: int) -> Event:
        """The head is parsed, the body (``length`` bytes, -1 = chunked) is not all here."""
        self._req = req
        self._pos = start
        # RFC 9110 section 10.1.1: "100-continue" is honoured for HTTP/1.1
        # only; other expectations are ignored (the MAY-417 is not used).
        expect = req.headers.get(b"expect")
        want_continue = (
            expect is not None and req.http_version == _V11 and _has_token(expect, b"100-continue")
        )
        if length > 0:
            self._state = _BODY
            self._need = length
            ev = self._next_body()
        else:
            self._state = _CHUNKED
            self._cstate = _C_SIZE
            self._chunks = bytearray()
            ev = self._next_chunked()
        if ev is NEED_DATA and want_continue:
            return ContinueRequested()
        return ev

    # -- Content-Length body -------------------------------------------------

    def _next_body(self) -> Event:
        need = self._need
        req = self._req
        assert req is not None
        buf = self._buf
        body: Body
        if buf:
            if len(buf) < need:
                if self._eof:
                    raise _incomplete()
                return NEED_DATA
            if need >= _ZERO_COPY_MIN:
                # Hand the bytearray itself over (as a view) and keep only
                # the tail: no copy of a large body.
                view = memoryview(buf)
                body = view[:need]
                self._buf = bytearray(view[need:])
            else:
                with memoryview(buf) as view:
                    body = bytes(view[:need])
                del buf[:need]
        else:
            src = self._src
            pos = self._pos
            if len(src) - pos < need:
                if self._eof:
                    raise _incomplete()
                return NEED_DATA
            stop = pos + need
            body = src[pos:stop] if need < _ZERO_COPY_MIN else memoryview(src)[pos:stop]
            self._pos = stop
        req.body = body
        return self._finish(req)

    # -- chunked body (RFC 9112 section 7.1) ---------------------------------

    def _next_chunked(self) -> Event:
        buf = self._buf
        data: bytes | bytearray
        if buf:
            data = buf
            i = 0
        else:
            data = self._src
            i = self._pos
        n = len(data)
        cstate = self._cstate
        chunks = self._chunks
        done = False
        while True:
            if cstate == _C_SIZE:
                j = data.find(b"\r\n", i, i + _MAX_CHUNK_LINE + 2)
                if j < 0:
                    if n - i >= _MAX_CHUNK_LINE + 2:
                        raise ProtocolError(400, "chunk size line too long")
                    # No CRLF yet, so any LF here is bare, and so is a CR with something
                    # after it (RFC 9112 section 2.2): refuse now, the line would never end.
                    if data.find(b"\n", i, n) >= 0 or data.find(b"\r", i, n - 1) >= 0:
                        raise ProtocolError(400, _BARE_CR_LF_REASON)
                    break
                m = _CHUNK_LINE.fullmatch(data, i, j)
                if m is None:
                    raise ProtocolError(400, "invalid chunk size line")
                size = int(m.group(1), 16)
                i = j + 2
                if size == 0:  # last-chunk
                    cstate = _C_TRAILERS
                    self._scan = 0
                    continue
                if len(chunks) + size > self._max_body:
                    raise ProtocolError(413, "request body too large")
                self._need = size
                cstate = _C_DATA
            elif cstate == _C_DATA:
                take = n - i
                if take <= 0:
                    break
                need = self._need
                if take > need:
                    take = need
                with memoryview(data) as view:
                    chunks += view[i : i + take]
                i += take
                need -= take
                self._need = need
                if need:
                    break
                cstate = _C_CRLF
            elif cstate == _C_CRLF:
                # chunk-data is followed by exactly CRLF.
                if n - i < 2:
                    if n - i == 1 and data[i] != 0x0D:
                        raise ProtocolError(400, "chunk data not followed by CRLF")
                    break
                if data[i] != 0x0D or data[i + 1] != 0x0A:
                    raise ProtocolError(400, "chunk data not followed by CRLF")
                i += 2
                cstate = _C_SIZE
            else:  # _C_TRAILERS: trailer-section CRLF (section 7.1.2)
                if n - i >= 2 and data[i] == 0x0D and data[i + 1] == 0x0A:
                    i += 2
                    done = True
                    break
                end = data.find(b"\r\n\r\n", i + self._scan, i + self._max_head)
                if end < 0:
                    # A bare CR or LF (RFC 9112 section 2.2) in what is new: refused now, before
                    # the size limit if it shows first (as for a head, see _head_incomplete).
                    bare = _BARE_CR_LF.search(data, i + self._scan)
                    if bare is not None and bare.end() - i <= self._max_head:
                        raise ProtocolError(400, _BARE_CR_LF_REASON)
                    if n - i >= self._max_head:
                        raise ProtocolError(431, "trailer section too large")
                    self._scan = n - i - 3 if n - i > 3 else 0
                    break
                _check_trailers(data, i, end, self._max_count)
                i = end + 4
                done = True
                break
        if data is buf:
            del buf[:i]
        else:
            self._pos = i
        self._cstate = cstate
        if done:
            req = self._req
            assert req is not None
            req.body = memoryview(chunks) if len(chunks) >= _ZERO_COPY_MIN else bytes(chunks)
            self._chunks = _NO_CHUNKS
            self._cstate = _C_SIZE
            return self._finish(req)
        if self._eof:
            raise _incomplete()
        return NEED_DATA


# ---------------------------------------------------------------------------
# Writers: pure functions returning bytes for ``transport.writelines``.

_STATUS_CODES: Final = (
    100, 200, 202, 204, 400, 403, 404, 405, 406, 408, 409, 413, 414, 415, 417,
    422, 429, 431, 500, 501, 503, 505,
)  # fmt: skip
_STATUS_LINES: Final[dict[int, bytes]] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, HTTPStatus(code).phrase.encode("ascii")) for code in _STATUS_CODES
}

_CONTENT_LENGTH: Final = b"Content-Length: %d\r\n"
_CONTENT_LENGTH_LAST: Final = b"Content-Length: %d\r\n\r\n"
_CONNECTION_CLOSE: Final = b"Connection: close\r\n"
_CONNECTION_KEEP_ALIVE: Final = b"Connection: keep-alive\r\n"
_TRANSFER_CHUNKED: Final = b"Transfer-Encoding: chunked\r\n"
_CRLF: Final = b"\r\n"
_COLON_SP: Final = b": "
_TEXT_PLAIN: Final = (b"Content-Type", b"text/plain; charset=utf-8")

CHUNKED_END: Final = b"0\r\n\r\n"
CONTINUE_RESPONSE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is not None:
        return line
    if not 100 <= status <= 999:
        raise ValueError("invalid HTTP status code")
    try:
        phrase = HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        phrase = b""  # reason-phrase may be empty (RFC 9112 section 4)
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


# RFC 9110 section 6.6.1: an origin server with a clock MUST send Date. The network layer
# calls set_date once a second; every head built in that second carries the same line.
_date_line = b""


def set_date(http_date: str) -> None:
    """The current time as an IMF-fixdate (``email.utils.formatdate(usegmt=True)``), sent in
    every response head from now on; ``""``: no Date (a server without a clock)."""
    global _date_line
    line = b"Date: " + http_date.encode("ascii") + _CRLF if http_date else b""
    if line != _date_line:
        _date_line = line
        _HEAD_PREFIXES.clear()  # their heads carry the old date


def response_head(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    *,
    content_length: int | None,
    keep_alive: bool,
    http10: bool = False,
    chunked: bool = False,
) -> bytes:
    """A response head: status line, fields, framing fields, empty line.

    The status line always says HTTP/1.1, also to HTTP/1.0 clients (RFC 9110
    section 6.2). ``headers`` must not carry Content-Length,
    Transfer-Encoding or Connection: those come from the keyword arguments.
    A CR or LF inside a name or value raises ValueError (response splitting).
    """
    if chunked and (http10 or content_length is not None):
        # HTTP/1.0 has no chunked coding (RFC 9112 section 6.1), and a
        # message has one framing.
        raise ValueError("chunked responses need HTTP/1.1 and no Content-Length")
    parts = [_status_line(status)]
    lines = 2  # status line and the final empty line
    if _date_line:
        parts.append(_date_line)
        lines += 1
    for name, value in headers:
        parts += (name, _COLON_SP, value, _CRLF)
        lines += 1
    if content_length is not None:
        parts.append(_CONTENT_LENGTH % content_length)
        lines += 1
    if chunked:
        parts.append(_TRANSFER_CHUNKED)
        lines += 1
    if not keep_alive:
        parts.append(_CONNECTION_CLOSE)
        lines += 1
    elif http10:
        # HTTP/1.0 closes by default; keep-alive has to be said (RFC 9112 section C.2.2).
        parts.append(_CONNECTION_KEEP_ALIVE)
        lines += 1
    parts.append(_CRLF)
    head = b"".join(parts)
    # Each line ends in CRLF, so any other CR or LF came from a field.
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise ValueError("CR or LF in a response header field")
    return head


_HEAD_PREFIXES: dict[tuple[int, tuple[tuple[bytes, bytes], ...], bool, bool], bytes] = {}
_HEAD_PREFIXES_MAX: Final = 64


def encode_response(
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    *,
    keep_alive: bool,
    http10: bool = False,
) -> list[bytes]:
    """A complete response with a Content-Length body: ``[head, body]``.

    1xx, 204 and 304 responses carry no body and no Content-Length (RFC 9110
    sections 8.6 and 15.3.5); ``body`` must be empty for them.

    Header sets given as tuples (constants, in practice) have their encoded
    head remembered, so the common answer costs one concatenation.
    """
    if type(headers) is tuple and status != 204 and status != 304 and status >= 200:
        key = (status, headers, keep_alive, http10)
        prefix = _HEAD_PREFIXES.get(key)
        if prefix is None:
            # The head without its final CRLF; Content-Length goes last.
            prefix = response_head(
                status, headers, content_length=None, keep_alive=keep_alive, http10=http10
            )[:-2]
            if len(_HEAD_PREFIXES) < _HEAD_PREFIXES_MAX:
                _HEAD_PREFIXES[key] = prefix
        return [prefix + _CONTENT_LENGTH_LAST % len(body), body]
    if status == 204 or status == 304 or status < 200:
        if body:
            raise ValueError("this status has no content: " + str(status))
        return [
            response_head(status, headers, content_length=None, keep_alive=keep_alive, http10=http10),
            body,
        ]
    return [
        response_head(status, headers, content_length=len(body), keep_alive=keep_alive, http10=http10),
        body,
    ]


def encode_chunk(data: bytes) -> list[bytes]:
    """One chunk of a chunked body (RFC 9112 section 7.1).

    Empty data gives ``[]``: a zero-size chunk would end the body.
    """
    if not data:
        return []
    return [b"%x\r\n" % len(data), data, _CRLF]


def error_response(
    status: int,
    reason: str,
    *,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
    keep_alive: bool = False,
) -> list[bytes]:
    """A plain-text error response, body ``reason + "\\n"``.

    Closes the connection unless ``keep_alive`` (after a ProtocolError the
    connection must close).
    """
    body = (reason + "\n").encode("utf-8")
    headers = [_TEXT_PLAIN, *extra_headers]
    return encode_response(status, headers, body, keep_alive=keep_alive)
