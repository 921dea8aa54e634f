"""HPACK (RFC 7541) for the HTTP/2 core: a decoder for what clients send and a
stateless encoder for our responses. The ``hpack`` package supplies the static
table and the Huffman code tables; the representations are read and written here.

Encoding uses the static table and literals "without indexing" (RFC 7541 section
6.2.2) only: the dynamic table of our encoder stays empty, so a header block is a
pure function of its fields and can be cached, and the peer's decoder never has to
keep our entries. When the peer lowers SETTINGS_HEADER_TABLE_SIZE below the size our
encoder is assumed to use, the next block starts with a dynamic table size update
(RFC 7541 sections 4.2 and 6.3), as decoders such as nghttp2 require.

Decoding keeps a small per-connection cache of the header blocks that did not
change the dynamic table (no literal with incremental indexing, no size update):
the fields such a block means change only when another block changes the table,
which empties the cache. Clients repeat the same request headers (indexed fields
and literals without indexing), so a repeated request costs one dict look-up.
"""

from __future__ import annotations

from typing import Final

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

__all__ = ["DecodeError", "HeaderDecoder", "HeaderEncoder", "HeaderListTooLarge"]

Fields = list[tuple[bytes, bytes]]

_STATIC: Final[tuple[tuple[bytes, bytes], ...]] = tuple(HeaderTable.STATIC_TABLE)
_STATIC_COUNT: Final = len(_STATIC)  # 61
_ENTRY_OVERHEAD: Final = 32  # RFC 7541 section 4.1
_DECODED_KEPT: Final = 64  # header blocks remembered per connection
_MAX_INTEGER_BYTES: Final = 5  # continuation bytes of one integer (values below 2^35)


class DecodeError(Exception):
    """The header block cannot be decoded: a connection error COMPRESSION_ERROR
    (RFC 9113 section 4.3)."""


class HeaderListTooLarge(DecodeError):
    """The decoded header list would exceed the decoder's limit (an HPACK bomb)."""


def _integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """RFC 7541 section 5.1: (value, position after it)."""
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    for _ in range(_MAX_INTEGER_BYTES):
        if pos >= len(data):
            raise DecodeError("integer cut off")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise DecodeError("integer too long")


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    """RFC 7541 section 5.2: (the string, position after it)."""
    if pos >= len(data):
        raise DecodeError("string literal missing")
    huffman = data[pos] & 0x80
    length, pos = _integer(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise DecodeError("string literal cut off")
    raw = data[pos:end]
    if huffman:
        try:
            raw = decode_huffman(raw)
        except HPACKDecodingError as exc:
            raise DecodeError("invalid Huffman code") from exc
    return raw, end


class HeaderDecoder:
    """One connection's HPACK decoder (its dynamic table is the connection's)."""

    __slots__ = ("_cache", "_max_list", "_max_table", "_size", "_table", "_table_max", "generation")

    def __init__(self, max_header_list_size: int, max_table_size: int = 4096) -> None:
        self._max_list = max_header_list_size
        # SETTINGS_HEADER_TABLE_SIZE we advertise (the default): a size update above
        # it is a decoding error (RFC 7541 section 6.3).
        self._max_table = max_table_size
        self._table_max = max_table_size  # the size the encoder chose
        self._table: list[tuple[bytes, bytes]] = []  # newest last
        self._size = 0
        self._cache: dict[bytes, Fields] = {}
        self.generation = 0  # counts the changes of the dynamic table

    def reusable(self, block: bytes) -> bool:
        """The block means the same fields until ``generation`` changes."""
        return block in self._cache

    def decode(self, block: bytes) -> Fields:
        """The block's fields; raises ``DecodeError``. The list is shared with the
        cache: do not change it."""
        cached = self._cache.get(block)
        if cached is not None:
            return cached
        fields, changed = self._decode(block)
        if changed:
            self._cache.clear()  # the table changed: what older blocks mean may too
            self.generation += 1
        elif len(self._cache) < _DECODED_KEPT:
            self._cache[block] = fields
        return fields

    def _decode(self, data: bytes) -> tuple[Fields, bool]:
        fields: Fields = []
        total = 0
        changed = False
        pos = 0
        n = len(data)
        while pos < n:
            byte = data[pos]
            if byte & 0x80:  # indexed field (section 6.1)
                index, pos = _integer(data, pos, 7)
                field = self._field_at(index)
            elif byte & 0x40:  # literal with incremental indexing (6.2.1)
                field, pos = self._literal(data, pos, 6)
                self._add(field)
                changed = True
            elif byte & 0x20:  # dynamic table size update (6.3)
                if fields:
                    raise DecodeError("table size update after a field")  # section 4.2
                size, pos = _integer(data, pos, 5)
                if size > self._max_table:
                    raise DecodeError("table size update above SETTINGS_HEADER_TABLE_SIZE")
                self._table_max = size
                self._evict(0)
                changed = True
                continue
            else:  # literal without indexing (6.2.2) or never indexed (6.2.3)
                field, pos = self._literal(data, pos, 4)
            total += len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
            if total > self._max_list:
                raise HeaderListTooLarge("header list too large")
            fields.append(field)
        return fields, changed

    def _field_at(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_COUNT:
            return _STATIC[index - 1]
        dynamic = index - _STATIC_COUNT
        if index == 0 or dynamic > len(self._table):
            raise DecodeError("invalid table index")  # section 2.3.3
        return self._table[-dynamic]

    def _literal(self, data: bytes, pos: int, prefix_bits: int) -> tuple[tuple[bytes, bytes], int]:
        index, pos = _integer(data, pos, prefix_bits)
        if index:
            name = self._field_at(index)[0]
        else:
            name, pos = _string(data, pos)
        value, pos = _string(data, pos)
        return (name, value), pos

    def _add(self, field: tuple[bytes, bytes]) -> None:
        """Section 4.4: evict as needed; an entry larger than the table empties it."""
        size = len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
        if size > self._table_max:
            self._table.clear()
            self._size = 0
            return
        self._evict(size)
        self._table.append(field)
        self._size += size

    def _evict(self, room: int) -> None:
        table = self._table
        while table and self._size + room > self._table_max:
            name, value = table.pop(0)
            self._size -= len(name) + len(value) + _ENTRY_OVERHEAD


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


def _literal_string(data: bytes) -> bytes:
    """A string literal without Huffman coding (section 5.2)."""
    return encode_integer(len(data), 7) + data


def encode_field(name: bytes, value: bytes) -> bytes:
    """One field: indexed when the static table has it, else a literal without indexing."""
    index = _STATIC_FIELDS.get((name, value))
    if index is not None:
        return encode_integer(index, 7, 0x80)  # section 6.1
    index = _STATIC_NAMES.get(name, 0)
    if index:
        return encode_integer(index, 4) + _literal_string(value)  # section 6.2.2, indexed name
    return b"\x00" + _literal_string(name) + _literal_string(value)  # section 6.2.2, new name


def encode_fields(fields: Fields) -> bytes:
    return b"".join([encode_field(name, value) for name, value in fields])


# content-length as a literal without indexing on the static name (index 28).
_CONTENT_LENGTH: Final = encode_integer(28, 4)
_LENGTH_CACHE: Final[dict[int, bytes]] = {}


def content_length_field(length: int) -> bytes:
    field = _LENGTH_CACHE.get(length)
    if field is None:
        field = _CONTENT_LENGTH + _literal_string(b"%d" % length)
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
