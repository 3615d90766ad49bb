"""The input gate: is this instance a frontal chest CR/DX whose pixels we can read?

The model was trained on frontal chest radiographs only. Anything else (a lateral view, a CT
slice, a colour photograph, a cine loop, a truncated file) must not reach it: the job ends
``rejected`` with a reason a PACS administrator can act on, e.g.
``"ViewPosition LL: lateral views are not analysed"``.

The checks run cheapest first, and the header checks (sizes, bit depths, pixel data length)
run before the pixels are decoded, so an absurd or truncated dataset is refused without
allocating gigabytes. Reasons never contain patient identifiers: only attribute names and
the offending technical values are quoted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset

from common.sop import ANALYSED_SOP_CLASSES, SECONDARY_CAPTURE_STORAGE

logger = logging.getLogger(__name__)

ACCEPTED_MODALITIES = frozenset({"CR", "DX"})
"""Projection radiography modalities the model was trained on."""

FRONTAL_VIEWS = frozenset({"PA", "AP"})
LATERAL_VIEWS = frozenset({"LL", "RL", "LLD", "RLD"})
MAX_DIMENSION = 16384
"""Rows/Columns above this are refused before decoding (a 16k x 16k 16-bit frame is 512 MiB)."""
MIN_DIMENSION = 64
"""Below this a chest radiograph cannot be meaningfully resampled to the model input."""


@dataclass(frozen=True)
class GateResult:
    """Outcome of :func:`check`: ``ok`` or a ``reason`` for the job timeline."""

    ok: bool
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.ok == (self.reason is not None):
            raise ValueError("GateResult: a reason is required exactly when ok is False")


ACCEPTED = GateResult(ok=True)


def _reject(reason: str) -> GateResult:
    return GateResult(ok=False, reason=reason)


def _text(ds: Dataset, keyword: str) -> str | None:
    """An attribute as upper-case text, or None when absent or empty."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value).strip().upper() or None


def check_modality(ds: Dataset) -> GateResult:
    """SOP class and Modality: CR/DX images, or a Secondary Capture that says CR/DX."""
    sop_class = str(ds.get("SOPClassUID", ""))
    modality = _text(ds, "Modality")
    if sop_class not in ANALYSED_SOP_CLASSES:
        name = getattr(ds.get("SOPClassUID"), "name", "") or "unknown"
        return _reject(
            f"SOPClassUID {sop_class or '(missing)'} ({name}): only CR, DX and Secondary "
            "Capture chest radiographs are analysed"
        )
    if modality not in ACCEPTED_MODALITIES:
        secondary_capture = sop_class == SECONDARY_CAPTURE_STORAGE
        what = "Secondary Capture with Modality" if secondary_capture else "Modality"
        return _reject(f"{what} {modality or '(missing)'}: only CR and DX radiographs are analysed")
    return ACCEPTED


def check_anatomy(ds: Dataset) -> GateResult:
    """Body Part Examined CHEST (or absent) and a frontal View Position (or absent)."""
    body_part = _text(ds, "BodyPartExamined")
    if body_part is not None and body_part != "CHEST":
        return _reject(f"BodyPartExamined {body_part}: only chest radiographs are analysed")
    view = _text(ds, "ViewPosition")
    if view is not None and view not in FRONTAL_VIEWS:
        if view in LATERAL_VIEWS:
            return _reject(f"ViewPosition {view}: lateral views are not analysed")
        return _reject(f"ViewPosition {view}: only frontal (PA or AP) views are analysed")
    return ACCEPTED


def check_pixel_header(ds: Dataset) -> GateResult:
    """Frames, colour, sizes and bit depths, all before any pixel is decoded."""
    if "PixelData" not in ds:
        float_kw = next((k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds), None)
        if float_kw:
            return _reject(f"{float_kw}: floating-point images are not analysed")
        return _reject("PixelData missing: the instance holds no image")
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return _reject(f"NumberOfFrames {ds.get('NumberOfFrames')!r}: not a number")
    if frames != 1:
        return _reject(f"NumberOfFrames {frames}: only single-frame images are analysed")
    samples = ds.get("SamplesPerPixel")
    photometric = _text(ds, "PhotometricInterpretation")
    if samples != 1 or photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        return _reject(
            f"PhotometricInterpretation {photometric or '(missing)'} with SamplesPerPixel "
            f"{samples}: only grayscale (MONOCHROME1/2) images are analysed"
        )
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if not isinstance(rows, int) or not isinstance(columns, int):
        return _reject(f"Rows {rows!r} / Columns {columns!r}: image size missing")
    if not (MIN_DIMENSION <= rows <= MAX_DIMENSION and MIN_DIMENSION <= columns <= MAX_DIMENSION):
        return _reject(
            f"Rows {rows} x Columns {columns}: image size outside "
            f"{MIN_DIMENSION}..{MAX_DIMENSION} pixels"
        )
    allocated, stored = ds.get("BitsAllocated"), ds.get("BitsStored")
    if allocated not in (8, 16, 32) or not isinstance(stored, int) or not 1 <= stored <= allocated:
        return _reject(
            f"BitsAllocated {allocated} / BitsStored {stored}: inconsistent or unsupported "
            "bit depth"
        )
    high_bit = ds.get("HighBit")
    if high_bit is not None and (not isinstance(high_bit, int) or high_bit >= allocated):
        return _reject(f"HighBit {high_bit} / BitsAllocated {allocated}: inconsistent bit depth")
    transfer_syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    encapsulated = transfer_syntax is not None and transfer_syntax.is_encapsulated
    if not encapsulated:
        expected = rows * columns * (allocated // 8)
        actual = len(ds.PixelData)
        if actual < expected:
            return _reject(
                f"PixelData {actual} bytes, {expected} expected for Rows {rows} x Columns "
                f"{columns} x {allocated} bits: truncated pixel data"
            )
    return ACCEPTED


def check_pixels_decode(ds: Dataset) -> GateResult:
    """Decode the pixel data and confirm the array has the declared shape."""
    transfer_syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    syntax = getattr(transfer_syntax, "name", None) or str(transfer_syntax or "unknown")
    try:
        array = ds.pixel_array
    except Exception as exc:  # decoders raise many types; any failure means unreadable
        return _reject(
            f"PixelData could not be decoded ({syntax}): {type(exc).__name__}: {str(exc)[:160]}"
        )
    if array.shape != (ds.Rows, ds.Columns):
        return _reject(
            f"PixelData decoded to shape {array.shape}, declared Rows {ds.Rows} x Columns "
            f"{ds.Columns}"
        )
    return ACCEPTED


_UNREADABLE = (NotImplementedError, ValueError, TypeError, IndexError, KeyError, AttributeError)
"""What pydicom raises converting a badly encoded attribute (unknown VR, text in a number)."""

CHECKS = (check_modality, check_anatomy, check_pixel_header, check_pixels_decode)
"""The checks in the order they run: cheapest first, decoding last."""


def check(ds: Dataset) -> GateResult:
    """Accept a frontal chest CR/DX with readable grayscale pixels, or say why not.

    Logs the SOP Instance UID and the reason only (never patient identifiers).
    """
    for step in CHECKS:
        try:
            result = step(ds)
        except _UNREADABLE as exc:  # pydicom converts values on access; a sender's may not
            result = _reject(f"an attribute cannot be read: {type(exc).__name__}: {str(exc)[:160]}")
        if not result.ok:
            logger.info(
                "gate rejected SOPInstanceUID=%s: %s", ds.get("SOPInstanceUID", "?"), result.reason
            )
            return result
    return ACCEPTED
