"""Parametric Map: the heatmap as 32-bit floats on the source image's pixel grid.

Viewers can toggle and window it over the source. The floats are the saliency divided by its
maximum (the strongest evidence is 1.0, what OHIF draws opaque: :func:`display_scale`); the Real
World Value Mapping's slope gives the saliency back. Three obstacles with a projection radiograph
(highdicom 0.28.2 and OHIF 3.13.2, found while building this; details in
``docs/result-objects.md``):

* A source without a Frame of Reference (every CR, most DX) makes highdicom index the frames
  by Frame Label but, for a Parametric Map, never write that index into the frames, so the
  constructor fails with "Unexpected mismatch between dimension index values".
* The Parametric Map IOD itself needs a Frame of Reference and, in every frame, Plane Position
  and Plane Orientation (``dciodvfy`` reports them missing otherwise).
* OHIF overlays a map on its source only when the map's Image Orientation (Patient) equals the
  orientation the viewer has for the source; for an image that states none, cornerstone3D takes
  ``1\\0\\0\\0\\1\\0`` at position (0, 0, 0) and 1 mm spacing, and any other orientation stops the
  load ("Parametric maps oblique to the acquisition plane ... are not yet supported").

So the map gets its *own* Frame of Reference describing the radiograph as one plane in the
geometry a viewer infers for the source: the source's Image Position / Orientation (Patient)
where it states them, else origin (0, 0, 0) and ``1\\0\\0\\0\\1\\0``; the source's spacing where it
states a positive one, else 1 mm (see :func:`pixel_spacing`). highdicom is then given a header
view of the source with that geometry and builds the map the supported way (patient coordinate
system). The source image is referenced with Spatial Locations Preserved YES: pixel (r, c) of
the map is pixel (r, c) of the source.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from worker.results import codes
from worker.results.algorithm import AlgorithmInfo
from worker.results.derivation import carry_lossy_compression, set_device_uid
from worker.results.identity import copy_identity, header_only, without_identifier_warnings

SERIES_DESCRIPTION = "COVID-19 map: research use only, not for diagnostic use"
VIEWER_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
"""Image Orientation (Patient) that cornerstone3D (OHIF) gives an image that states none."""
VIEWER_POSITION = (0.0, 0.0, 0.0)
"""Image Position (Patient) that cornerstone3D (OHIF) gives an image that states none."""
NOMINAL_SPACING_MM = 1.0
"""Pixel spacing written when the source states no positive one: cornerstone3D's default too."""
LUT_LABEL = "OCCLUSION"
LUT_EXPLANATION = "Drop of the COVID-19 probability when the region is occluded"


def _numbers(source: Dataset, keyword: str, count: int) -> list[float] | None:
    """``count`` finite numbers from a multi-valued attribute, or None when it has not."""
    value = source.get(keyword)
    if value is None:
        return None
    multiple = isinstance(value, Sequence) and not isinstance(value, str | bytes)
    values = value if multiple else [value]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        return None
    return numbers


def image_orientation(source: Dataset) -> list[float]:
    """The source's Image Orientation (Patient), else the ``1\\0\\0\\0\\1\\0`` viewers assume.

    Patient Orientation (the row/column letters of a projection image) is deliberately not
    turned into an orientation: viewers do not do it, and a map whose plane differs from the
    one the viewer has for its source is not shown over it (OHIF refuses to load it).
    """
    orientation = _numbers(source, "ImageOrientationPatient", 6)
    if orientation is not None:
        row, col = np.array(orientation[:3]), np.array(orientation[3:])
        unit = abs(np.linalg.norm(row) - 1) < 1e-3 and abs(np.linalg.norm(col) - 1) < 1e-3
        if unit and abs(float(np.dot(row, col))) < 1e-3:
            return orientation
    return list(VIEWER_ORIENTATION)


def image_position(source: Dataset) -> list[float]:
    """The source's Image Position (Patient), else the origin viewers assume."""
    return _numbers(source, "ImagePositionPatient", 3) or list(VIEWER_POSITION)


def stated_pixel_spacing(source: Dataset) -> list[float] | None:
    """Row/column spacing in mm as the source states it, or None when it states none.

    Pixel Spacing first (for a projection image it is already the spacing in the patient
    plane), then Imager Pixel Spacing (at the detector), divided by the Estimated Radiographic
    Magnification Factor when one above 1 is stated - the choices and the correction
    cornerstone3D makes. Values must be positive: the NEMA CR's ``0\\0`` means "unknown".
    """
    spacing = _numbers(source, "PixelSpacing", 2)
    if spacing is not None and min(spacing) > 0.0:
        return spacing
    imager = _numbers(source, "ImagerPixelSpacing", 2)
    if imager is not None and min(imager) > 0.0:
        magnification = _numbers(source, "EstimatedRadiographicMagnificationFactor", 1)
        if magnification is not None and magnification[0] > 1.0:
            return [v / magnification[0] for v in imager]
        return imager
    return None


def pixel_spacing(source: Dataset) -> list[float]:
    """Row/column spacing in mm: what the source states (:func:`stated_pixel_spacing`), else a
    nominal 1 mm, cornerstone3D's default for an image without spacing."""
    return stated_pixel_spacing(source) or [NOMINAL_SPACING_MM, NOMINAL_SPACING_MM]


ParametricMapPolicy = Literal["always", "with_spacing", "never"]
"""When a Parametric Map is built (setting ``parametric_map``)."""


def wants_parametric_map(policy: ParametricMapPolicy, source: Dataset) -> bool:
    """Whether ``source`` gets a Parametric Map under ``policy``.

    ``with_spacing``: only when the source states a positive spacing. OHIF 3.13 draws the map
    in a volume viewport built from its own volume of the *source*; without a stated spacing
    that volume has spacing 0 (``0\\0``) or none, and OHIF draws neither map nor source
    (``docs/result-objects.md``, "In OHIF").
    """
    if policy == "always":
        return True
    if policy == "never":
        return False
    return stated_pixel_spacing(source) is not None


def geometry_view(source: Dataset, frame_of_reference_uid: str) -> Dataset:
    """The source header, given a single-plane geometry in its own Frame of Reference."""
    view = header_only(source)
    if "FrameOfReferenceUID" in view and "ImagePositionPatient" in view:
        return view  # the source has a patient geometry already: keep it
    view.FrameOfReferenceUID = frame_of_reference_uid
    view.PositionReferenceIndicator = ""
    view.ImagePositionPatient = image_position(source)
    view.ImageOrientationPatient = image_orientation(source)
    view.PixelSpacing = pixel_spacing(source)
    view.SliceThickness = view.PixelSpacing[0]
    return view


def display_scale(heatmap: np.ndarray) -> float:
    """The divisor that brings the strongest positive evidence to 1.0 in the stored values.

    OHIF 3.13 draws every Parametric Map with its own fixed look, whatever the object says:
    colour map ``rainbow_2``, opacity rising from 0 at 0 to 0.99 at 0.9, window 0..1 (shown as
    0..100). Stored as they are, occlusion saliencies (a drop of the probability, often a few
    hundredths) are drawn nearly transparent. Stored divided by their maximum, the strongest
    evidence is opaque; the Real World Value Mapping's slope (this scale) gives the saliency back
    to every reader that applies it (:func:`value_mapping`).
    """
    high = float(np.max(heatmap))
    return high if high > 0.0 else 1.0


def value_mapping(stored: np.ndarray, slope: float = 1.0) -> hd.pm.RealWorldValueMapping:
    """Linear mapping of the stored floats to the saliency (``slope`` x stored), unit "1",
    quantity Saliency; the range is that of the stored values."""
    low, high = float(stored.min()), float(stored.max())
    if high <= low:
        high = low + 1.0
    return hd.pm.RealWorldValueMapping(
        lut_label=LUT_LABEL,
        lut_explanation=LUT_EXPLANATION,
        unit=codes.UNITLESS,
        value_range=(low, high),
        slope=float(slope),
        intercept=0.0,
        quantity_definition=codes.SALIENCY,
    )


@without_identifier_warnings
def build_parametric_map(
    source: Dataset,
    *,
    heatmap: np.ndarray,
    algorithm: AlgorithmInfo,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
) -> hd.pm.ParametricMap:
    """The Parametric Map of ``heatmap`` (Rows x Columns floats) for ``source``."""
    shape = (int(source.Rows), int(source.Columns))
    heat = np.asarray(heatmap)
    if heat.shape != shape:
        raise ValueError(f"heatmap has shape {heat.shape}; the source grid is {shape}")
    if not np.all(np.isfinite(heat)):
        raise ValueError("heatmap contains NaN or infinite values")
    scale = display_scale(heat)
    heat = (heat.astype(np.float64) / scale).astype(np.float32)  # saliency = scale x stored
    low, high = float(heat.min()), float(heat.max())
    frame_of_reference = generate_uid(entropy_srcs=[sop_instance_uid, "frame-of-reference"])
    pm = hd.pm.ParametricMap(
        source_images=[geometry_view(source, frame_of_reference)],
        pixel_array=heat,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        **algorithm.equipment(),
        device_serial_number=algorithm.version,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[value_mapping(heat, slope=scale)],
        voi_lut_transformations=[
            hd.VOILUTTransformation(
                window_center=(low + high) / 2.0,
                window_width=max(high - low, 1e-6),
                # LINEAR_EXACT: the map's values are small floats, widths below 1 are normal
                voi_lut_function=hd.VOILUTFunctionValues.LINEAR_EXACT,
            )
        ],
        content_label="HEATMAP",
        content_description=f"{algorithm.name} {algorithm.version} occlusion heatmap"[:64],
        content_qualification=hd.ContentQualificationValues.RESEARCH,
        series_description=SERIES_DESCRIPTION,
    )
    copy_identity(source, pm)
    pm.BodyPartExamined = str(source.get("BodyPartExamined") or "CHEST")
    carry_lossy_compression(source, pm)
    set_device_uid(pm, algorithm)
    return pm
