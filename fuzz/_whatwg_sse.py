"""A small, independent Server-Sent Events parser written from the WHATWG HTML standard,
section 9.2.6 "Interpreting an event stream" (https://html.spec.whatwg.org/#event-stream-interpretation).

Used as the reference the SSE encoder is checked against; it shares no code with
``mcp_fast.wire.sse``. It reads a complete stream (bytes) and returns the events a
browser's EventSource would dispatch, in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# 9.2.5: end-of-line = ( cr lf / cr / lf )
_EOL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class SseEvent:
    type: str
    data: str
    last_event_id: str


@dataclass
class ParsedStream:
    events: list[SseEvent]
    retry: int | None  # the last reconnection time set by a valid "retry" field
    last_event_id: str


def parse(stream: bytes) -> ParsedStream:
    # 9.2.5: the stream is decoded as UTF-8 (decode with replacement); one leading
    # BOM is ignored.
    text = stream.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = _EOL.split(text)
    # The part after the last line break is an incomplete line: at the end of the
    # stream it is discarded (9.2.6: "pending data must be discarded").
    lines.pop()

    events: list[SseEvent] = []
    data = ""
    event_type = ""
    last_event_id = ""
    retry: int | None = None
    for line in lines:
        if line == "":
            # Dispatch the event (9.2.6, "dispatch the event").
            if data == "":
                event_type = ""
                continue
            if data.endswith("\n"):
                data = data[:-1]
            events.append(SseEvent(event_type or "message", data, last_event_id))
            data = ""
            event_type = ""
            continue
        if line.startswith(":"):
            continue  # a comment
        if ":" in line:
            name, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id":
            if "\x00" not in value:
                last_event_id = value
        elif name == "retry" and value and all("0" <= c <= "9" for c in value):
            retry = int(value)
        # Any other field name is ignored.
    return ParsedStream(events, retry, last_event_id)


def normalise_newlines(text: str) -> str:
    """CRLF and CR become LF (what a data value looks like after a round trip)."""
    return _EOL.sub("\n", text)
