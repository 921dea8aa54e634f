"""Fuzzing the sans-I/O HTTP/1.1 parser (mcp_fast.wire.h1).

(a) Differential against h11 on generated structured requests, valid and broken.
    Both parsers must make the same accept/reject decision and, where both accept,
    report the same method, target, headers and body. Where we differ from h11 by
    design, the difference is an explicit rule below (``Rule``), never a skip: the
    rule says what we must answer whatever h11 does.
(b) Split invariance: every way of cutting the same bytes into chunks gives the same
    events and the same error.
(c) Contract: arbitrary bytes (and mutated valid requests) never make the parser raise
    anything but ProtocolError, whose status is one of the documented ones, and what
    it does return is well-formed and within the limits.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import h11
from hypothesis import assume, event, given, note, settings
from hypothesis import strategies as st

from fuzz._support import examples
from mcp_fast.wire.events import CONNECTION_CLOSED, NEED_DATA, ContinueRequested, ProtocolError, Request
from mcp_fast.wire.h1 import H1Connection, H1Limits

ALLOWED_STATUSES = {400, 413, 414, 417, 431, 501, 505}
CRLF = b"\r\n"
DEFAULT = H1Limits()

# ---------------------------------------------------------------------------
# The rules where we answer differently from h11 on purpose (RFC 9112 / RFC 9110).
# Each is the status we MUST answer when the request has that fault, whatever h11 says.


@dataclass(frozen=True)
class Rule:
    status: int
    why: str


RULES: dict[str, Rule] = {
    # h11 accepts a bare LF as a line end; RFC 9112 section 2.2 lets a recipient do so
    # ("MAY"), we do not: a lone LF read differently by two hops is a smuggling vector.
    # In the head, a chunk-size line or the trailer section, refused as soon as it arrives.
    "bare_lf": Rule(400, "bare LF line ending in the head or the chunked framing"),
    # RFC 9112 section 2.2: a bare CR MUST be refused or replaced by SP; we refuse it.
    "bare_cr": Rule(400, "bare CR line ending in the head or the chunked framing"),
    # h11 unfolds obs-fold; RFC 9112 section 5.2 lets a server reject it with 400 instead,
    # and section 2.2 says the same for whitespace before the first field line.
    "obs_fold": Rule(400, "obs-fold / whitespace-preceded line"),
    # h11 keeps CTLs other than NUL/HT/VT/FF/CR/LF in values; RFC 9110 section 5.5 calls
    # every CTL invalid (recipients MAY keep them) and CR/LF/NUL MUST be refused.
    "ctl_in_value": Rule(400, "CTL in a field value"),
    "ctl_in_target": Rule(400, "CTL, space or non-ASCII in the request-target"),
    "space_before_colon": Rule(400, "whitespace between field name and colon (RFC 9112 5.1)"),
    "cl_conflict": Rule(400, "differing Content-Length values (RFC 9112 6.3 item 5)"),
    "bad_cl": Rule(400, "Content-Length that is not 1*DIGIT (RFC 9110 8.6)"),
    # h11 lets Transfer-Encoding override Content-Length; RFC 9112 section 6.1 lets a
    # server reject the pair instead, and we do: it is the CL.TE / TE.CL smuggling shape.
    "cl_and_te": Rule(400, "both Content-Length and Transfer-Encoding"),
    # h11 decodes chunked in HTTP/1.0; RFC 9112 section 6.1: a server MUST treat an
    # HTTP/1.0 message with Transfer-Encoding as having faulty framing.
    "http10_te": Rule(400, "Transfer-Encoding in HTTP/1.0"),
    # h11 answers 501 for every Transfer-Encoding other than "chunked"; we answer 400
    # when chunked is not the final coding (RFC 9112 6.3 item 4: length cannot be
    # determined) and 501 only for a coding we do not know (RFC 9112 6.1).
    "te_not_final": Rule(400, "chunked is not the final transfer coding"),
    "te_unknown": Rule(501, "unknown transfer coding"),
    "missing_host": Rule(400, "HTTP/1.1 request without Host (RFC 9112 3.2)"),
    "dup_host": Rule(400, "more than one Host (RFC 9112 3.2)"),
    # h11 does not look at the Host value; RFC 9112 section 3.2 says 400 for an invalid one.
    "bad_host": Rule(400, "Host value is not uri-host [ ':' port ]"),
    # h11 accepts any VCHAR run as a target; we serve only origin-form, absolute-form and
    # OPTIONS * (RFC 9112 3.2); authority-form is for CONNECT, which we do not proxy.
    "bad_target": Rule(400, "request-target form we do not serve"),
    # h11 accepts any HTTP/d.d; RFC 9110 15.6.6: 505 for a major version we do not speak.
    "bad_version": Rule(505, "HTTP version other than 1.0/1.1"),
    "malformed_version": Rule(400, "HTTP-version not HTTP/DIGIT.DIGIT"),
    # h11 accepts whitespace after the chunk size and any text after ';'; RFC 9112 7.1
    # allows BWS only around ';' and '=' of a well-formed chunk-ext.
    "chunk_size_ws": Rule(400, "whitespace at the end of a chunk-size line"),
    "bad_chunk_ext": Rule(400, "malformed chunk-ext"),
    "chunk_no_crlf": Rule(400, "chunk-data not followed by CRLF"),
    "bad_trailer": Rule(400, "malformed trailer field"),
    "truncated": Rule(400, "connection closed mid-request"),
    # h11 has no field-count limit; ours is max_header_count (RFC 6585 section 5: 431).
    "too_many_fields": Rule(431, "more header fields than max_header_count"),
    "too_many_empty_lines": Rule(400, "more than 8 empty lines before the request-line"),
}

# Where we are more lenient than h11 by design, h11 is given the canonical bytes instead:
# - empty lines before the request-line: RFC 9112 section 2.2 says a server SHOULD ignore
#   at least one; h11 refuses them ("no request line received"), so h11 gets none.
# - whitespace before the ";" of a chunk-ext: RFC 9112 section 7.1.1 allows BWS there;
#   h11 refuses it, so h11 gets the extension without it.
# - chunk-size with more than 20 hex digits (leading zeros): chunk-size = 1*HEXDIG has no
#   length limit; h11 caps it at 20 digits, so h11 gets the size without the extra zeros.

# ---------------------------------------------------------------------------
# Structured requests

TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
OBS_TEXT = "".join(chr(c) for c in range(0x80, 0x100))
CTLS = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])
SPECIAL_NAMES = {b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade"}
VALID_HOSTS = [
    b"a",
    b"example.com",
    b"localhost:8000",
    b"127.0.0.1",
    b"127.0.0.1:80",
    b"[::1]",
    b"[::1]:8080",
    b"xn--bcher-kva.example",
    b"a.b-c_d~e",
    b"host:",
    b"",
]
INVALID_HOSTS = [b"a b", b"a@b", b"a/b", b"a:b:c", b"[::1", b"a?b", b"a#b", b'"a"', b"a:port", b"a\\b"]


@dataclass
class Field:
    name: bytes
    value: bytes  # what a parser must report (no surrounding whitespace)
    wire: bytes  # the value as sent (with OWS, maybe mutated)
    sep: bytes = b":"


@dataclass
class Spec:
    method: bytes
    target: bytes
    version: bytes  # b"1.1", b"1.0", or another (mutations)
    fields: list[Field]
    framing: str  # "none", "cl", "chunked"
    body: bytes  # decoded body
    chunks: list[bytes] = field(default_factory=list)  # chunked: the size lines (ours)
    chunk_lines_h11: list[bytes] = field(default_factory=list)
    chunk_data: list[bytes] = field(default_factory=list)
    chunk_ends: list[bytes] = field(default_factory=list)  # what follows each chunk's data
    trailers: list[bytes] = field(default_factory=list)
    pre: bytes = b""
    eol: dict[int, bytes] = field(default_factory=dict)
    # Chunked: what ends each framing line instead of CRLF, by index: the size lines, then
    # the trailer lines, then the empty line that ends the trailer section.
    body_eol: dict[int, bytes] = field(default_factory=dict)
    folds: dict[int, bytes] = field(default_factory=dict)
    faults: set[str] = field(default_factory=set)
    truncate: int = 0
    cl_body_wire: bytes = b""

    # -- serialisation -------------------------------------------------------

    def head(self) -> bytes:
        lines = [self.method + b" " + self.target + b" HTTP/" + self.version]
        lines += [f.name + f.sep + f.wire for f in self.fields]
        out = bytearray()
        for i, line in enumerate(lines):
            out += line + self.eol.get(i, CRLF)
            if i in self.folds:
                out += self.folds[i] + CRLF
        out += self.eol.get(len(lines), CRLF)
        return bytes(out)

    def body_wire(self, for_h11: bool) -> bytes:
        if self.framing != "chunked":
            return self.cl_body_wire
        sizes = self.chunk_lines_h11 if for_h11 else self.chunks
        eol = self.body_eol
        out = bytearray()
        for k, (size_line, data, end) in enumerate(
            zip(sizes[:-1], self.chunk_data, self.chunk_ends, strict=True)
        ):
            out += size_line + eol.get(k, CRLF) + data + end
        last = len(sizes) - 1
        out += sizes[-1] + eol.get(last, CRLF)
        for k, trailer in enumerate(self.trailers, last + 1):
            out += trailer + eol.get(k, CRLF)
        out += eol.get(last + 1 + len(self.trailers), CRLF)
        return bytes(out)

    def message(self, for_h11: bool) -> bytes:
        msg = self.head() + self.body_wire(for_h11)
        if self.truncate:
            msg = msg[: -self.truncate]
        return msg

    def wire(self) -> bytes:
        return self.pre + self.message(False)

    def wire_h11(self) -> bytes:
        return self.message(True)

    # -- what a parser must report -------------------------------------------

    def expected_headers(self) -> dict[bytes, bytes]:
        headers: dict[bytes, bytes] = {}
        for f in self.fields:
            name = f.name.lower()
            headers[name] = headers[name] + b", " + f.value if name in headers else f.value
        authority = absolute_authority(self.target)
        if authority is not None:
            headers[b"host"] = authority
        return headers

    def expected_path(self) -> bytes:
        if self.target == b"*":
            return b"*"
        authority = absolute_authority(self.target)
        if authority is None:
            return self.target.partition(b"?")[0].partition(b"#")[0]  # no query, no fragment
        rest = self.target.split(b"://", 1)[1][len(authority) :]
        return rest.partition(b"?")[0].partition(b"#")[0] or b"/"

    def expected_keep_alive(self) -> bool:
        """RFC 9112 section 9.3, independent of the parser's code."""
        tokens = {
            t.strip(b" \t").lower()
            for f in self.fields
            if f.name.lower() == b"connection"
            for t in f.value.split(b",")
        }
        if self.version == b"1.1":
            return b"close" not in tokens
        return b"keep-alive" in tokens and b"close" not in tokens


def absolute_authority(target: bytes) -> bytes | None:
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    end = len(rest)
    for stop in b"/?#":
        i = rest.find(bytes([stop]))
        if i >= 0:
            end = min(end, i)
    return rest[:end]


def te_fault(joined: bytes) -> str | None:
    """RFC 9112 sections 6.1 and 6.3 item 4, for the one coding we implement (chunked).

    Empty list elements count as codings here: Transfer-Encoding decides the framing,
    so anything but an unambiguous "chunked" is refused.
    """
    codings = [c.strip(b" \t").lower() for c in joined.split(b",")]
    if codings == [b"chunked"]:
        return None
    if b"chunked" in codings[:-1]:
        return "te_not_final"
    return "te_unknown"


def cl_valid(values: list[bytes]) -> bool:
    """RFC 9110 section 8.6: 1*DIGIT; a list of one repeated value may be taken as one."""
    items = [item.strip(b" \t") for v in values for item in v.split(b",")]
    return all(i.isdigit() and i.isascii() for i in items) and len(set(items)) == 1


def derived_faults(spec: Spec) -> set[str]:
    """Faults that follow from the final field set (whatever mutation produced them)."""
    faults: set[str] = set()
    names = [f.name.lower() for f in spec.fields]
    hosts = names.count(b"host")
    if spec.version == b"1.1" and hosts == 0:
        faults.add("missing_host")
    if hosts > 1:
        faults.add("dup_host")
    te = [f.value for f in spec.fields if f.name.lower() == b"transfer-encoding"]
    cl = [f.value for f in spec.fields if f.name.lower() == b"content-length"]
    if te:
        if spec.version == b"1.0":
            faults.add("http10_te")
        if cl:
            faults.add("cl_and_te")
        fault = te_fault(b", ".join(te))
        if fault:
            faults.add(fault)
    elif cl and not cl_valid(cl):
        items = [item.strip(b" \t") for v in cl for item in v.split(b",")]
        faults.add("cl_conflict" if all(i.isdigit() for i in items) else "bad_cl")
    if len(spec.fields) > DEFAULT.max_header_count:
        faults.add("too_many_fields")
    return faults


# -- strategies ---------------------------------------------------------------

tokens = st.text(TCHAR, min_size=1, max_size=10).map(str.encode)
methods = st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"get"]) | tokens
origin_targets = st.text(VCHAR, max_size=30).map(lambda s: b"/" + s.encode())
hosts = st.sampled_from(VALID_HOSTS) | st.text(
    "abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=12
).map(str.encode)
absolute_targets = st.builds(
    lambda scheme, host, path: scheme + b"://" + host + path,
    st.sampled_from([b"http", b"https", b"HTTP"]),
    hosts.filter(bool),
    st.sampled_from([b"", b"/", b"/mcp", b"/a?b=c", b"?q", b"/x/y?z=1&w"])
    | st.text(VCHAR.replace("#", ""), max_size=20).map(lambda s: b"/" + s.encode()),
)
ows = st.sampled_from([b"", b" ", b"  ", b"\t", b" \t "])
field_values = st.text(VCHAR + OBS_TEXT + " \t", max_size=40).map(lambda s: s.encode("latin-1").strip(b" \t"))
common_names = st.sampled_from(
    [
        b"Accept",
        b"User-Agent",
        b"Content-Type",
        b"MCP-Protocol-Version",
        b"Origin",
        b"Cookie",
        b"X-A",
        b"Expect",
    ]
)


def random_case(draw: st.DrawFn, name: bytes) -> bytes:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return bytes(c ^ 0x20 if flip and chr(c).isalpha() else c for c, flip in zip(name, flips, strict=True))


@st.composite
def plain_fields(draw: st.DrawFn) -> Field:
    name = draw(common_names | tokens.filter(lambda n: n.lower() not in SPECIAL_NAMES))
    name = random_case(draw, name)
    if name.lower() == b"expect":
        value = draw(st.sampled_from([b"100-continue", b"100-Continue", b"foo"]))
    else:
        value = draw(field_values)
    return Field(name, value, draw(ows) + value + draw(ows))


def make_field(draw: st.DrawFn, name: bytes, value: bytes) -> Field:
    return Field(random_case(draw, name), value, draw(ows) + value + draw(ows))


VALID_EXTS = [b";a", b";a=b", b';a="q s"', b" ; a = b", b";a;b=c", b';n="\\"x\\""', b"\t;x=y"]
INVALID_EXTS = [b";", b";=v", b";a=", b';a="x', b";a b", b";a=b c", b";a=\x01", b"; ;"]


def size_line(draw: st.DrawFn, size: int) -> tuple[bytes, bytes]:
    """A chunk-size line for ours and for h11 (identical unless > 20 hex digits)."""
    digits = (b"%x" if draw(st.booleans()) else b"%X") % size
    zeros = draw(st.sampled_from([0, 0, 0, 1, 3]))
    ext = draw(st.sampled_from([b""] * 4 + VALID_EXTS))
    ours = b"0" * zeros + digits + ext
    # BWS before ";" is chunk-ext grammar (RFC 9112 7.1.1) that h11 refuses: it gets none.
    h11_line = b"0" * zeros + digits + ext.lstrip(b" \t")
    if draw(st.integers(0, 20)) == 0:  # rarely: longer than h11's 20-digit limit
        ours = b"0" * (21 - len(digits) + draw(st.integers(0, 5))) + digits + ext
    return ours, h11_line


@st.composite
def valid_requests(draw: st.DrawFn) -> Spec:
    version = draw(st.sampled_from([b"1.1"] * 4 + [b"1.0"]))
    target = draw(origin_targets | absolute_targets | st.just(b"/mcp"))
    method = draw(methods)
    if draw(st.integers(0, 15)) == 0:
        method, target = b"OPTIONS", b"*"
    fields = draw(st.lists(plain_fields(), max_size=6))
    if version == b"1.1" or draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), make_field(draw, b"Host", draw(hosts)))
    if draw(st.booleans()):
        conn = draw(
            st.sampled_from(
                [b"close", b"keep-alive", b"Keep-Alive", b"CLOSE", b"close, foo", b"foo, keep-alive"]
            )
        )
        fields.insert(draw(st.integers(0, len(fields))), make_field(draw, b"Connection", conn))
    framing = draw(st.sampled_from(["none", "cl", "chunked"] if version == b"1.1" else ["none", "cl"]))
    spec = Spec(method, target, version, fields, "none", b"")
    set_framing(draw, spec, framing)
    return spec


def set_framing(draw: st.DrawFn, spec: Spec, framing: str) -> None:
    """Give ``spec`` a body framed as ``framing`` ("none", "cl", "chunked"), replacing any."""
    if spec.framing == framing:
        return
    spec.fields = fields = [
        f for f in spec.fields if f.name.lower() not in (b"content-length", b"transfer-encoding")
    ]
    spec.framing = framing
    spec.body = spec.cl_body_wire = b""
    spec.chunks, spec.chunk_lines_h11, spec.chunk_data, spec.chunk_ends, spec.trailers = [], [], [], [], []
    spec.body_eol = {}
    if framing == "cl":
        spec.body = draw(st.binary(max_size=64))
        cl = b"0" * draw(st.sampled_from([0, 0, 0, 1, 2])) + b"%d" % len(spec.body)
        fields.insert(draw(st.integers(0, len(fields))), make_field(draw, b"Content-Length", cl))
        spec.cl_body_wire = spec.body
    elif framing == "chunked":
        data = draw(st.lists(st.binary(min_size=1, max_size=20), max_size=4))
        te = random_case(draw, b"chunked")
        fields.insert(draw(st.integers(0, len(fields))), make_field(draw, b"Transfer-Encoding", te))
        for chunk in [*data, b""]:
            ours, theirs = size_line(draw, len(chunk))
            spec.chunks.append(ours)
            spec.chunk_lines_h11.append(theirs)
        spec.chunk_data = data
        spec.chunk_ends = [CRLF] * len(data)
        spec.trailers = [t.name + b":" + t.wire for t in draw(st.lists(plain_fields(), max_size=2))]
        spec.body = b"".join(data)


# In the order they are applied (whatever order they were drawn in): first those that
# change the set of fields, the target or the version, then those that rewrite a field's
# whole value, then those that insert bytes into what is left, then those that work on
# head lines by position, and last the ones on the whole message. Otherwise a later
# mutation could remove or overwrite the fault an earlier one recorded.
MUTATIONS = [
    "missing_host",
    "http10",
    "bad_version",
    "bad_target",
    "too_many_fields",
    "dup_cl_same",
    "cl_conflict",
    "bad_cl",
    "cl_and_te",
    "te_variant",
    "dup_host",
    "bad_host",
    "bad_chunk_ext",
    "chunk_size_ws",
    "chunk_no_crlf",
    "bad_trailer",
    "ctl_in_target",
    "ctl_in_value",
    "space_before_colon",
    "bare_lf",
    "bare_cr",
    "obs_fold",
    "truncate",
    "leading_empty_lines",
]


NEEDS_CL = {"dup_cl_same", "cl_conflict", "bad_cl"}
NEEDS_CHUNKED = {"te_variant", "chunk_size_ws", "bad_chunk_ext", "chunk_no_crlf", "bad_trailer"}
# Hypothesis draws the first entries of a sampled list most often (they are "simplest"),
# so the framing and smuggling mutations come first here; the list above is the order
# they are applied in.
DRAW_ORDER = [
    "te_variant", "cl_and_te", "bare_lf", "bare_cr", "obs_fold", "cl_conflict", "ctl_in_value", "chunk_size_ws",
    "bad_chunk_ext", "chunk_no_crlf", "space_before_colon", "dup_cl_same", "bad_cl", "http10", "truncate",
    "dup_host", "bad_host", "missing_host", "bad_target", "bad_version", "ctl_in_target", "bad_trailer",
    "too_many_fields", "leading_empty_lines",
]  # fmt: skip
assert sorted(DRAW_ORDER) == sorted(MUTATIONS)


def mutate(draw: st.DrawFn, spec: Spec, mutation: str) -> None:
    """Apply one mutation; record the faults it makes (derived ones are added later)."""
    # A framing mutation first gives the request the framing it works on.
    if mutation in NEEDS_CL:
        set_framing(draw, spec, "cl")
    elif mutation in NEEDS_CHUNKED:
        set_framing(draw, spec, "chunked")
    fields = spec.fields
    n_lines = 1 + len(fields)
    if mutation == "bare_lf":
        if spec.framing == "chunked" and draw(st.booleans()):
            # Any line of the chunked framing: a size line, a trailer, the last empty line.
            spec.body_eol[draw(st.integers(0, len(spec.chunks) + len(spec.trailers)))] = b"\n"
        else:
            spec.eol[draw(st.integers(0, n_lines))] = b"\n"
        spec.faults.add("bare_lf")
    elif mutation == "bare_cr":
        # Only where the next byte cannot be an LF (which would make a CRLF of it): a head
        # line followed by another line, the last size line or a trailer line.
        if spec.framing == "chunked" and draw(st.booleans()):
            last = len(spec.chunks) - 1
            spec.body_eol[draw(st.integers(last, last + len(spec.trailers)))] = b"\r"
        else:
            spec.eol[draw(st.integers(0, n_lines - 1))] = b"\r"
        spec.faults.add("bare_cr")
    elif mutation == "obs_fold":
        spec.folds[draw(st.integers(0, n_lines - 1))] = draw(st.sampled_from([b" ", b"\t", b"  "])) + draw(
            st.sampled_from([b"folded", b"x y", b"a"])
        )
        spec.faults.add("obs_fold")
    elif mutation == "ctl_in_value" and fields:
        f = draw(st.sampled_from(fields))
        pad = len(f.wire) - len(f.wire.lstrip(b" \t"))
        pos = pad + draw(st.integers(0, len(f.value)))
        f.wire = f.wire[:pos] + bytes([draw(st.sampled_from(CTLS))]) + f.wire[pos:]
        spec.faults.add("ctl_in_value")
    elif mutation == "ctl_in_target":
        pos = draw(st.integers(1, len(spec.target)))
        bad = draw(st.sampled_from([*CTLS, 0x20, 0x80, 0xFF]))
        spec.target = spec.target[:pos] + bytes([bad]) + spec.target[pos:]
        spec.faults.add("ctl_in_target")
    elif mutation == "space_before_colon" and fields:
        draw(st.sampled_from(fields)).sep = draw(st.sampled_from([b" :", b"\t:", b"  :"]))
        spec.faults.add("space_before_colon")
    elif mutation == "dup_cl_same" and spec.framing == "cl":
        cl = next(f for f in fields if f.name.lower() == b"content-length")
        if draw(st.booleans()):
            fields.insert(draw(st.integers(0, len(fields))), make_field(draw, b"Content-Length", cl.value))
        else:
            cl.value = cl.value + b"," + draw(ows) + cl.value
            cl.wire = cl.value
    elif mutation == "cl_conflict" and spec.framing == "cl":
        other = b"%d" % (len(spec.body) + draw(st.integers(1, 5)))
        fields.insert(draw(st.integers(0, len(fields))), make_field(draw, b"Content-Length", other))
    elif mutation == "bad_cl" and spec.framing == "cl":
        cl = next(f for f in fields if f.name.lower() == b"content-length")
        n = b"%d" % len(spec.body)
        cl.value = draw(
            st.sampled_from(
                [b"+" + n, b"-" + n, b"0x" + n, n + b" " + n, b"", n + b".0", n + b";", b"\xd9\xa1", n + b"a"]
            )
        )
        cl.wire = b" " + cl.value
    elif mutation == "cl_and_te":
        if spec.framing == "chunked":
            length = b"%d" % draw(st.integers(0, 50))
            fields.insert(draw(st.integers(0, len(fields))), make_field(draw, b"Content-Length", length))
        elif spec.framing == "cl":
            fields.insert(
                draw(st.integers(0, len(fields))), make_field(draw, b"Transfer-Encoding", b"chunked")
            )
    elif mutation == "te_variant" and spec.framing == "chunked":
        te = next(f for f in fields if f.name.lower() == b"transfer-encoding")
        variants = [
            b"xchunked", b"chunkedx", b"chunked, gzip", b"gzip, chunked", b"identity", b"gzip", b"chunked,",
            b"chunked, chunked", b",chunked", b"chunked;q=1", b"CHUNKED", b"Chunked", b"", b"chunk", b"chunked , identity",
        ]  # fmt: skip
        te.value = draw(st.sampled_from(variants))
        te.wire = draw(ows) + te.value + draw(ows)
        if draw(st.booleans()):  # and/or a second Transfer-Encoding field line
            second = draw(st.sampled_from([b"chunked", b"gzip", b"identity"]))
            fields.insert(draw(st.integers(0, len(fields))), make_field(draw, b"Transfer-Encoding", second))
    elif mutation == "http10":
        spec.version = b"1.0"
    elif mutation == "missing_host":
        spec.fields = [f for f in fields if f.name.lower() != b"host"]
    elif mutation == "dup_host":
        fields.insert(draw(st.integers(0, len(fields))), make_field(draw, b"Host", draw(hosts)))
    elif mutation == "bad_host":
        hosts_present = [f for f in fields if f.name.lower() == b"host"]
        if hosts_present:
            h = hosts_present[0]
            h.value = draw(st.sampled_from(INVALID_HOSTS))
            h.wire = h.value
            spec.faults.add("bad_host")
    elif mutation == "bad_target":
        target = draw(
            st.sampled_from(
                [b"abc", b"*", b"example.com:80", b"http://", b"http:///x", b"ftp://a/b", b"HTTP:/a", b"a/b"]
            )
        )
        if not (target == b"*" and spec.method == b"OPTIONS"):
            spec.target = target
            spec.faults.add("bad_target")
    elif mutation == "bad_version":
        version = draw(
            st.sampled_from([b"1.2", b"2.0", b"0.9", b"3.1", b"1.9", b"1.10", b"1", b"11", b"1.1.1", b"A.B"])
        )
        spec.version = version
        spec.faults.add(
            "bad_version"
            if len(version) == 3 and version[1:2] == b"." and version[::2].isdigit()
            else "malformed_version"
        )
    elif mutation == "chunk_size_ws" and spec.framing == "chunked":
        i = draw(st.integers(0, len(spec.chunks) - 1))
        ws = draw(st.sampled_from([b" ", b"\t", b"  "]))
        spec.chunks[i] += ws
        spec.chunk_lines_h11[i] += ws
        spec.faults.add("chunk_size_ws")
    elif mutation == "bad_chunk_ext" and spec.framing == "chunked":
        i = draw(st.integers(0, len(spec.chunks) - 1))
        digits = b"%x" % (len(spec.chunk_data[i]) if i < len(spec.chunk_data) else 0)
        spec.chunks[i] = spec.chunk_lines_h11[i] = digits + draw(st.sampled_from(INVALID_EXTS))
        spec.faults.add("bad_chunk_ext")
    elif mutation == "chunk_no_crlf" and spec.framing == "chunked" and spec.chunk_data:
        i = draw(st.integers(0, len(spec.chunk_data) - 1))
        spec.chunk_ends[i] = draw(st.sampled_from([b"XX", b"\n", b"\rX", b"", b" \r\n"]))
        spec.faults.add("chunk_no_crlf")
    elif mutation == "bad_trailer" and spec.framing == "chunked":
        spec.trailers.append(
            draw(st.sampled_from([b"X-T : 1", b"no-colon", b" X: folded", b"X-T: a\x00b", b": v"]))
        )
        spec.faults.add("bad_trailer")
    elif mutation == "truncate":
        spec.truncate = -1  # resolved once the message is final (see requests())
    elif mutation == "too_many_fields":
        extra = DEFAULT.max_header_count + 1 - len(fields) + draw(st.integers(0, 3))
        spec.fields += [Field(b"X-F%d" % i, b"v", b" v") for i in range(max(extra, 0))]
    elif mutation == "leading_empty_lines":
        k = draw(st.integers(1, 10))
        spec.pre = CRLF * k
        if k > 8:
            spec.faults.add("too_many_empty_lines")


@st.composite
def requests(draw: st.DrawFn, max_mutations: int = 2, min_mutations: int = 0) -> Spec:
    spec = draw(valid_requests())
    drawn = draw(
        st.lists(st.sampled_from(DRAW_ORDER), min_size=min_mutations, max_size=max_mutations, unique=True)
    )
    for mutation in sorted(drawn, key=MUTATIONS.index):
        mutate(draw, spec, mutation)
    spec.faults |= derived_faults(spec)
    if spec.truncate == -1:
        spec.truncate = 0
        if spec.body_wire(True) == spec.body_wire(False):
            length = len(spec.message(False))
            spec.truncate = draw(st.integers(1, length - 1))
            spec.faults.add("truncated")
    return spec


# ---------------------------------------------------------------------------
# Running the parsers


@dataclass(frozen=True)
class Accepted:
    method: bytes
    target: bytes
    version: bytes
    headers: Any  # ours: dict; h11: list of (lower-cased name, value)
    body: bytes
    path: bytes = b""
    keep_alive: bool = True


@dataclass(frozen=True)
class Rejected:
    status: int
    reason: str


def run_ours(wire: bytes, limits: H1Limits = DEFAULT) -> tuple[Accepted | Rejected | None, object]:
    """The first request (or error) of ``wire`` fed at once, then EOF; and the event after it."""
    conn = H1Connection(limits)
    conn.receive_data(wire)
    conn.receive_data(b"")
    verdict: Accepted | Rejected | None = None
    try:
        ev = conn.next_event()
        while isinstance(ev, ContinueRequested):
            ev = conn.next_event()
        if isinstance(ev, Request):
            verdict = Accepted(
                ev.method, ev.target, ev.http_version, ev.headers, bytes(ev.body), ev.path, ev.keep_alive
            )
        else:
            return None, ev
    except ProtocolError as exc:
        return Rejected(exc.status, exc.reason), None
    try:
        after: object = conn.next_event()
    except ProtocolError as exc:
        after = Rejected(exc.status, exc.reason)
    return verdict, after


def run_h11(wire: bytes) -> Accepted | Rejected:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(wire)
    conn.receive_data(b"")
    request: h11.Request | None = None
    body = bytearray()
    try:
        while True:
            ev = conn.next_event()
            if isinstance(ev, h11.Request):
                request = ev
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                assert request is not None
                return Accepted(
                    request.method, request.target, request.http_version, list(request.headers), bytes(body)
                )
            else:
                raise AssertionError(f"unexpected h11 event {ev!r}")
    except h11.RemoteProtocolError as exc:
        return Rejected(exc.error_status_hint, str(exc))


def h11_headers_as_ours(pairs: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    joined: dict[bytes, bytes] = {}
    for name, value in pairs:
        joined[name] = joined[name] + b", " + value if name in joined else value
    return joined


def check_differential(spec: Spec) -> None:
    wire, wire_h11 = spec.wire(), spec.wire_h11()
    note(f"ours: {wire!r}")
    note(f"h11:  {wire_h11!r}")
    note(f"faults: {sorted(spec.faults)}")
    ours, after = run_ours(wire)
    theirs = run_h11(wire_h11)
    note(f"ours -> {ours!r}; h11 -> {theirs!r}")
    intended = {RULES[f].status for f in spec.faults}
    for fault in spec.faults:
        event(f"fault: {fault}")
    if not spec.faults:
        event("h11 rejects" if isinstance(theirs, Rejected) else "both accept")
    if intended:
        # We must refuse, with the status of one of the faults present (when a request
        # has several, the first one found decides) or h11's status for it.
        assert isinstance(ours, Rejected), f"accepted a request with faults {sorted(spec.faults)}"
        allowed = intended | ({theirs.status} if isinstance(theirs, Rejected) else set())
        assert ours.status in allowed, (ours, sorted(spec.faults))
        return
    # No rule applies: the same decision as h11, with the same status.
    if isinstance(theirs, Rejected):
        assert isinstance(ours, Rejected), f"h11 refused ({theirs.reason}) but we accepted"
        assert ours.status == theirs.status, (ours, theirs)
        return
    assert isinstance(ours, Accepted), f"h11 accepted but we answered {ours!r}"
    assert after is CONNECTION_CLOSED, after
    # What both report.
    assert ours.method == theirs.method == spec.method
    assert ours.target == theirs.target == spec.target
    assert ours.version == theirs.version == spec.version
    assert ours.body == theirs.body == spec.body
    expected = spec.expected_headers()
    assert ours.headers == expected
    from_h11 = h11_headers_as_ours(theirs.headers)
    if absolute_authority(spec.target) is not None:
        # RFC 9112 3.2.2: with an absolute-form target the authority replaces Host (and
        # stands in for a missing one in HTTP/1.0); h11 reports the Host field as sent.
        assert ours.headers.pop(b"host") == absolute_authority(spec.target)
        from_h11.pop(b"host", None)
    assert set(ours.headers) == set(from_h11)
    for name, value in ours.headers.items():
        other = from_h11[name]
        if name == b"content-length":
            # h11 collapses "5, 5" (or two fields) into "5"; we keep the joined field value.
            assert int(value.split(b",")[0]) == int(other)
        elif name == b"transfer-encoding":
            assert value.lower() == other  # h11 lower-cases it
        else:
            assert value == other
    assert ours.path == spec.expected_path()
    assert ours.keep_alive == spec.expected_keep_alive()


@settings(max_examples=examples(300))
@given(requests(min_mutations=1))
def test_differential_against_h11(spec: Spec) -> None:
    check_differential(spec)


@settings(max_examples=examples(100))
@given(valid_requests())
def test_valid_requests_are_accepted_like_h11(spec: Spec) -> None:
    spec.faults |= derived_faults(spec)
    check_differential(spec)


# ---------------------------------------------------------------------------
# (b) split invariance


def norm_request(req: Request) -> tuple[object, ...]:
    return (
        "req",
        req.method,
        req.target,
        req.path,
        dict(req.headers),
        bytes(req.body),
        req.keep_alive,
        req.http_version,
    )


def events_of(chunks: list[bytes], limits: H1Limits, eof: bool) -> list[tuple[object, ...]]:
    """Every event the chunks produce (ContinueRequested checked and dropped), up to an end."""
    conn = H1Connection(limits)
    out: list[tuple[object, ...]] = []
    continued = False

    def drain(chunk: bytes | None = None) -> bool:
        nonlocal continued
        while True:
            try:
                # The server takes the first event with feed() (its fast path), then next_event().
                ev = conn.feed(chunk) if chunk is not None else conn.next_event()
                chunk = None
            except ProtocolError as exc:
                out.append(("error", exc.status))
                return False
            if ev is NEED_DATA:
                return True
            if ev is CONNECTION_CLOSED:
                out.append(("closed",))
                return False
            if isinstance(ev, ContinueRequested):
                # Split-dependent by design (only while a body is missing), so not an event
                # to compare; but it may only come once, before the body of an HTTP/1.1
                # request that asked for it.
                assert not continued, "two ContinueRequested for one request"
                continued = True
                continue
            assert isinstance(ev, Request)
            if continued:
                assert ev.http_version == b"1.1"
                assert b"100-continue" in ev.headers.get(b"expect", b"").lower()
            continued = False
            out.append(norm_request(ev))

    for chunk in chunks:
        if not drain(chunk):
            return out
    if eof:
        conn.receive_data(b"")
        drain()
    return out


limits_strategy = st.one_of(
    st.just(DEFAULT),
    st.builds(
        H1Limits,
        max_header_bytes=st.integers(16, 400),
        max_header_count=st.integers(1, 12),
        max_target_bytes=st.integers(1, 80),
        max_body_bytes=st.integers(0, 80),
    ),
)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """One to three requests back to back (valid or broken), maybe followed by junk."""
    parts = [draw(requests(max_mutations=1)).wire() for _ in range(draw(st.integers(1, 3)))]
    if draw(st.booleans()):
        parts.append(
            draw(st.sampled_from([b"", CRLF, b"\r\n\r\n", b"GET", b"\x16\x03\x01", b"G\r\n\r\n", b"\n"]))
        )
    return b"".join(parts)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at ``points`` (taken modulo its length); no empty piece (b"" means EOF)."""
    bounds = [0, *sorted({p % (len(data) + 1) for p in points}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(max_examples=examples(250))
@given(streams(), limits_strategy, st.lists(st.integers(0, 10_000), max_size=12), st.booleans())
def test_split_invariance(data: bytes, limits: H1Limits, points: list[int], eof: bool) -> None:
    whole = events_of([data], limits, eof)
    pieces = cut(data, points)
    note(f"pieces: {pieces!r}")
    assert events_of(pieces, limits, eof) == whole


@settings(max_examples=examples(60))
@given(requests(max_mutations=1), limits_strategy)
def test_byte_by_byte_equals_whole(spec: Spec, limits: H1Limits) -> None:
    data = spec.wire()
    assume(len(data) <= 600)
    whole = events_of([data], limits, True)
    assert events_of([data[i : i + 1] for i in range(len(data))], limits, True) == whole


# ---------------------------------------------------------------------------
# (c) contract: only ProtocolError, with a documented status; output within limits

HTTPISH = [
    b"GET", b"POST", b" ", b"/", b"/mcp", b"*", b"http://a/", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"\r\n", b"\r\n\r\n",
    b"\r", b"\n", b"\x00", b"\t", b":", b": ", b"Host", b"Content-Length", b"Transfer-Encoding", b"chunked", b"Expect",
    b"100-continue", b"Connection", b"close", b"keep-alive", b"0", b"5", b"ff", b"99999999999999999999", b";", b"=", b'"',
    b",", b"a", b"\x80", b"\xff", b"x" * 70,
]  # fmt: skip
httpish = st.lists(st.sampled_from(HTTPISH), max_size=60).map(b"".join)


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(requests(max_mutations=1)).wire())
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4) | st.sampled_from(HTTPISH))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 30))]
    return bytes(data)


def check_contract(chunks: list[bytes], limits: H1Limits, eof: bool) -> None:
    conn = H1Connection(limits)
    error: ProtocolError | None = None
    closed = False

    def drain(chunk: bytes | None = None) -> None:
        nonlocal error, closed
        for _ in range(1000):
            try:
                ev = conn.feed(chunk) if chunk is not None else conn.next_event()
                chunk = None
            except ProtocolError as exc:
                assert exc.status in ALLOWED_STATUSES, (exc.status, exc.reason)
                assert isinstance(exc.reason, str) and exc.reason
                if error is not None:
                    assert (exc.status, exc.reason) == (error.status, error.reason), "error is not sticky"
                error = exc
                return
            except Exception as exc:
                raise AssertionError(f"parser raised {type(exc).__name__}: {exc}") from exc
            assert error is None, "an event after a ProtocolError"
            if ev is NEED_DATA:
                assert not closed
                if conn.has_partial_head:
                    # A head that cannot end within the limit is refused at once: nothing
                    # beyond max_header_bytes (plus ignored empty lines) is held for it.
                    assert conn.buffered_bytes < limits.max_header_bytes + 16
                return
            if ev is CONNECTION_CLOSED:
                closed = True
                return
            if isinstance(ev, ContinueRequested):
                continue
            assert isinstance(ev, Request), ev
            assert not closed
            check_request(ev, limits)
        raise AssertionError("next_event never returned NEED_DATA")

    for chunk in chunks:
        drain(chunk)
        if error is not None or closed:
            break
    if eof:
        conn.receive_data(b"")
        drain()
    # Sticky end states.
    if error is not None:
        try:
            conn.next_event()
        except ProtocolError as again:
            assert again.status == error.status
        else:
            raise AssertionError("ProtocolError is not sticky")
    elif closed:
        assert conn.next_event() is CONNECTION_CLOSED


def check_request(req: Request, limits: H1Limits) -> None:
    assert type(req.method) is bytes and req.method and all(chr(c) in TCHAR for c in req.method)
    assert type(req.target) is bytes and 0 < len(req.target) <= limits.max_target_bytes
    assert all(0x21 <= c <= 0x7E for c in req.target)
    assert req.http_version in (b"1.0", b"1.1")
    assert len(req.headers) <= limits.max_header_count
    for name, value in req.headers.items():
        assert name and name == name.lower() and all(chr(c) in TCHAR for c in name)
        assert b"\r" not in value and b"\n" not in value and b"\x00" not in value
        # Surrounding OWS is not part of a value (a joined empty value may end in ", ").
        assert not value.startswith((b" ", b"\t"))
    body = bytes(req.body)
    assert len(body) <= limits.max_body_bytes
    cl = req.headers.get(b"content-length")
    if cl is not None:
        assert b"transfer-encoding" not in req.headers
        assert len(body) == int(cl.split(b",")[0])
    elif b"transfer-encoding" not in req.headers:
        assert body == b""
    if req.http_version == b"1.1":
        assert b"host" in req.headers


@settings(max_examples=examples(300))
@given(
    st.binary(max_size=600) | httpish,
    limits_strategy,
    st.lists(st.integers(0, 10_000), max_size=6),
    st.booleans(),
)
def test_contract_random_bytes(data: bytes, limits: H1Limits, points: list[int], eof: bool) -> None:
    check_contract(cut(data, points), limits, eof)


@settings(max_examples=examples(200))
@given(mutated_requests(), limits_strategy, st.lists(st.integers(0, 10_000), max_size=6), st.booleans())
def test_contract_mutated_requests(data: bytes, limits: H1Limits, points: list[int], eof: bool) -> None:
    check_contract(cut(data, points), limits, eof)


@settings(max_examples=examples(100))
@given(streams(), limits_strategy)
def test_contract_generated_streams(data: bytes, limits: H1Limits) -> None:
    check_contract([data], limits, True)


def test_rules_table_statuses_are_documented() -> None:
    assert {rule.status for rule in RULES.values()} <= ALLOWED_STATUSES
