"""HPACK (RFC 7541) for the HTTP/2 core: the ``hpack`` package decodes what clients
send; responses are encoded here, statelessly, so that the encoding of a constant
header set is computed once and reused.

Encoding uses the static table and literals "without indexing" (RFC 7541 section
6.2.2) only: the dynamic table of our encoder stays empty, so a header block is a
pure function of its fields and can be cached, and the peer's decoder never has to
keep our entries. When the peer lowers SETTINGS_HEADER_TABLE_SIZE below the size our
encoder is assumed to use, the next block starts with a dynamic table size update
(RFC 7541 section 4.2, 6.3), as decoders such as nghttp2 require.

Decoding keeps a small per-connection cache of header blocks made only of indexed
fields (every byte 0x81..0xFE: one indexed field each, RFC 7541 section 6.1). Such a
block does not change the dynamic table, and its meaning changes only when another
block does, which empties the cache. Clients repeat the same request headers, so a
repeated request costs one dict look-up.
"""

from __future__ import annotations

from typing import Final

import hpack
from hpack.exceptions import HPACKError, OversizedHeaderListError
from hpack.table import HeaderTable

__all__ = ["DecodeError", "HeaderDecoder", "HeaderEncoder", "HeaderListTooLarge"]

Fields = list[tuple[bytes, bytes]]

# RFC 7541 section 6.1: an indexed field of index 1..126 is one byte 0x81..0xFE.
_ONE_BYTE_INDEXED: Final = bytes(range(0x81, 0xFF))
_DECODED_KEPT: Final = 64  # header blocks remembered per connection


class DecodeError(Exception):
    """The header block cannot be decoded: a connection error COMPRESSION_ERROR
    (RFC 9113 section 4.3)."""


class HeaderListTooLarge(DecodeError):
    """The decoded header list would exceed the decoder's limit (an HPACK bomb)."""


class HeaderDecoder:
    """One connection's HPACK decoder (its dynamic table is the connection's)."""

    __slots__ = ("_cache", "_decoder")

    def __init__(self, max_header_list_size: int, max_table_size: int = 4096) -> None:
        decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        # SETTINGS_HEADER_TABLE_SIZE we advertise (the default): a size update above
        # it is a decoding error (RFC 7541 section 6.3).
        decoder.max_allowed_table_size = max_table_size
        self._decoder = decoder
        self._cache: dict[bytes, Fields] = {}

    def decode(self, block: bytes) -> Fields:
        """The block's fields; raises ``DecodeError``. The list is shared with the
        cache: do not change it."""
        cached = self._cache.get(block)
        if cached is not None:
            return cached
        indexed_only = bool(block) and not block.translate(None, _ONE_BYTE_INDEXED)
        if not indexed_only:
            self._cache.clear()  # the dynamic table may change: older entries may mean else
        try:
            fields: Fields = list(self._decoder.decode(block, raw=True))
        except OversizedHeaderListError as exc:
            raise HeaderListTooLarge(str(exc)) from exc
        except (HPACKError, IndexError, ValueError) as exc:
            raise DecodeError(str(exc)) from exc
        if indexed_only and len(self._cache) < _DECODED_KEPT:
            self._cache[block] = fields
        return fields


# -- encoding ----------------------------------------------------------------------------

_STATIC_NAMES: Final[dict[bytes, int]] = {}
_STATIC_FIELDS: Final[dict[tuple[bytes, bytes], int]] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _STATIC_NAMES.setdefault(_name, _index)
    if _value:
        _STATIC_FIELDS[(_name, _value)] = _index


def encode_integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """RFC 7541 section 5.1; ``first`` holds the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    """A string literal without Huffman coding (section 5.2)."""
    return encode_integer(len(data), 7) + data


def encode_field(name: bytes, value: bytes) -> bytes:
    """One field: indexed when the static table has it, else a literal without indexing."""
    index = _STATIC_FIELDS.get((name, value))
    if index is not None:
        return encode_integer(index, 7, 0x80)  # section 6.1
    index = _STATIC_NAMES.get(name, 0)
    if index:
        return encode_integer(index, 4) + _string(value)  # section 6.2.2, indexed name
    return b"\x00" + _string(name) + _string(value)  # section 6.2.2, new name


def encode_fields(fields: Fields) -> bytes:
    return b"".join([encode_field(name, value) for name, value in fields])


# content-length as a literal without indexing on the static name (index 28).
_CONTENT_LENGTH: Final = encode_integer(28, 4)
_LENGTH_CACHE: Final[dict[int, bytes]] = {}


def content_length_field(length: int) -> bytes:
    field = _LENGTH_CACHE.get(length)
    if field is None:
        field = _CONTENT_LENGTH + _string(b"%d" % length)
        if len(_LENGTH_CACHE) < 4096:
            _LENGTH_CACHE[length] = field
    return field


class HeaderEncoder:
    """One connection's encoder: what it owes the peer's decoder is a table size update."""

    __slots__ = ("_size", "_update")

    def __init__(self) -> None:
        self._size = 4096  # the initial SETTINGS_HEADER_TABLE_SIZE (RFC 9113 6.5.2)
        self._update = -1  # the size to signal before the next block (-1: none)

    def peer_table_size(self, size: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE: our table must fit (RFC 7541 4.2)."""
        if size < self._size:
            self._size = size
            self._update = size if self._update < 0 else min(self._update, size)

    def block(self, encoded: bytes) -> bytes:
        """``encoded`` fields as the next header block."""
        if self._update < 0:
            return encoded
        prefix = encode_integer(self._update, 5, 0x20)  # section 6.3
        self._update = -1
        return prefix + encoded
