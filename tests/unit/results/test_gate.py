"""The input gate: every rejection reason, and what it accepts."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless

from tests.harness.factories import CT_IMAGE_STORAGE, DX_PRESENTATION_STORAGE, wrap_pixels
from worker.gate import MAX_DIMENSION, GateResult, check

SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def _cr(**kwargs: object) -> Dataset:
    pixels = np.arange(128 * 96, dtype=np.uint16).reshape(128, 96) % 4096
    return wrap_pixels(pixels, bits_stored=12, **kwargs)  # type: ignore[arg-type]


def _reason(ds: Dataset) -> str:
    result = check(ds)
    assert not result.ok
    assert result.reason
    return result.reason


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"photometric": "MONOCHROME1"},
        {"modality": "DX", "sop_class_uid": DX_PRESENTATION_STORAGE},
        {"modality": "DX", "sop_class_uid": SC_STORAGE},
        {"view_position": None, "body_part": None},
        {"view_position": "AP"},
    ],
)
def test_accepts_frontal_chest_radiographs(kwargs: dict[str, object]) -> None:
    assert check(_cr(**kwargs)) == GateResult(ok=True)


def test_rejects_lateral_view_with_actionable_reason() -> None:
    assert _reason(_cr(view_position="LL")) == "ViewPosition LL: lateral views are not analysed"


def test_rejects_other_views() -> None:
    assert "only frontal" in _reason(_cr(view_position="LAO"))


def test_rejects_ct() -> None:
    reason = _reason(_cr(modality="CT", sop_class_uid=CT_IMAGE_STORAGE))
    assert reason.startswith(f"SOPClassUID {CT_IMAGE_STORAGE} (CT Image Storage)")


def test_rejects_secondary_capture_that_is_not_a_radiograph() -> None:
    reason = _reason(_cr(modality="OT", sop_class_uid=SC_STORAGE))
    assert reason.startswith("Secondary Capture with Modality OT")


def test_rejects_cr_class_with_wrong_modality() -> None:
    assert _reason(_cr(modality="MG")).startswith("Modality MG")


def test_rejects_other_body_part() -> None:
    assert _reason(_cr(body_part="SKULL")).startswith("BodyPartExamined SKULL")


def test_rejects_multiframe() -> None:
    ds = _cr()
    ds.NumberOfFrames = 3
    assert _reason(ds).startswith("NumberOfFrames 3")


def test_rejects_rgb() -> None:
    rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    ds = _cr()
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = 64, 64
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = rgb.tobytes()
    assert _reason(ds).startswith("PhotometricInterpretation RGB with SamplesPerPixel 3")


def test_rejects_absurd_size_before_decoding() -> None:
    ds = _cr()
    ds.Rows = MAX_DIMENSION + 1  # PixelData stays small: decoding would fail anyway
    assert "image size outside" in _reason(ds)


def test_rejects_truncated_pixel_data() -> None:
    ds = _cr()
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    assert "truncated pixel data" in _reason(ds)


def test_rejects_bits_stored_above_bits_allocated() -> None:
    ds = _cr()
    ds.BitsStored = 17
    assert "BitsStored 17" in _reason(ds)


def test_rejects_missing_pixel_data() -> None:
    ds = _cr()
    del ds.PixelData
    assert _reason(ds) == "PixelData missing: the instance holds no image"


def test_rejects_pixels_that_do_not_decode() -> None:
    ds = _cr()
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + b"\xfe\xff\x00\xe0\x04\x00\x00\x00junk"
    assert _reason(ds).startswith("PixelData could not be decoded")


def test_reasons_and_logs_hold_no_patient_identifiers(caplog: pytest.LogCaptureFixture) -> None:
    ds = _cr(view_position="LL", patient_name="Secret^Person", patient_id="PID-4711")
    with caplog.at_level(logging.INFO, logger="worker.gate"):
        reason = _reason(ds)
    text = reason + caplog.text
    assert ds.SOPInstanceUID in caplog.text
    assert "Secret" not in text and "PID-4711" not in text


def test_gate_result_requires_reason_exactly_when_rejected() -> None:
    with pytest.raises(ValueError):
        GateResult(ok=False)
    with pytest.raises(ValueError):
        GateResult(ok=True, reason="x")
