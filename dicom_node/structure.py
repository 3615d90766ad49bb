"""A strict structural check of an encoded dataset, before pydicom reads it.

pydicom is a forgiving reader: a value whose declared length runs past the end of the data is
silently cut short, and junk after the last element is ignored. For data arriving from the
network we want the opposite -- a dataset whose structure is broken is answered *cannot
understand* (0xC000) rather than half-read and stored. This module walks the element headers
(little endian, explicit or implicit VR; sequences and items of defined and undefined length;
encapsulated pixel data) and reports the first structural fault. It reads no values.
"""

from __future__ import annotations

import struct
import zlib

from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_MAX_DEPTH = 32
_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class StructureError(ValueError):
    """The encoded dataset is not well formed; the message says where."""


def inflate(data: bytes | bytearray) -> bytes:
    """The dataset of a Deflated Explicit VR Little Endian transfer (raw deflate, RFC 1951)."""
    try:
        decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
        inflated = decompressor.decompress(data) + decompressor.flush()
    except zlib.error as exc:
        raise StructureError(f"deflated data cannot be inflated ({exc})") from None
    return inflated


def check_structure(data: bytes | bytearray, transfer_syntax_uid: str) -> None:
    """Raise :class:`StructureError` unless ``data`` is a well-formed dataset in the syntax.

    Only little-endian syntaxes are checked (the listener accepts no other); for the deflated
    syntax ``data`` is the deflated stream.
    """
    if transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
        data = inflate(data)
    walker = _Walker(memoryview(data), implicit=transfer_syntax_uid == ImplicitVRLittleEndian)
    walker.dataset(0, len(data), depth=0)


class _Walker:
    def __init__(self, data: memoryview, *, implicit: bool) -> None:
        self.data = data
        self.implicit = implicit

    def dataset(self, pos: int, end: int, *, depth: int, delimited: bool = False) -> int:
        """Walk elements from ``pos`` to ``end``, or to an item delimiter when ``delimited``."""
        if depth > _MAX_DEPTH:
            raise StructureError(f"sequences nested deeper than {_MAX_DEPTH}")
        last_tag = -1
        while pos < end:
            tag, vr, length, pos = self.header(pos, end)
            if tag == _ITEM_END and delimited:
                return pos
            if tag >> 16 == 0xFFFE:
                raise StructureError(f"unexpected delimiter {_fmt(tag)} at byte {pos}")
            if tag <= last_tag:
                raise StructureError(f"element {_fmt(tag)} out of order at byte {pos}")
            last_tag = tag
            if length == _UNDEFINED:
                if vr not in (b"SQ", b"UN", b"OB", b"OW", None):
                    raise StructureError(f"undefined length on {vr!r} element {_fmt(tag)}")
                if vr == b"UN":  # PS3.5 6.2.2: its content is encoded implicit VR
                    walker = _Walker(self.data, implicit=True)
                    pos = walker.undefined_value(pos, end, tag, depth)
                else:
                    pos = self.undefined_value(pos, end, tag, depth)
            else:
                if pos + length > end:
                    raise StructureError(
                        f"value of {_fmt(tag)} ({length} bytes) runs past the end of its "
                        f"dataset by {pos + length - end} bytes"
                    )
                if vr == b"SQ":
                    self.sequence(pos, pos + length, depth)
                pos += length
        if delimited:
            raise StructureError("item of undefined length not terminated before the end")
        return pos

    def header(self, pos: int, end: int) -> tuple[int, bytes | None, int, int]:
        """(tag, VR or None for implicit/delimiters, length, position of the value)."""
        if pos + 8 > end:
            raise StructureError(f"element header truncated at byte {pos}")
        group, element = _TAG.unpack_from(self.data, pos)
        tag = group << 16 | element
        if group == 0xFFFE or self.implicit:
            return tag, None, _U32.unpack_from(self.data, pos + 4)[0], pos + 8
        vr = bytes(self.data[pos + 4 : pos + 6])
        if not (vr.isascii() and vr.isalpha() and vr.isupper()):
            raise StructureError(f"element {_fmt(tag)} has no valid VR at byte {pos}")
        if vr in _LONG_VRS:
            if pos + 12 > end:
                raise StructureError(f"element header truncated at byte {pos}")
            return tag, vr, _U32.unpack_from(self.data, pos + 8)[0], pos + 12
        return tag, vr, _U16.unpack_from(self.data, pos + 6)[0], pos + 8

    def undefined_value(self, pos: int, end: int, tag: int, depth: int) -> int:
        """Walk items up to the sequence delimiter; return the position after it."""
        while True:
            item_tag, _vr, length, pos = self._delimited_header(pos, end, tag)
            if item_tag == _SEQUENCE_END:
                return pos
            if item_tag != _ITEM:
                raise StructureError(f"{_fmt(item_tag)} where an item of {_fmt(tag)} belongs")
            pos = self.item(pos, end, length, tag, depth)

    def sequence(self, pos: int, end: int, depth: int) -> None:
        """Walk the items of a defined-length sequence value."""
        while pos < end:
            item_tag, _vr, length, pos = self._delimited_header(pos, end, 0)
            if item_tag != _ITEM:
                raise StructureError(f"{_fmt(item_tag)} where a sequence item belongs")
            pos = self.item(pos, end, length, 0, depth)

    def item(self, pos: int, end: int, length: int, tag: int, depth: int) -> int:
        if tag == 0x7FE00010:  # encapsulated pixel data fragments: opaque bytes
            if length == _UNDEFINED or pos + length > end:
                raise StructureError(f"pixel data fragment at byte {pos} is malformed")
            return pos + length
        if length == _UNDEFINED:
            return self.dataset(pos, end, depth=depth + 1, delimited=True)
        if pos + length > end:
            raise StructureError(f"item at byte {pos} ({length} bytes) runs past its sequence")
        self.dataset(pos, pos + length, depth=depth + 1)
        return pos + length

    def _delimited_header(self, pos: int, end: int, tag: int) -> tuple[int, None, int, int]:
        if pos + 8 > end:
            what = f" of {_fmt(tag)}" if tag else ""
            raise StructureError(f"sequence{what} not terminated before the end of the data")
        group, element = _TAG.unpack_from(self.data, pos)
        return group << 16 | element, None, _U32.unpack_from(self.data, pos + 4)[0], pos + 8


def _fmt(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
