"""The strict structural check that stands before pydicom's forgiving reader."""

from __future__ import annotations

import struct

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_node.structure import StructureError, check_structure
from tests.harness.factories import DICOM_DIR
from tests.unit.dicom_node.conftest import encode, small_cr

EXPLICIT, IMPLICIT = ExplicitVRLittleEndian, ImplicitVRLittleEndian


def with_sequence() -> Dataset:
    ds = small_cr()
    item = Dataset()
    item.CodeValue = "123"
    item.CodingSchemeDesignator = "DCM"
    ds.ProcedureCodeSequence = Sequence([item])
    return ds


@pytest.mark.parametrize("syntax", [EXPLICIT, IMPLICIT])
def test_well_formed_datasets_pass(syntax: str) -> None:
    check_structure(encode(small_cr(), syntax), syntax)
    check_structure(encode(with_sequence(), syntax), syntax)


def element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"SQ", b"OB", b"UN"):
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def undefined(group: int, elem: int, vr: bytes, body: bytes) -> bytes:
    return struct.pack("<HH2sHI", group, elem, vr, 0, 0xFFFFFFFF) + body


ITEM = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
SEQ_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def test_undefined_length_sequences_and_items_pass() -> None:
    body = ITEM + element(0x0008, 0x0100, b"SH", b"12") + ITEM_END + SEQ_END
    check_structure(undefined(0x0008, 0x1032, b"SQ", body), EXPLICIT)


def test_undefined_length_un_is_read_as_implicit_vr() -> None:
    implicit = struct.pack("<HHI", 0x0008, 0x0100, 2) + b"12"
    body = ITEM + implicit + ITEM_END + SEQ_END
    check_structure(undefined(0x0009, 0x1010, b"UN", body), EXPLICIT)


def test_encapsulated_pixel_data_passes() -> None:
    frag = struct.pack("<HHI", 0xFFFE, 0xE000, 4) + b"\xff\xd8\xff\xd9"
    bot = struct.pack("<HHI", 0xFFFE, 0xE000, 0)
    check_structure(undefined(0x7FE0, 0x0010, b"OB", bot + frag + SEQ_END), EXPLICIT)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (element(0x0008, 0x0018, b"UI", b"1.2.3\x00")[:-2], "runs past the end"),
        (element(0x0008, 0x0018, b"UI", b"1.2\x00") + b"\x10\x00", "header truncated"),
        (
            element(0x0010, 0x0010, b"PN", b"A^B ") + element(0x0008, 0x0018, b"UI", b"1.2\x00"),
            "out of order",
        ),
        (b"\x08\x00\x18\x00\x01\x02\x04\x001.2\x00", "no valid VR"),
        (
            undefined(0x0008, 0x1032, b"SQ", ITEM + element(0x0008, 0x0100, b"SH", b"12")),
            "not terminated",
        ),
        (undefined(0x0008, 0x1032, b"SQ", ITEM + ITEM_END), "not terminated"),
        (undefined(0x0008, 0x0018, b"UT", b""), "undefined length"),
        (ITEM_END, "unexpected delimiter"),
        (
            element(0x0008, 0x1032, b"SQ", element(0x0008, 0x0100, b"SH", b"12")),
            "where a sequence item belongs",
        ),
    ],
)
def test_structural_faults_are_reported(data: bytes, fragment: str) -> None:
    with pytest.raises(StructureError, match=fragment):
        check_structure(data, EXPLICIT)


def test_deep_nesting_is_bounded() -> None:
    data = element(0x0008, 0x0100, b"SH", b"12")
    for _ in range(40):
        data = undefined(0x0008, 0x1032, b"SQ", ITEM + data + ITEM_END + SEQ_END)
    with pytest.raises(StructureError, match="nested deeper"):
        check_structure(data, EXPLICIT)


@pytest.mark.parametrize("name", sorted(p.name for p in DICOM_DIR.glob("*.dcm")))
def test_the_real_files_pass_and_fail_when_truncated(name: str) -> None:
    from pydicom import dcmread

    ds = dcmread(DICOM_DIR / name)
    syntax = str(ds.file_meta.TransferSyntaxUID)
    raw = (DICOM_DIR / name).read_bytes()
    data = raw[raw.index(b"DICM") + 4 :]
    # skip the file meta group (0002,xxxx), always explicit VR little endian
    meta_length = struct.unpack_from("<I", data, 8)[0]
    data = data[12 + meta_length :]
    check_structure(data, syntax)
    with pytest.raises(StructureError):
        check_structure(data[:-3], syntax)
