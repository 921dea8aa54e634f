"""Server-Sent Events encoder (WHATWG HTML, "Server-sent events", section 9.2).

Sans-I/O: returns the bytes of one event. A data value that holds line breaks
(CR, LF or CRLF) is split into several ``data:`` lines, which a conforming
parser joins back with LF; orjson output never holds raw line breaks, so the
JSON-RPC path takes the one-line fast path.
"""

from __future__ import annotations

import re
from typing import Final

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_FIELD_FORBIDDEN = re.compile(rb"[\r\n\x00]")

SSE_CONTENT_TYPE: Final = b"text/event-stream"
KEEPALIVE_COMMENT: Final = b": keep-alive\n\n"


def _check_field(name: str, value: bytes) -> None:
    # An id or event name with a line break would start a new field; NUL in an id
    # makes parsers ignore it (9.2.6). Refuse rather than corrupt the stream.
    if _FIELD_FORBIDDEN.search(value):
        raise ValueError(f"SSE {name} must not contain CR, LF or NUL")


def encode_event(
    data: bytes,
    *,
    event_id: bytes | None = None,
    event: bytes | None = None,
    retry_ms: int | None = None,
) -> bytes:
    """One event; ``event`` None means the default type ``message``."""
    head = b""
    if event_id is not None:
        _check_field("id", event_id)
        head += b"id: " + event_id + b"\n"
    if event is not None:
        _check_field("event", event)
        head += b"event: " + event + b"\n"
    if retry_ms is not None:
        # The field is ASCII digits only; a parser ignores anything else (9.2.6).
        if retry_ms < 0:
            raise ValueError("SSE retry must not be negative")
        head += b"retry: %d\n" % retry_ms
    if b"\n" not in data and b"\r" not in data:
        return head + b"data: " + data + b"\n\n"
    lines = _LINE_BREAK.split(data)
    return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


def encode_message(json_bytes: bytes) -> bytes:
    """The hot path: one JSON-RPC message as a ``message`` event, no id."""
    if b"\n" in json_bytes or b"\r" in json_bytes:
        return encode_event(json_bytes)
    return b"data: " + json_bytes + b"\n\n"


def encode_comment(text: bytes) -> bytes:
    """A comment line (ignored by clients; keeps proxies from cutting idle streams)."""
    return b"".join(b": " + line + b"\n" for line in _LINE_BREAK.split(text)) + b"\n"
