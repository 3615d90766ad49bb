"""Secondary Capture: the heatmap blended over the chest X-ray, what a radiologist looks at.

RGB, 8 bits, same study as the source and its own series. The heatmap and a caption are
burned into the pixels, hence ``BurnedInAnnotation`` YES, and the series description carries
the caution that this is research software. The source image is referenced (Source Image
Sequence), and the anatomy is copied (Body Part Examined CHEST): that is what satisfies the
General Series Type 2C Laterality condition, as the chest is not a paired structure.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from worker.results.algorithm import AlgorithmInfo
from worker.results.identity import copy_identity, header_only, without_identifier_warnings
from worker.results.verdict import DomainResult, verdict_words

SERIES_DESCRIPTION = "COVID-19 overlay: research use only, not for diagnostic use"
CAPTION = "RESEARCH USE ONLY - NOT FOR DIAGNOSTIC USE"
MAX_ALPHA = 0.5
"""Opacity of the colour where the heatmap is strongest; zero heat leaves the image gray."""

# Anchor colours of a perceptually ordered "hot" ramp: transparent-ish blue to red to yellow.
_RAMP_POS = np.array([0.0, 0.35, 0.7, 1.0])
_RAMP_RGB = np.array([[0, 0, 255], [255, 0, 0], [255, 160, 0], [255, 255, 0]], dtype=np.float32)

_ORIENTATION_VALUES = {"A", "P", "R", "L", "H", "F"}


def _check_image(name: str, array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != shape:
        raise ValueError(
            f"{name} has shape {array.shape}; the source grid is Rows x Columns {shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array.astype(np.float32, copy=False)


def normalise_heatmap(heatmap: np.ndarray) -> np.ndarray:
    """Positive evidence scaled to [0, 1] (negative values, which lower the probability, -> 0)."""
    peak = float(heatmap.max()) if heatmap.size else 0.0
    if peak <= 0.0:
        return np.zeros_like(heatmap, dtype=np.float32)
    return np.clip(heatmap / peak, 0.0, 1.0).astype(np.float32)


def blend(display_image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """RGB uint8 overlay: the [0, 1] gray image with the normalised heatmap colour-coded."""
    heat = normalise_heatmap(heatmap)
    gray = np.clip(display_image, 0.0, 1.0)[..., None] * 255.0
    colour = np.stack(
        [np.interp(heat, _RAMP_POS, _RAMP_RGB[:, c]) for c in range(3)], axis=-1
    ).astype(np.float32)
    alpha = (MAX_ALPHA * heat)[..., None]
    rgb = (1.0 - alpha) * gray + alpha * colour
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def burn_caption(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """Write ``lines`` in the top-left corner on a dark band, scaled to the image size."""
    image = Image.fromarray(rgb, mode="RGB")
    draw = ImageDraw.Draw(image)
    size = max(10, min(rgb.shape[:2]) // 40)
    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        font = ImageFont.load_default()
    y = size // 2
    for line in lines:
        left, top, right, bottom = draw.textbbox((size // 2, y), line, font=font)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
        draw.text((size // 2, y), line, fill=(255, 255, 255), font=font)
        y = bottom + size // 3
    return np.asarray(image)


def caption_lines(
    probability: float,
    threshold: float,
    algorithm: AlgorithmInfo,
    domain: DomainResult | None = None,
) -> list[str]:
    """The burned-in caption: the caution, the verdict in words, then the numbers.

    The verdict leads (after the caution) so a reader sees the call before the figures, e.g.
    ``COVID-19 pattern: INDETERMINATE (outside the model's validated domain)``.
    """
    return [
        CAPTION,
        verdict_words(probability, threshold, domain),
        f"{algorithm.name} {algorithm.version}: COVID-19 probability {probability:.3f} "
        f"(threshold {threshold:.3f})",
    ]


def _patient_orientation(source: Dataset) -> tuple[str, str] | None:
    value = source.get("PatientOrientation")
    if value is None or len(value) != 2:
        return None
    row, column = (str(v) for v in value)
    if not row or not column or not set(row + column) <= _ORIENTATION_VALUES:
        return None
    return row, column


@without_identifier_warnings
def build_overlay_sc(
    source: Dataset,
    *,
    display_image: np.ndarray,
    heatmap: np.ndarray,
    probability: float,
    threshold: float,
    algorithm: AlgorithmInfo,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
    domain: DomainResult | None = None,
) -> hd.sc.SCImage:
    """The overlay SC for ``source`` (a header is enough; its pixels are not read).

    ``domain``: the model's domain check of the image; the caption's verdict is
    INDETERMINATE when it failed.
    """
    shape = (int(source.Rows), int(source.Columns))
    display = _check_image("display_image", display_image, shape)
    heat = _check_image("heatmap", heatmap, shape)
    if display.min() < 0.0 or display.max() > 1.0:
        raise ValueError("display_image must hold MONOCHROME2 values in [0, 1]")
    lines = caption_lines(probability, threshold, algorithm, domain)
    rgb = burn_caption(blend(display, heat), lines)
    orientation = _patient_orientation(source)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=header_only(source),
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=algorithm.manufacturer,
        patient_orientation=orientation or ("L", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        series_description=SERIES_DESCRIPTION,
        manufacturer_model_name=algorithm.model_name or algorithm.name,
        software_versions=algorithm.version,
    )
    copy_identity(source, sc)
    # Same pixel grid as the source, so the same orientation; empty (Type 2C) when unknown.
    sc.PatientOrientation = list(orientation) if orientation else []
    sc.BodyPartExamined = str(source.get("BodyPartExamined") or "CHEST")
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    sc.DerivationDescription = (
        f"Occlusion heatmap of {algorithm.name} {algorithm.version} blended over the source "
        "image; research use only, not for diagnostic use"
    )[:1024]
    sc.ImageComments = (
        f"{lines[1]}; COVID-19 probability {probability:.4f}, threshold {threshold:.4f}"
    )
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [reference]
    return sc
