"""Parametric Map: the raw heatmap as 32-bit floats on the source image's pixel grid.

Viewers can toggle and window it over the source. Two obstacles with a projection radiograph
(highdicom 0.28.2, found while building this; details in ``docs/result-objects.md``):

* A source without a Frame of Reference (every CR, most DX) makes highdicom index the frames
  by Frame Label but, for a Parametric Map, never write that index into the frames, so the
  constructor fails with "Unexpected mismatch between dimension index values".
* The Parametric Map IOD itself needs a Frame of Reference and, in every frame, Plane Position
  and Plane Orientation (``dciodvfy`` reports them missing otherwise).

So the map gets its *own* Frame of Reference, describing the radiograph as one plane: origin
(0, 0, 0), row/column directions from Patient Orientation (default: patient left, feet - the
usual display of a frontal chest film), pixel spacing from Imager Pixel Spacing or Pixel
Spacing when known (else a nominal 1 mm). highdicom is then given a header view of the source
with that geometry and builds the map the supported way (patient coordinate system). The
source image is referenced with Spatial Locations Preserved YES: pixel (r, c) of the map is
pixel (r, c) of the source.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from worker.results import codes
from worker.results.algorithm import AlgorithmInfo
from worker.results.identity import copy_identity, header_only, without_identifier_warnings

SERIES_DESCRIPTION = "COVID-19 map: research use only, not for diagnostic use"
NOMINAL_SPACING_MM = 1.0
"""Pixel spacing written when the source does not state one (its own Frame of Reference)."""
LUT_LABEL = "OCCLUSION"
LUT_EXPLANATION = "Drop of the COVID-19 probability when the region is occluded"

_DIRECTIONS = {
    "L": (1.0, 0.0, 0.0),
    "R": (-1.0, 0.0, 0.0),
    "P": (0.0, 1.0, 0.0),
    "A": (0.0, -1.0, 0.0),
    "H": (0.0, 0.0, 1.0),
    "F": (0.0, 0.0, -1.0),
}
_DEFAULT_ORIENTATION = ("L", "F")


def image_orientation(source: Dataset) -> list[float]:
    """Image Orientation (Patient) from Patient Orientation, or patient left / feet."""
    value = source.get("PatientOrientation")
    pair: tuple[str, ...] = _DEFAULT_ORIENTATION
    if value is not None and len(value) == 2:
        candidate = tuple(str(v) for v in value)
        row, col = candidate
        if (
            row in _DIRECTIONS
            and col in _DIRECTIONS
            and (np.dot(_DIRECTIONS[row], _DIRECTIONS[col]) == 0.0)
        ):
            pair = candidate
    return [*_DIRECTIONS[pair[0]], *_DIRECTIONS[pair[1]]]


def pixel_spacing(source: Dataset) -> list[float]:
    """Row/column spacing in mm from Imager Pixel Spacing or Pixel Spacing, when positive."""
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        value = source.get(keyword)
        if value is not None and len(value) == 2:
            spacing = [float(v) for v in value]
            if all(np.isfinite(spacing)) and min(spacing) > 0.0:
                return spacing
    return [NOMINAL_SPACING_MM, NOMINAL_SPACING_MM]


def geometry_view(source: Dataset, frame_of_reference_uid: str) -> Dataset:
    """The source header, given a single-plane geometry in its own Frame of Reference."""
    view = header_only(source)
    if "FrameOfReferenceUID" in view and "ImagePositionPatient" in view:
        return view  # the source has a patient geometry already: keep it
    view.FrameOfReferenceUID = frame_of_reference_uid
    view.PositionReferenceIndicator = ""
    view.ImagePositionPatient = [0.0, 0.0, 0.0]
    view.ImageOrientationPatient = image_orientation(source)
    view.PixelSpacing = pixel_spacing(source)
    view.SliceThickness = view.PixelSpacing[0]
    return view


def value_mapping(heatmap: np.ndarray) -> hd.pm.RealWorldValueMapping:
    """Identity mapping of the stored floats, unit "1", quantity Saliency."""
    low, high = float(heatmap.min()), float(heatmap.max())
    if high <= low:
        high = low + 1.0
    return hd.pm.RealWorldValueMapping(
        lut_label=LUT_LABEL,
        lut_explanation=LUT_EXPLANATION,
        unit=codes.UNITLESS,
        value_range=(low, high),
        slope=1.0,
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
    heat = heat.astype(np.float32)
    low, high = float(heat.min()), float(heat.max())
    frame_of_reference = generate_uid(entropy_srcs=[sop_instance_uid, "frame-of-reference"])
    pm = hd.pm.ParametricMap(
        source_images=[geometry_view(source, frame_of_reference)],
        pixel_array=heat,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=algorithm.manufacturer,
        manufacturer_model_name=algorithm.model_name or algorithm.name,
        software_versions=algorithm.version,
        device_serial_number=algorithm.version,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[value_mapping(heat)],
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
    return pm
