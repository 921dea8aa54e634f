"""HTTP/2 frames (RFC 9113 sections 4 and 6): the 9-byte header, the payload rules of
each frame type, and the frames a server writes. Sans-I/O, no state.

Parsing is split in two, so limits act where the bytes arrive: ``FrameHeader`` is
read from the 9 bytes alone (the length is checked before any payload is buffered),
and the payload helpers below check one frame's payload once it is complete. A
payload that breaks its frame type's rules raises ``FrameError`` with the error
code and whether it is a stream or a connection error (RFC 9113 section 5.4).
"""

from __future__ import annotations

import enum
import struct
from typing import Final, NamedTuple

__all__ = [
    "FRAME_HEADER_SIZE",
    "PREFACE",
    "ErrorCode",
    "Flag",
    "FrameError",
    "FrameType",
    "Setting",
]

# RFC 9113 section 3.4: the client connection preface.
PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_SIZE: Final = 9
# Length (24 bits) and type packed in one 32-bit word, then flags and the stream id.
HEADER: Final = struct.Struct(">IBI")
# RFC 9113 section 4.2: SETTINGS_MAX_FRAME_SIZE starts at, and may not go below, 2^14.
MIN_MAX_FRAME_SIZE: Final = 16384
MAX_MAX_FRAME_SIZE: Final = (1 << 24) - 1
MAX_WINDOW: Final = (1 << 31) - 1  # section 6.9.1
DEFAULT_WINDOW: Final = 65535  # section 6.9.2


class FrameType(enum.IntEnum):
    """Section 6 (and 11.2); other types are ignored (section 4.1)."""

    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


class Flag(enum.IntFlag):
    END_STREAM = 0x1  # DATA, HEADERS
    ACK = 0x1  # SETTINGS, PING
    END_HEADERS = 0x4  # HEADERS, CONTINUATION
    PADDED = 0x8  # DATA, HEADERS
    PRIORITY = 0x20  # HEADERS


class ErrorCode(enum.IntEnum):
    """Section 7."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class Setting(enum.IntEnum):
    """Section 6.5.2."""

    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6


class FrameError(Exception):
    """A frame broke a rule of RFC 9113. ``stream_id`` 0: a connection error (GOAWAY),
    else a stream error on that stream (RST_STREAM). Internal to the core: it never
    leaves ``H2Connection.receive_data``."""

    def __init__(self, code: ErrorCode, reason: str, stream_id: int = 0) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.stream_id = stream_id


class FrameHeader(NamedTuple):
    length: int
    kind: int
    flags: int
    stream_id: int


def parse_header(data: bytes | bytearray | memoryview, at: int = 0) -> FrameHeader:
    """The 9-byte frame header at ``at`` (section 4.1); the reserved bit is ignored."""
    return FrameHeader(
        (data[at] << 16) | (data[at + 1] << 8) | data[at + 2],
        data[at + 3],
        data[at + 4],
        int.from_bytes(data[at + 5 : at + 9], "big") & 0x7FFFFFFF,
    )


# -- payload rules ---------------------------------------------------------------------


def unpad(payload: bytes, flags: int, stream_id: int) -> bytes:
    """The payload without its padding (sections 6.1 and 6.2)."""
    if not flags & 0x8:  # PADDED
        return payload
    if not payload or payload[0] >= len(payload):
        # "If the length of the padding is the length of the frame payload or greater,
        # the recipient MUST treat this as a connection error of type PROTOCOL_ERROR."
        raise FrameError(ErrorCode.PROTOCOL_ERROR, "padding as long as the frame")
    return payload[1 : len(payload) - payload[0]]


def headers_fragment(payload: bytes, flags: int, stream_id: int) -> bytes:
    """A HEADERS frame's field block fragment (section 6.2): padding and priority removed."""
    block = unpad(payload, flags, stream_id)
    if flags & 0x20:  # PRIORITY
        if len(block) < 5:
            raise FrameError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
        if int.from_bytes(block[:4], "big") & 0x7FFFFFFF == stream_id:
            # Section 5.3.1: a stream cannot depend on itself.
            raise FrameError(ErrorCode.PROTOCOL_ERROR, "stream depends on itself", stream_id)
        block = block[5:]
    return block


def check_priority(payload: bytes, stream_id: int) -> None:
    """Section 6.3: a PRIORITY frame is otherwise ignored (RFC 9113 deprecates the scheme)."""
    if len(payload) != 5:
        raise FrameError(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY frame of the wrong size", stream_id)
    if int.from_bytes(payload[:4], "big") & 0x7FFFFFFF == stream_id:
        raise FrameError(ErrorCode.PROTOCOL_ERROR, "stream depends on itself", stream_id)


def error_code_of(payload: bytes) -> int:
    """RST_STREAM's error code (section 6.4)."""
    if len(payload) != 4:
        raise FrameError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM frame of the wrong size")
    return int.from_bytes(payload, "big")


def window_increment(payload: bytes) -> int:
    """WINDOW_UPDATE's increment (section 6.9); 0 is the caller's to judge."""
    if len(payload) != 4:
        raise FrameError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE frame of the wrong size")
    return int.from_bytes(payload, "big") & 0x7FFFFFFF


def settings_of(payload: bytes) -> list[tuple[int, int]]:
    """(identifier, value) pairs of a SETTINGS frame (section 6.5.1), values unchecked."""
    if len(payload) % 6:
        raise FrameError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
    return [
        (int.from_bytes(payload[i : i + 2], "big"), int.from_bytes(payload[i + 2 : i + 6], "big"))
        for i in range(0, len(payload), 6)
    ]


# -- frames we write ---------------------------------------------------------------------


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return HEADER.pack((len(payload) << 8) | kind, flags, stream_id) + payload


def data_header(length: int, end_stream: bool, stream_id: int) -> bytes:
    """The 9 bytes before a DATA payload (the payload follows uncopied)."""
    return HEADER.pack(length << 8, 1 if end_stream else 0, stream_id)


def headers_frames(stream_id: int, block: bytes, end_stream: bool, max_frame: int) -> list[bytes]:
    """HEADERS, then CONTINUATION frames when the block is longer than a frame (section 6.10)."""
    flags = Flag.END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return [frame(FrameType.HEADERS, flags | Flag.END_HEADERS, stream_id, block)]
    pieces = [block[i : i + max_frame] for i in range(0, len(block), max_frame)]
    out = [frame(FrameType.HEADERS, flags, stream_id, pieces[0])]
    for i, piece in enumerate(pieces[1:], 2):
        last = Flag.END_HEADERS if i == len(pieces) else 0
        out.append(frame(FrameType.CONTINUATION, last, stream_id, piece))
    return out


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(FrameType.RST_STREAM, 0, stream_id, code.to_bytes(4, "big"))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(FrameType.WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4, "big"))


def settings(values: dict[int, int]) -> bytes:
    payload = b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in values.items())
    return frame(FrameType.SETTINGS, 0, 0, payload)


SETTINGS_ACK: Final = frame(FrameType.SETTINGS, Flag.ACK, 0)


def ping_ack(payload: bytes) -> bytes:
    return frame(FrameType.PING, Flag.ACK, 0, payload)


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(FrameType.GOAWAY, 0, 0, last_stream_id.to_bytes(4, "big") + code.to_bytes(4, "big") + debug)
