"""Grayscale Softcopy Presentation State: the evidence and the verdict drawn over the source.

Unlike the overlay SC (pixels burned in), a presentation state leaves the radiograph untouched:
a viewer applies it to the original image, at full resolution and with the reader's own zoom
and window. It references the source and holds, in graphic layer ``EVIDENCE``, the contours of
the regions of strongest positive evidence (:mod:`worker.results.evidence`, the SR's regions)
and, in layer ``VERDICT``, text annotations: the verdict in words, probability and threshold,
model name and version, and "research use only".

Graphic and text annotations are drawn by viewers that render GSPS graphics (OHIF, most PACS
workstations). For those that render only the presentation state's overlays (dcmtk's
``dcmp2pgm``, several PACS), the same contours and text are also in a bitmap Overlay Plane
(group 6000) of the presentation state, activated in the ``EVIDENCE`` layer.

Display: the source's window when it states one, else the full stored range; a MONOCHROME1
source gets the INVERSE presentation LUT shape (a GSPS's presentation LUT replaces the
photometric interpretation, so IDENTITY would show the film negated).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.pixels import pack_bits

from worker.results.algorithm import AlgorithmInfo
from worker.results.derivation import set_device_uid
from worker.results.evidence import EvidenceRegion
from worker.results.identity import copy_identity, header_only, without_identifier_warnings
from worker.results.verdict import DomainResult, verdict_words

SERIES_DESCRIPTION = "COVID-19 annotations: research use only, not for diagnostic use"
CONTENT_LABEL = "COVID19_EVIDENCE"
CAUTION = "RESEARCH USE ONLY - NOT FOR DIAGNOSTIC USE"
EVIDENCE_COLOUR = hd.color.CIELabColor(97.0, -21.0, 94.0)
"""Yellow, as the overlay SC's outlines."""
TEXT_COLOUR = hd.color.CIELabColor(100.0, 0.0, 0.0)


def annotation_lines(
    probability: float,
    threshold: float,
    algorithm: AlgorithmInfo,
    domain: DomainResult | None = None,
) -> list[str]:
    """The text annotations, top to bottom: verdict, numbers (with the operating point when the
    algorithm names it), model, caution."""
    return [
        verdict_words(probability, threshold, domain),
        *algorithm.figure_lines(f"COVID-19 probability {probability:.3f}", threshold),
        f"Model {algorithm.name} {algorithm.version}",
        CAUTION,
    ]


def _voi(source: Dataset) -> list[hd.pr.SoftcopyVOILUTTransformation] | None:
    """None when the source states a window (highdicom copies it), else its stored range."""
    if "WindowCenter" in source and "WindowWidth" in source:
        return None
    bits = int(source.get("BitsStored") or 8)
    signed = int(source.get("PixelRepresentation") or 0) == 1
    width = float(2**bits)
    centre = 0.0 if signed else width / 2.0
    return [hd.pr.SoftcopyVOILUTTransformation(window_center=centre, window_width=width)]


def _presentation_lut(source: Dataset) -> hd.PresentationLUTTransformation:
    shape = (
        hd.PresentationLUTShapeValues.INVERSE
        if source.get("PhotometricInterpretation") == "MONOCHROME1"
        else hd.PresentationLUTShapeValues.IDENTITY
    )
    return hd.PresentationLUTTransformation(presentation_lut_shape=shape)


def overlay_bitmap(
    shape: tuple[int, int], regions: Sequence[EvidenceRegion], lines: Sequence[str]
) -> np.ndarray:
    """A (rows, columns) 0/1 bitmap of the contours and the text lines (top-left)."""
    rows, columns = shape
    image = Image.new("L", (columns, rows), 0)
    draw = ImageDraw.Draw(image)
    width = max(2, min(shape) // 250)
    for region in regions:
        points = [(float(x) - 0.5, float(y) - 0.5) for x, y in region.points]
        draw.line(points, fill=255, width=width, joint="curve")
    size = max(10, min(shape) // 40)
    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        font = ImageFont.load_default()
    y = size // 2
    for line in lines:
        draw.text((size // 2, y), line, fill=255, font=font)
        y = int(draw.textbbox((size // 2, y), line, font=font)[3]) + size // 3
    return (np.asarray(image) > 127).astype(np.uint8)


def add_overlay(gsps: Dataset, bitmap: np.ndarray, layer: str) -> None:
    """Overlay Plane 6000 of the presentation state, shown in graphic layer ``layer``."""
    rows, columns = bitmap.shape
    gsps.add_new(0x60000010, "US", rows)  # Overlay Rows
    gsps.add_new(0x60000011, "US", columns)  # Overlay Columns
    gsps.add_new(0x60000022, "LO", "COVID-19 evidence contours and verdict")  # Description
    gsps.add_new(0x60000040, "CS", "G")  # Overlay Type: graphics
    gsps.add_new(0x60000050, "SS", [1, 1])  # Overlay Origin
    gsps.add_new(0x60000100, "US", 1)  # Overlay Bits Allocated
    gsps.add_new(0x60000102, "US", 0)  # Overlay Bit Position
    gsps.add_new(0x60001001, "CS", layer)  # Overlay Activation Layer
    gsps.add_new(0x60001500, "LO", "COVID-19 EVIDENCE")  # Overlay Label
    gsps.add_new(0x60003000, "OW", pack_bits(bitmap.ravel()))  # Overlay Data


@without_identifier_warnings
def build_presentation_state(
    source: Dataset,
    *,
    regions: Sequence[EvidenceRegion],
    probability: float,
    threshold: float,
    algorithm: AlgorithmInfo,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
    domain: DomainResult | None = None,
    series_description: str = SERIES_DESCRIPTION,
) -> hd.pr.GrayscaleSoftcopyPresentationState:
    """The GSPS for ``source`` (a header is enough): evidence contours and the verdict text."""
    header = header_only(source)
    frame = 1 if int(source.get("NumberOfFrames") or 1) > 1 else None
    evidence_layer = hd.pr.GraphicLayer(
        layer_name="EVIDENCE",
        order=1,
        description="Regions of strongest positive evidence for COVID-19",
        display_color=EVIDENCE_COLOUR,
    )
    text_layer = hd.pr.GraphicLayer(
        layer_name="VERDICT",
        order=2,
        description="COVID-19 verdict, probability, operating point, model, caution",
        display_color=TEXT_COLOUR,
    )
    graphics = [
        hd.pr.GraphicObject(
            graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
            graphic_data=np.asarray(region.points, dtype=np.float64),
            units=hd.pr.AnnotationUnitsValues.PIXEL,
        )
        for region in regions
    ]
    lines = annotation_lines(probability, threshold, algorithm, domain)
    texts = [
        hd.pr.TextObject(
            text_value=line,
            units=hd.pr.AnnotationUnitsValues.DISPLAY,
            bounding_box=(0.01, 0.01 + 0.045 * i, 0.99, 0.05 + 0.045 * i),
            text_justification=hd.pr.TextJustificationValues.LEFT,
        )
        for i, line in enumerate(lines)
    ]
    annotations = [
        hd.pr.GraphicAnnotation(
            referenced_images=[header],
            graphic_layer=text_layer,
            referenced_frame_number=frame,
            text_objects=texts,
        )
    ]
    if graphics:
        annotations.insert(
            0,
            hd.pr.GraphicAnnotation(
                referenced_images=[header],
                graphic_layer=evidence_layer,
                referenced_frame_number=frame,
                graphic_objects=graphics,
            ),
        )
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[header],
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        **algorithm.equipment(),
        device_serial_number=algorithm.version,
        content_label=CONTENT_LABEL,
        content_description=f"{lines[0]}; research use only"[:64],
        graphic_annotations=annotations,
        graphic_layers=[evidence_layer, text_layer],
        voi_lut_transformations=_voi(header),
        presentation_lut_transformation=_presentation_lut(header),
    )
    bitmap = overlay_bitmap((int(source.Rows), int(source.Columns)), regions, lines)
    add_overlay(gsps, bitmap, evidence_layer.GraphicLayer)
    for layer in gsps.GraphicLayerSequence:  # white on grayscale displays (dcmtk needs it)
        layer.GraphicLayerRecommendedDisplayGrayscaleValue = 0xFFFF
    copy_identity(source, gsps)
    gsps.SeriesDescription = series_description
    # Anatomy of the source: a chest is not paired, which settles General Series Laterality (2C).
    gsps.BodyPartExamined = str(source.get("BodyPartExamined") or "CHEST")
    set_device_uid(gsps, algorithm)
    return gsps
