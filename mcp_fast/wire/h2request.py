"""The head of an HTTP/2 request (RFC 9113 section 8): pseudo-header fields, field
names and values, joined repeated fields. Sans-I/O, no state but two bounded caches.

``parse_head`` turns a decoded field list into a ``Head`` and says what makes it
malformed (section 8.1.1), without deciding what to answer: the connection core
does that (a 400 and a stream error). A ``Head`` is immutable, so the core reuses
it for a repeated header block (the same bytes with an unchanged HPACK table).
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from mcp_fast.wire.h1 import valid_host

__all__ = ["Head", "field_problem", "parse_head", "request_problem"]

# RFC 9113 section 8.2.2: connection-specific fields must not appear in HTTP/2.
CONNECTION_SPECIFIC: Final = frozenset(
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


class Head(NamedTuple):
    """A request head as received; ``malformed`` says why it is not a valid request ("")."""

    method: bytes | None
    path: bytes | None
    authority: bytes | None
    headers: dict[bytes, bytes]  # shared by every use of the Head: copy before changing
    size: int  # section 6.5.2 field section size
    field_count: int  # fields other than pseudo-header fields
    malformed: str


def parse_head(fields: list[tuple[bytes, bytes]]) -> Head:
    """Section 8.3: pseudo-header fields first, each at most once; regular fields
    checked by ``field_problem``; repeated fields joined (cookie with "; ", 8.2.3). The first
    problem found is the one reported."""
    method = path = scheme = authority = None
    headers: dict[bytes, bytes] = {}
    size = 0
    count = 0
    malformed = ""
    regular = False
    for field in fields:
        name, value = field
        size += len(name) + len(value) + 32  # RFC 9113 section 6.5.2
        if name[:1] == b":":  # pseudo-header fields (section 8.3)
            if regular:
                malformed = malformed or "pseudo-header field after a regular field"
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
                malformed = malformed or "unknown pseudo-header field"  # (:status included: 8.3)
            continue
        regular = True
        count += 1
        if field not in _VALID_FIELDS:
            problem = field_problem(name, value)
            if problem:
                malformed = malformed or problem
                continue
            if len(_VALID_FIELDS) >= _VALID_FIELDS_MAX:
                _VALID_FIELDS.clear()
            _VALID_FIELDS[(name, value)] = None
        previous = headers.get(name)
        if previous is None:
            headers[name] = value
        elif name == b"host":
            malformed = malformed or "repeated host"  # (as in HTTP/1.1, RFC 9112 section 3.2)
        elif name == b"cookie":
            headers[name] = previous + b"; " + value  # section 8.2.3
        else:
            # Repeated fields joined as in HTTP/1.1 (RFC 9110 section 5.3).
            headers[name] = previous + b", " + value
    if not malformed:
        malformed = request_problem(method, path, scheme, authority, headers.get(b"host"))
    length = headers.get(b"content-length")
    if not malformed and length is not None and not length.isdigit():
        malformed = "invalid content-length"  # (RFC 9110 section 8.6)
    return Head(method, path, authority, headers, size, count, malformed)


def field_problem(name: bytes, value: bytes) -> str:
    """What is wrong with a request field (RFC 9113 section 8.2), or ""."""
    if not name or _BAD_NAME.search(name) is not None:
        # Lower-case token characters only (sections 8.2 and 8.2.1; RFC 9110 5.1).
        return "invalid field name"
    if name in CONNECTION_SPECIFIC or (name == b"te" and value.lower() != b"trailers"):
        return "connection-specific field"  # section 8.2.2
    if value and (_BAD_VALUE.search(value) is not None or value[0] in b" \t" or value[-1] in b" \t"):
        return "invalid field value"  # section 8.2.1
    return ""


def request_problem(
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
