"""The overlay Secondary Capture and the Parametric Map."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

from tests.unit.results.builders import build
from worker.results.pmap import (
    NOMINAL_SPACING_MM,
    VIEWER_ORIENTATION,
    image_orientation,
    image_position,
    pixel_spacing,
    wants_parametric_map,
)
from worker.results.sc import blend


def _results(source, algorithm, heatmap, display_image, **kwargs):
    return build(source, algorithm, heatmap, display_image, probability=0.7, **kwargs)


def _roundtrip(ds):
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


def test_sc_is_rgb_burned_in_research_only(source, algorithm, heatmap, display_image) -> None:
    sc = _roundtrip(_results(source, algorithm, heatmap, display_image).sc)
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert (sc.PhotometricInterpretation, sc.SamplesPerPixel, sc.BitsAllocated) == ("RGB", 3, 8)
    assert sc.pixel_array.shape == (*heatmap.shape, 3)
    assert sc.BurnedInAnnotation == "YES"
    assert "research use only" in sc.SeriesDescription
    assert "not for diagnostic use" in sc.DerivationDescription
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert sc.BodyPartExamined == "CHEST"
    assert sc.PatientOrientation == ["L", "F"]
    assert sc.SeriesInstanceUID != source.SeriesInstanceUID


def test_sc_without_source_orientation_leaves_it_empty(
    source, algorithm, heatmap, display_image
) -> None:
    del source.PatientOrientation
    sc = _results(source, algorithm, heatmap, display_image).sc
    assert "PatientOrientation" in sc and not sc.PatientOrientation


def test_blend_keeps_gray_where_there_is_no_heat() -> None:
    gray = np.full((4, 4), 0.5, dtype=np.float32)
    heat = np.zeros((4, 4), dtype=np.float32)
    heat[0, 0] = 1.0
    rgb = blend(gray, heat)
    assert rgb.dtype == np.uint8
    assert np.all(rgb[1:, 1:] == 128)
    assert rgb[0, 0, 0] > rgb[0, 0, 2]  # hottest pixel is red/yellow, not gray


def test_sc_refuses_wrong_grid(source, algorithm, heatmap, display_image) -> None:
    with pytest.raises(ValueError, match="Rows x Columns"):
        _results(source, algorithm, heatmap[:-1], display_image)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _results(source, algorithm, heatmap, display_image * 2.0)


def test_pmap_holds_the_float_heatmap(source, algorithm, heatmap, display_image) -> None:
    pm = _roundtrip(_results(source, algorithm, heatmap, display_image).pmap)
    assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"
    assert "FloatPixelData" in pm and pm.BitsAllocated == 32
    parsed = hd.pm.ParametricMap.from_dataset(pm)
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    # stored: the saliency over its maximum (the strongest evidence 1.0, what OHIF draws
    # opaque); the mapping's slope gives the saliency back
    assert float(parsed.pixel_array.max()) == pytest.approx(1.0)
    assert float(mapping.RealWorldValueSlope) == pytest.approx(float(heatmap.max()))
    assert float(mapping.RealWorldValueIntercept) == 0.0
    saliency = parsed.pixel_array * float(mapping.RealWorldValueSlope)
    np.testing.assert_allclose(saliency, heatmap, rtol=1e-6, atol=1e-7)
    assert mapping.DoubleFloatRealWorldValueFirstValueMapped == pytest.approx(
        float(parsed.pixel_array.min())
    )
    assert mapping.DoubleFloatRealWorldValueLastValueMapped == pytest.approx(1.0)


def test_pmap_has_own_frame_of_reference_in_the_plane_viewers_assume(
    source, algorithm, heatmap, display_image
) -> None:
    """No source geometry: the plane, origin and spacing cornerstone3D (OHIF) gives the source."""
    pm = _results(source, algorithm, heatmap, display_image).pmap
    assert pm.FrameOfReferenceUID and "FrameOfReferenceUID" not in source
    shared = pm.SharedFunctionalGroupsSequence[0]
    orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    assert [float(v) for v in orientation] == [1, 0, 0, 0, 1, 0]
    position = pm.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    assert [float(v) for v in position.ImagePositionPatient] == [0, 0, 0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [
        NOMINAL_SPACING_MM,
        NOMINAL_SPACING_MM,
    ]
    derivation = pm.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    ref = derivation.SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert ref.SpatialLocationsPreserved == "YES"
    # OHIF finds the source display set through the referenced series
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert (pm.Rows, pm.Columns) == heatmap.shape
    assert pm.BodyPartExamined == "CHEST"


def test_pmap_uses_imager_pixel_spacing(source, algorithm, heatmap, display_image) -> None:
    source.ImagerPixelSpacing = [0.2, 0.25]
    pm = _results(source, algorithm, heatmap, display_image).pmap
    spacing = pm.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in spacing] == [0.2, 0.25]


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({}, [1.0, 1.0]),
        ({"PixelSpacing": [0, 0]}, [1.0, 1.0]),  # the NEMA CR: "unknown"
        ({"PixelSpacing": [0.14, 0.15]}, [0.14, 0.15]),
        ({"ImagerPixelSpacing": [0.2, 0.2]}, [0.2, 0.2]),
        ({"PixelSpacing": [0.14, 0.14], "ImagerPixelSpacing": [0.2, 0.2]}, [0.14, 0.14]),
        ({"PixelSpacing": [0, 0], "ImagerPixelSpacing": [0.2, 0.2]}, [0.2, 0.2]),
        (
            {"ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 1.25},
            [0.16, 0.16],
        ),
        ({"ImagerPixelSpacing": [0.2, -0.2]}, [1.0, 1.0]),
    ],
)
def test_pixel_spacing_is_what_the_source_states_else_1_mm(source, attributes, expected) -> None:
    for keyword, value in attributes.items():
        setattr(source, keyword, value)
    assert pixel_spacing(source) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        (None, list(VIEWER_ORIENTATION)),
        ([0, 1, 0, 0, 0, -1], [0, 1, 0, 0, 0, -1]),  # stated by the source: kept
        ([1, 0, 0, 1, 0, 0], list(VIEWER_ORIENTATION)),  # not orthogonal: ignored
        ([2, 0, 0, 0, 1, 0], list(VIEWER_ORIENTATION)),  # not unit vectors: ignored
    ],
)
def test_image_orientation_is_the_sources_else_the_viewers(source, orientation, expected) -> None:
    if orientation is not None:
        source.ImageOrientationPatient = orientation
    assert image_orientation(source) == expected


@pytest.mark.parametrize("letters", [["L", "F"], ["R", "F"], ["A", "F"], None])
def test_patient_orientation_does_not_tilt_the_map(source, letters) -> None:
    """Viewers ignore Patient Orientation for geometry; a map that did not would not overlay."""
    if letters is None:
        del source.PatientOrientation
    else:
        source.PatientOrientation = letters
    assert image_orientation(source) == list(VIEWER_ORIENTATION)


def test_image_position_is_the_sources_else_the_origin(source) -> None:
    assert image_position(source) == [0.0, 0.0, 0.0]
    source.ImagePositionPatient = [-10.5, 3, 7]
    assert image_position(source) == [-10.5, 3.0, 7.0]


def test_overlay_colours_only_the_salient_evidence(heatmap, display_image) -> None:
    """No wash: away from the hot spot the film stays gray; the spot is coloured and outlined."""
    from worker.results.evidence import evidence_regions, smooth_evidence
    from worker.results.sc import CONTOUR_RGB, draw_regions

    rgb = draw_regions(
        blend(display_image, smooth_evidence(heatmap)), evidence_regions(heatmap)
    ).astype(int)
    far = rgb[75:90, 5:20]  # bottom-left, far from the spot at row 30, column 50
    assert np.all(far[..., 0] == far[..., 1]) and np.all(far[..., 1] == far[..., 2])
    spot = rgb[28:33, 48:53]
    assert np.all(spot[..., 0] > spot[..., 2])  # coloured (red/yellow over gray)
    assert np.all(rgb == CONTOUR_RGB, axis=-1).any()  # the strongest region's contour


@pytest.mark.parametrize(
    ("spacing", "policy", "wanted"),
    [
        ({}, "always", True),
        ({}, "with_spacing", False),
        ({"PixelSpacing": [0, 0]}, "with_spacing", False),  # the NEMA CR's "unknown"
        ({"PixelSpacing": [0.2, 0.2]}, "with_spacing", True),
        ({"ImagerPixelSpacing": [0.175, 0.175]}, "with_spacing", True),
        ({"PixelSpacing": [0.2, 0.2]}, "never", False),
    ],
)
def test_setting_decides_whether_a_source_gets_a_map(source, spacing, policy, wanted) -> None:
    for keyword, value in spacing.items():
        setattr(source, keyword, value)
    assert wants_parametric_map(policy, source) is wanted


def test_results_without_the_map_leave_it_out_of_sending_and_of_the_sr(
    source, algorithm, heatmap, display_image
) -> None:
    results = _results(source, algorithm, heatmap, display_image, parametric_map=False)
    assert results.pmap is None
    assert [kind for kind, _ in results.items()] == ["sc", "pr", "sr"]
    assert [ds.SOPClassUID for ds in results] == [
        results.sc.SOPClassUID,
        results.gsps.SOPClassUID,
        results.sr.SOPClassUID,
    ]
    listed = {
        item.ReferencedSOPClassUID
        for study in results.sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert "1.2.840.10008.5.1.4.1.1.30" not in listed
    assert results.sc.SOPClassUID in listed
