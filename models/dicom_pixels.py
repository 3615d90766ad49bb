"""From a DICOM image's stored pixels to the 2-D [0, 1] MONOCHROME2 array the models take.

The display pipeline of PS3.4 N.2, in order: stored values -> Modality LUT (LUT sequence or
rescale slope/intercept) -> VOI LUT (LUT sequence, else the first window; LINEAR, LINEAR_EXACT and
SIGMOID as pydicom implements them) -> scaled to [0, 1] over the pipeline's output range ->
inverted for MONOCHROME1 so that 1 is always white. Any bit depth from 1 to 16, signed or not.

This is the only way DICOM pixels reach a model: the worker calls it, and the training tests check
it gives the same array as the JPEG the model was trained on (within 1/255).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut


class PixelDataError(ValueError):
    """The dataset's pixels cannot be turned into a grayscale model input (reason in the text)."""


def _stored_range(ds: Dataset) -> tuple[float, float]:
    """Smallest and largest stored value the pixel description allows."""
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def _lut_range(item: Dataset, apply: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
    """Output range of a LUT: the values its LUT Data holds (descriptor bits can overstate it).

    ``apply`` runs pydicom's LUT function over every LUT input, so the LUT Data is decoded the
    way pydicom decodes it (US/SS values or OW words).
    """
    n_entries, first = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
    data = np.asarray(apply(np.arange(first, first + n_entries)), dtype=np.float64)
    lo, hi = float(data.min()), float(data.max())
    if hi <= lo:
        bits = int(item.LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    return lo, hi


def _modality_range(ds: Dataset) -> tuple[float, float]:
    """Output range of the Modality LUT stage (what pydicom's windowing also assumes)."""
    if ds.get("ModalityLUTSequence"):
        return _lut_range(ds.ModalityLUTSequence[0], lambda a: apply_modality_lut(a, ds))
    lo, hi = _stored_range(ds)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    a, b = lo * slope + intercept, hi * slope + intercept
    return min(a, b), max(a, b)


def _windowing_range(ds: Dataset) -> tuple[float, float]:
    """Output range pydicom's ``apply_windowing`` maps to (its source: bits stored + rescale)."""
    if ds.get("ModalityLUTSequence"):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    lo, hi = _stored_range(ds)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = lo * slope + intercept, hi * slope + intercept
    return lo, hi


def _check_pixel_description(ds: Dataset) -> str:
    """Reject what is not single-sample grayscale with a reason; return the photometric."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise PixelDataError("the dataset has no Pixel Data")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        raise PixelDataError(
            f"PhotometricInterpretation {photometric or '<missing>'}: "
            "only MONOCHROME1/2 are analysed"
        )
    samples = _integer(ds, "SamplesPerPixel", 1)
    if samples != 1:
        raise PixelDataError(f"SamplesPerPixel {samples}: only grayscale is analysed")
    bits = _integer(ds, "BitsStored", 0)
    if not 1 <= bits <= 16:
        raise PixelDataError(f"BitsStored {bits}: only 1 to 16 bits are supported")
    return photometric


def _integer(ds: Dataset, keyword: str, default: int) -> int:
    """A single integer attribute (``default`` when absent); PixelDataError when it is not one."""
    value = ds.get(keyword, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PixelDataError(f"{keyword} {value!r}: not a single integer") from None


def _numbers(keyword: str, value: object) -> list[float]:
    """The finite numbers of a DS value (empty list for an empty value), else PixelDataError.

    A sender's text reaches the LUT arithmetic only through here: an unparsable, NaN or
    infinite slope, intercept or window would otherwise make numpy raise, or make every pixel
    NaN and reach the model.
    """
    items = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    numbers: list[float] = []
    for item in items:
        if item is None or (isinstance(item, (str, bytes)) and not item.strip()):
            continue
        try:
            number = float(item)  # type: ignore[arg-type]  # pydicom value types
        except (TypeError, ValueError):
            raise PixelDataError(f"{keyword} {str(item)[:32]!r}: not a number") from None
        if not math.isfinite(number):
            raise PixelDataError(f"{keyword} {number}: not a finite number")
        numbers.append(number)
    return numbers


_UNREADABLE = (NotImplementedError, ValueError, TypeError, IndexError, KeyError, AttributeError)
"""What pydicom raises when it converts an attribute a sender encoded badly (e.g. unknown VR)."""


def dicom_to_array(ds: Dataset, *, frame: int = 0, apply_voi: bool = True) -> np.ndarray:
    """The image of ``ds`` as a 2-D float32 array in [0, 1] with MONOCHROME2 meaning.

    ``frame`` picks the frame of a multi-frame image. ``apply_voi=False`` skips the VOI stage and
    scales the Modality LUT output over its full range (for inspection; serving keeps the default).
    Raises :class:`PixelDataError` (a ``ValueError``) naming what cannot be handled, including
    an attribute pydicom cannot convert (its values are read lazily, here).
    """
    try:
        return _dicom_to_array(ds, frame=frame, apply_voi=apply_voi)
    except PixelDataError:
        raise
    except _UNREADABLE as exc:
        raise PixelDataError(f"an attribute cannot be read: {type(exc).__name__}: {exc}") from exc


def _dicom_to_array(ds: Dataset, *, frame: int, apply_voi: bool) -> np.ndarray:
    photometric = _check_pixel_description(ds)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # decoders raise many types; the reason goes to the job record
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise PixelDataError(f"cannot decode Pixel Data (transfer syntax {ts}): {exc}") from exc
    n_frames = _integer(ds, "NumberOfFrames", 1) if ds.get("NumberOfFrames") else 1
    if n_frames > 1:
        if not 0 <= frame < n_frames:
            raise PixelDataError(f"frame {frame} out of range (NumberOfFrames {n_frames})")
        stored = stored[frame]
    if stored.ndim != 2:
        raise PixelDataError(f"expected a 2-D frame, got pixel array shape {stored.shape}")

    # pydicom's LUT functions read (and may normalise) attributes of ds; work on a shallow copy.
    meta = _pixel_module(ds)
    try:
        out = _display_values(stored, meta, apply_voi=apply_voi)
    except PixelDataError:
        raise
    except _UNREADABLE as exc:
        raise PixelDataError(f"cannot apply the Modality/VOI LUT: {exc}") from exc
    if photometric == "MONOCHROME1":
        out = np.float32(1.0) - out
    return np.ascontiguousarray(out)


def _display_values(stored: np.ndarray, meta: Dataset, *, apply_voi: bool) -> np.ndarray:
    """Modality LUT, VOI LUT and scaling to [0, 1] (before any MONOCHROME1 inversion)."""
    values = np.asarray(apply_modality_lut(stored, meta), dtype=np.float64)
    lo, hi = _modality_range(meta)

    if apply_voi and meta.get("VOILUTSequence"):
        # LUT inputs are integers by definition; the Modality LUT stage returned floats.
        lut_input = np.rint(values).astype(np.int64)
        values = np.asarray(apply_voi_lut(lut_input, meta, index=0, prefer_lut=True), np.float64)
        lo, hi = _lut_range(
            meta.VOILUTSequence[0], lambda a: apply_voi_lut(a, meta, index=0, prefer_lut=True)
        )
    elif apply_voi and "WindowCenter" in meta and "WindowWidth" in meta:
        values = np.asarray(apply_voi_lut(values, meta, index=0, prefer_lut=False), np.float64)
        lo, hi = _windowing_range(meta)

    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise PixelDataError(f"degenerate output range {lo}..{hi}")
    with np.errstate(all="ignore"):
        scaled = (values - lo) / (hi - lo)
    if not np.isfinite(scaled).all():
        raise PixelDataError("pixel values are not finite after the Modality/VOI LUT")
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


_PIXEL_KEYWORDS = (
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "SamplesPerPixel",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "VOILUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "Modality",
)


def _pixel_module(ds: Dataset) -> Dataset:
    """A copy of just the attributes the LUT stages read (the caller's dataset stays untouched)."""
    meta = Dataset()
    for keyword in _PIXEL_KEYWORDS:
        if keyword in ds:
            meta[keyword] = copy.deepcopy(ds[keyword])
    # Empty Type 2/3 values would break the arithmetic; drop them. Anything else must be
    # finite numbers (one for the rescale values), or the image is refused with a reason.
    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        if keyword not in meta:
            continue
        numbers = _numbers(keyword, meta[keyword].value)
        if not numbers:
            del meta[keyword]
        elif keyword.startswith("Rescale") and len(numbers) != 1:
            raise PixelDataError(f"{keyword} has {len(numbers)} values, one expected")
    return meta
