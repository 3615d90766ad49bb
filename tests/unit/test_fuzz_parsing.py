"""Property-based fuzzing of the parsing and gate path (hypothesis), bounded in time.

Two runs, each a few hundred examples (well under a minute together on one core):

1. **Byte mutations** of a small valid CR as it arrives on the wire (explicit and implicit VR
   little endian): bit flips, overwritten, inserted and deleted bytes, truncation. Each
   mutant goes through the listener's intake (structure check, header parse, UID checks,
   spool, job row); what it stores goes the worker's way: read, key attributes, the gate and,
   when the gate accepts, the pixel conversion.
2. **Attribute mutations**: a valid CR whose pixel-describing attributes take hostile values
   (wrong types, zeros, huge numbers, inconsistent bit depths, odd rescale/window text),
   straight into the gate and the pixel conversion.

The property: no exception escapes but the defined rejection types, and every outcome is a
defined one -- a listener status with a reason, a gate verdict with a reason, or a
``PixelDataError`` / ``JobFailed`` with a message; an accepted image converts to a 2-D
float32 array in [0, 1] of the declared size.
"""

from __future__ import annotations

import struct
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_node.intake import Intake, Status
from dicom_node.spool import Spool
from models.dicom_pixels import PixelDataError, dicom_to_array
from tests.harness.factories import CR_IMAGE_STORAGE, wrap_pixels
from tests.unit.dicom_node.conftest import FakeStore
from worker import gate
from worker.pipeline import JobFailed, _attributes, _read

pytestmark = pytest.mark.filterwarnings("ignore")

SIDE = 64
"""The gate's smallest accepted size: the seed passes the whole path, quickly."""
FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


def seed_dataset() -> Dataset:
    """A valid 64 x 64 12-bit frontal chest CR with a window, as a modality sends it."""
    pixels = (np.arange(SIDE * SIDE, dtype=np.uint16).reshape(SIDE, SIDE) * 7) % 4096
    ds = wrap_pixels(pixels, bits_stored=12, window=(2048, 4096), rescale=(1.0, 0.0))
    ds["PixelData"].VR = "OW"
    return ds


def encode(ds: Dataset, syntax: str) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = syntax == ImplicitVRLittleEndian
    write_dataset(buffer, ds)
    return buffer.getvalue()


SEED = seed_dataset()
SEEDS = {
    syntax: encode(SEED, syntax) for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
}
HEADER = len(SEEDS[ExplicitVRLittleEndian]) - SIDE * SIDE * 2
"""Bytes before the pixel values: where mutations are most interesting."""


@pytest.fixture(scope="module")
def spool() -> Iterator[Spool]:
    with tempfile.TemporaryDirectory() as folder:
        spool = Spool(Path(folder) / "spool")
        spool.ensure()
        yield spool


def _position(data: st.DataObject, size: int) -> int:
    """A byte position, three times in four inside the header elements."""
    if size <= 0:
        return 0
    header = min(HEADER, size)
    if data.draw(st.integers(0, 3)) and header > 0:
        return data.draw(st.integers(0, header - 1))
    return data.draw(st.integers(0, size - 1))


def mutate(data: st.DataObject, raw: bytes) -> bytes:
    out = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "u16"]))
        pos = _position(data, len(out))
        if op == "flip" and out:
            out[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and out:
            out[pos] = data.draw(st.integers(0, 255))
        elif op == "u16" and len(out) > pos + 1:  # lengths and values: extremes are the point
            value = data.draw(st.sampled_from([0, 1, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]))
            out[pos : pos + 2] = value.to_bytes(2, "little")
        elif op == "insert":
            out[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del out[pos : pos + data.draw(st.integers(1, 16))]
        elif op == "truncate":
            del out[pos:]
    return bytes(out)


def worker_path(path: Path) -> str:
    """What the worker does with a spooled file, up to the model; a defined outcome or raise."""
    try:
        ds = _read(path)
        attributes = _attributes(ds)
    except JobFailed as exc:
        assert str(exc)
        return "failed: unreadable"
    assert set(attributes) >= {"modality", "rows", "columns"}
    return gate_and_pixels(ds)


def gate_and_pixels(ds: Dataset) -> str:
    verdict = gate.check(ds)
    assert isinstance(verdict, gate.GateResult)
    if not verdict.ok:
        assert verdict.reason
        return "rejected"
    try:
        image = dicom_to_array(ds)
    except PixelDataError as exc:
        assert str(exc)
        return "failed: pixels"
    assert image.shape == (ds.Rows, ds.Columns)
    assert image.dtype == np.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    return "accepted"


def test_the_seed_goes_all_the_way(spool: Spool) -> None:
    for syntax, raw in SEEDS.items():
        result = Intake(spool, FakeStore()).receive(
            sop_class_uid=CR_IMAGE_STORAGE,
            sop_instance_uid=str(SEED.SOPInstanceUID),
            transfer_syntax_uid=syntax,
            calling_ae="FUZZ",
            dataset=raw,
        )
        assert result.ok, result.reason
        path = spool.path_for(str(SEED.SOPInstanceUID))
        assert worker_path(path) == "accepted"
        path.unlink()


@FUZZ
@given(data=st.data(), syntax=st.sampled_from(sorted(SEEDS)))
def test_mutated_bytes_get_a_defined_outcome(
    spool: Spool, data: st.DataObject, syntax: str
) -> None:
    raw = mutate(data, SEEDS[syntax])
    path = spool.path_for(str(SEED.SOPInstanceUID))
    path.unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = Intake(spool, FakeStore()).receive(
            sop_class_uid=CR_IMAGE_STORAGE,
            sop_instance_uid=str(SEED.SOPInstanceUID),
            transfer_syntax_uid=syntax,
            calling_ae="FUZZ",
            dataset=raw,
        )
        assert result.status in set(Status)
        if not result.ok:
            assert result.reason and len(result.error_comment) <= 64
            assert not path.exists()
            event(f"listener 0x{int(result.status):04X}")
            return
        try:
            event(f"stored, then {worker_path(path)}")
        finally:
            path.unlink()


TEXT_VALUES = st.sampled_from(["", " ", "0", "-1", "1e308", "nan", "inf", "abc", "1\\2", "\x00"])
INT_VALUES = st.sampled_from([None, 0, 1, 7, 8, 12, 16, 17, 32, 64, 65535, "64", (1, 1)])
HOSTILE = {
    "Rows": INT_VALUES,
    "Columns": INT_VALUES,
    "BitsAllocated": INT_VALUES,
    "BitsStored": INT_VALUES,
    "HighBit": INT_VALUES,
    "PixelRepresentation": st.sampled_from([None, 0, 1, 2]),
    "SamplesPerPixel": st.sampled_from([None, 0, 1, 3, (1, 1)]),
    "PhotometricInterpretation": st.sampled_from(
        [None, "", "MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "monochrome2 "]
    ),
    "NumberOfFrames": st.sampled_from([None, "", "0", "1", "2", "-3", "x", "1e9"]),
    "RescaleSlope": TEXT_VALUES,
    "RescaleIntercept": TEXT_VALUES,
    "WindowCenter": TEXT_VALUES,
    "WindowWidth": TEXT_VALUES,
    "VOILUTFunction": st.sampled_from(["LINEAR", "SIGMOID", "LINEAR_EXACT", "BOGUS", ""]),
    "PixelData": st.sampled_from(["keep", "empty", "short", "odd", "long"]),
}


def raw_element(keyword: str, value: object) -> RawDataElement:
    """``value`` encoded as a file would hold it, left for pydicom to convert on access."""
    tag = Tag(keyword_dict[keyword])
    vr = dictionary_VR(tag)
    if isinstance(value, int):
        encoded = struct.pack("<H", value)
    elif isinstance(value, tuple):
        encoded = struct.pack(f"<{len(value)}H", *value)
    else:
        encoded = str(value).encode("latin-1")
        encoded += b" " * (len(encoded) % 2)
    return RawDataElement(tag, vr, len(encoded), encoded, 0, False, True)


@FUZZ
@given(
    changes=st.dictionaries(st.sampled_from(sorted(HOSTILE)), st.none(), min_size=1, max_size=5),
    data=st.data(),
)
def test_hostile_pixel_attributes_get_a_defined_outcome(
    changes: dict[str, None], data: st.DataObject
) -> None:
    ds = seed_dataset()
    for keyword in changes:
        value = data.draw(HOSTILE[keyword], label=keyword)
        if keyword == "PixelData":
            pixels = SEED.PixelData
            ds.PixelData = {
                "keep": pixels,
                "empty": b"",
                "short": pixels[:100],
                "odd": pixels + b"\x01",
                "long": pixels * 2,
            }[str(value)]
        elif value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            ds[keyword_dict[keyword]] = raw_element(keyword, value)  # type: ignore[assignment]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = gate_and_pixels(ds)
    assert outcome in {"rejected", "failed: pixels", "accepted"}
    event(outcome)


@pytest.mark.parametrize(
    ("keyword", "value", "fragment"),
    [
        ("RescaleIntercept", "nan", "not a finite number"),
        ("RescaleSlope", "inf", "not a finite number"),
        ("RescaleSlope", "abc", "not a number"),
        ("RescaleSlope", "1\\2", "2 values"),
        ("WindowWidth", "abc", "not a number"),
        ("WindowCenter", "-inf", "not a finite number"),
    ],
)
def test_unusable_rescale_or_window_text_is_a_pixel_error(
    keyword: str, value: str, fragment: str
) -> None:
    """Found by the fuzz run: these reached numpy (TypeError) or made every pixel NaN."""
    ds = seed_dataset()
    ds[keyword_dict[keyword]] = raw_element(keyword, value)  # type: ignore[assignment]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(PixelDataError, match=fragment):
            dicom_to_array(ds)


def test_blank_rescale_text_is_ignored() -> None:
    ds = seed_dataset()
    ds[keyword_dict["RescaleSlope"]] = raw_element("RescaleSlope", " ")  # type: ignore[assignment]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = dicom_to_array(ds)
    assert image.shape == (SIDE, SIDE) and np.isfinite(image).all()


def test_a_deflate_bomb_is_refused_without_inflating_it_all(spool: Spool) -> None:
    """512 MiB of zeros deflate to half a megabyte; the listener must not hold them all."""
    import tracemalloc
    import zlib

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunk = bytes(64 * 2**20)
    bomb = b"".join(compressor.compress(chunk) for _ in range(8)) + compressor.flush()
    del chunk
    assert len(bomb) < 2**20
    tracemalloc.start()
    try:
        result = Intake(spool, FakeStore()).receive(
            sop_class_uid=CR_IMAGE_STORAGE,
            sop_instance_uid=str(SEED.SOPInstanceUID),
            transfer_syntax_uid=DeflatedExplicitVRLittleEndian,
            calling_ae="FUZZ",
            dataset=bomb,
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.status == Status.CANNOT_UNDERSTAND
    assert "inflates to more than" in result.reason
    assert peak < 300 * 2**20, f"peak {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("value", [(11, 11), "11"])
def test_a_high_bit_that_is_not_one_integer_is_rejected_by_the_gate(value: object) -> None:
    """Found by probing the fuzz's values: a multi-valued or text High Bit raised TypeError."""
    ds = seed_dataset()
    vr = "US" if isinstance(value, tuple) else "UI"  # text: a wrong VR in the file
    encoded = struct.pack("<2H", *value) if isinstance(value, tuple) else str(value).encode()
    ds[0x00280102] = RawDataElement(Tag(0x00280102), vr, len(encoded), encoded, 0, False, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = gate.check(ds)
    assert not result.ok and "HighBit" in (result.reason or "")


def test_an_attribute_with_an_unknown_vr_is_a_gate_rejection() -> None:
    """Found by the fuzz: an unknown VR raised NotImplementedError out of the gate."""
    ds = seed_dataset()
    ds[0x00080060] = RawDataElement(Tag(0x00080060), "ZZ", 2, b"CR", 0, False, True)
    result = gate.check(ds)
    assert not result.ok and "cannot be read" in (result.reason or "")
