"""Secondary Capture: the evidence over the chest X-ray, what a radiologist looks at.

Legible first: the verdict in words leads the caption, then probability and threshold, then the
research-use caution; only the salient positive evidence is coloured (smoothed, no occlusion
grid steps, the film stays gray elsewhere), the strongest regions are outlined (the SR's
regions), and a small colour scale says what the colour means.

RGB, 8 bits, same study as the source and its own series. The heatmap and a caption are
burned into the pixels, hence ``BurnedInAnnotation`` YES, and the series description carries
the caution that this is research software. The source image is referenced (Source Image
Sequence), and the anatomy is copied (Body Part Examined CHEST): that is what satisfies the
General Series Type 2C Laterality condition, as the chest is not a paired structure.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from worker.results.algorithm import AlgorithmInfo
from worker.results.derivation import carry_lossy_compression, set_device_uid
from worker.results.evidence import EvidenceRegion, evidence_regions, smooth_evidence
from worker.results.identity import copy_identity, header_only, without_identifier_warnings
from worker.results.verdict import DomainResult, verdict_words

SERIES_DESCRIPTION = "COVID-19 overlay: research use only, not for diagnostic use"
CAPTION = "RESEARCH USE ONLY - NOT FOR DIAGNOSTIC USE"
MAX_ALPHA = 0.55
"""Opacity of the colour where the evidence is strongest."""
FILL_LEVEL = 0.4
"""Evidence below this fraction of the peak is not coloured: the film stays gray there (no wash
over abdomen and soft tissue); the colour fades in from here to the peak."""
CONTOUR_RGB = (255, 235, 0)
"""Outline of the evidence regions (the SR's and the presentation state's contours)."""

# Colour ramp of the fill, from the fill level to the peak: orange-red to yellow.
_RAMP_POS = np.array([0.0, 0.5, 1.0])
_RAMP_RGB = np.array([[230, 60, 0], [255, 150, 0], [255, 240, 60]], dtype=np.float32)

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


def _ramp(t: np.ndarray) -> np.ndarray:
    return np.stack([np.interp(t, _RAMP_POS, _RAMP_RGB[:, c]) for c in range(3)], axis=-1).astype(
        np.float32
    )


def blend(display_image: np.ndarray, evidence: np.ndarray) -> np.ndarray:
    """RGB uint8: the [0, 1] gray image, coloured only where ``evidence`` (in [0, 1], already
    smoothed and normalised, :func:`~worker.results.evidence.smooth_evidence`) is salient.

    Below :data:`FILL_LEVEL` the pixel stays gray; above, colour and opacity rise smoothly
    (smoothstep) to the peak, so the fill has no hard edge and no grid steps.
    """
    gray = np.clip(display_image, 0.0, 1.0)[..., None] * 255.0
    t = np.clip((np.asarray(evidence, dtype=np.float32) - FILL_LEVEL) / (1.0 - FILL_LEVEL), 0, 1)
    alpha = (MAX_ALPHA * t * t * (3.0 - 2.0 * t))[..., None]
    rgb = (1.0 - alpha) * gray + alpha * _ramp(t)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def _text_size(rgb: np.ndarray) -> int:
    return max(10, min(rgb.shape[:2]) // 40)


def draw_regions(rgb: np.ndarray, regions: Sequence[EvidenceRegion]) -> np.ndarray:
    """Outline each evidence region (SCOORD ``(column, row)`` points) on ``rgb``."""
    if not regions:
        return rgb
    image = Image.fromarray(rgb, mode="RGB")
    draw = ImageDraw.Draw(image)
    width = max(2, min(rgb.shape[:2]) // 250)
    for region in regions:
        points = [(float(x) - 0.5, float(y) - 0.5) for x, y in region.points]
        draw.line(points, fill=(0, 0, 0), width=width + 2, joint="curve")  # dark halo
        draw.line(points, fill=CONTOUR_RGB, width=width, joint="curve")
    return np.asarray(image)


def draw_colour_scale(rgb: np.ndarray) -> np.ndarray:
    """A small colour bar in the bottom-left corner: weak (fill level) to strong evidence."""
    size = _text_size(rgb)
    rows, columns = rgb.shape[:2]
    width, height = max(40, columns // 5), max(6, size // 2)
    left, top = size // 2, rows - size // 2 - height - size - 6
    if top < 0:
        return rgb
    out = rgb.copy()
    t = np.linspace(0.0, 1.0, width, dtype=np.float32)
    out[top : top + height, left : left + width] = np.rint(_ramp(t))[None, :, :].astype(np.uint8)
    image = Image.fromarray(out, mode="RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle(
        (left - 1, top - 1, left + width, top + height), outline=(255, 255, 255), width=1
    )
    font = _font(max(8, size * 3 // 4))
    label = "COVID-19 evidence: weak to strong; outline = strongest"
    box = draw.textbbox((left, top + height + 3), label, font=font)
    draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
    draw.text((left, top + height + 3), label, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def burn_caption(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """Write ``lines`` in the top-left corner on a dark band, scaled to the image size; the
    first line (the verdict) larger."""
    image = Image.fromarray(rgb, mode="RGB")
    draw = ImageDraw.Draw(image)
    size = _text_size(rgb)
    y = size // 2
    for number, line in enumerate(lines):
        font = _font(size * 5 // 4 if number == 0 else size)
        left, top, right, bottom = draw.textbbox((size // 2, y), line, font=font)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
        draw.text((size // 2, y), line, fill=(255, 255, 255), font=font)
        y = int(bottom) + size // 3
    return np.asarray(image)


def caption_lines(
    probability: float,
    threshold: float,
    algorithm: AlgorithmInfo,
    domain: DomainResult | None = None,
) -> list[str]:
    """The burned-in caption: the verdict in words, the numbers, then the caution.

    The verdict leads so a reader sees the call before the figures, e.g.
    ``COVID-19 pattern: INDETERMINATE (outside the model's validated domain)``. When the
    algorithm names its operating point, the point and its threshold get a line of their own.
    """
    figures = f"{algorithm.name} {algorithm.version}: COVID-19 probability {probability:.3f}"
    return [
        verdict_words(probability, threshold, domain),
        *algorithm.figure_lines(figures, threshold),
        CAPTION,
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
    regions: Sequence[EvidenceRegion] | None = None,
) -> hd.sc.SCImage:
    """The overlay SC for ``source`` (a header is enough; its pixels are not read).

    ``domain``: the model's domain check of the image; the caption's verdict is
    INDETERMINATE when it failed. ``regions``: the evidence regions to outline (computed
    from ``heatmap`` when not given).
    """
    shape = (int(source.Rows), int(source.Columns))
    display = _check_image("display_image", display_image, shape)
    heat = _check_image("heatmap", heatmap, shape)
    if display.min() < 0.0 or display.max() > 1.0:
        raise ValueError("display_image must hold MONOCHROME2 values in [0, 1]")
    lines = caption_lines(probability, threshold, algorithm, domain)
    if regions is None:
        regions = evidence_regions(heat)
    rgb = blend(display, smooth_evidence(heat))
    rgb = burn_caption(draw_colour_scale(draw_regions(rgb, regions)), lines)
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
        **algorithm.equipment(),
        patient_orientation=orientation or ("L", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        series_description=SERIES_DESCRIPTION,
    )
    copy_identity(source, sc)
    # Same pixel grid as the source, so the same orientation; empty (Type 2C) when unknown.
    sc.PatientOrientation = list(orientation) if orientation else []
    sc.BodyPartExamined = str(source.get("BodyPartExamined") or "CHEST")
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    sc.DerivationDescription = (
        f"Positive occlusion evidence of {algorithm.name} {algorithm.version} (smoothed) "
        "coloured over the source image where salient, strongest regions outlined; "
        "research use only, not for diagnostic use"
    )[:1024]
    sc.ImageComments = (
        f"{lines[0]}; COVID-19 probability {probability:.4f}, "
        f"{algorithm.threshold_words(threshold, digits=4)}"
    )
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [reference]
    carry_lossy_compression(source, sc)
    set_device_uid(sc, algorithm)
    return sc
