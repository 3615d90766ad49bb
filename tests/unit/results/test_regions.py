"""Evidence regions: contours of the strong positive evidence, and the SR's TID 1410 groups."""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as pydicom_codes

from tests.harness.srread import read_report
from tests.unit.results.builders import build
from tests.unit.results.conftest import SHAPE
from worker.results import AlgorithmInfo, codes
from worker.results.evidence import evidence_regions, smooth_evidence
from worker.results.library import image_library


def _planar_groups(sr: Dataset) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    """The evidence regions' groups (not the image-level group over the whole image)."""
    return list(read_report(sr).region_groups)


def test_one_region_around_the_hot_spot(heatmap: np.ndarray) -> None:
    (region,) = evidence_regions(heatmap)
    points = region.points
    assert np.allclose(points[0], points[-1])  # closed
    centre = points[:-1].mean(axis=0)  # (column, row); the hot spot is at column 50, row 30
    assert np.allclose(centre, [50.5, 30.5], atol=2.0)
    assert region.peak == 1.0
    assert 0.0 < region.area_fraction < 0.3


def test_two_separate_spots_make_two_regions_largest_first() -> None:
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    big = np.exp(-((yy - 25.0) ** 2 + (xx - 20.0) ** 2) / 150.0)
    small = 0.9 * np.exp(-((yy - 70.0) ** 2 + (xx - 60.0) ** 2) / 60.0)
    regions = evidence_regions((big + small).astype(np.float32))
    assert len(regions) == 2
    assert regions[0].area_fraction > regions[1].area_fraction
    assert regions[0].points[:, 0].mean() < 40 < regions[1].points[:, 0].mean()


def test_no_positive_evidence_no_region() -> None:
    assert evidence_regions(np.full(SHAPE, -0.1, dtype=np.float32)) == []
    assert not smooth_evidence(np.zeros(SHAPE, dtype=np.float32)).any()


def test_grid_steps_are_smoothed_away() -> None:
    coarse = np.kron(np.arange(12 * 10, dtype=np.float32).reshape(12, 10), np.ones((8, 8)))
    smooth = smooth_evidence(coarse)
    assert float(np.abs(np.diff(smooth, axis=1)).max()) < 0.1  # no jump at the cell borders


def test_sr_region_group_has_contour_finding_verdict_and_probability(
    source: Dataset, algorithm: AlgorithmInfo, heatmap, display_image
) -> None:
    sr = build(source, algorithm, heatmap, display_image).sr
    (group,) = _planar_groups(sr)
    assert group.finding_type == codes.COVID19
    region = group.roi
    assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    assert region.value.shape[1] == 2
    assert np.allclose(region.value[0], region.value[-1])
    (image,) = [item for item in region.ContentSequence if item.ValueType == "IMAGE"]
    assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    # one NUM: the line a viewer writes beside the region, with the finding and the verdict
    values = {m.name: (m.value, m.unit.value) for m in group.get_measurements()}
    assert values == {codes.REGION_PROBABILITY_PRESENT: (80.0, "%")}
    assert not group.get_qualitative_evaluations()  # the verdict is the report's
    assert read_report(sr).verdict == "Present"
    assert group.tracking_identifier == "COVID-19 evidence region 1"
    # the region names the algorithm and its version; the parameters are the image group's
    names = [item.value for item in group[0].ContentSequence.find(pydicom_codes.DCM.AlgorithmName)]
    assert names == ["Deep-COVID"]
    assert not list(group[0].ContentSequence.find(pydicom_codes.DCM.AlgorithmParameters))


def test_region_probability_names_the_finding_in_a_declared_local_scheme(
    source: Dataset, algorithm: AlgorithmInfo, heatmap, display_image
) -> None:
    """Viewers label a region with its NUM concepts (OHIF 3.13): the first one names the
    finding; its private scheme (PS3.16 ``99...``) is declared in the SR's header."""
    sr = build(source, algorithm, heatmap, display_image).sr
    (group,) = _planar_groups(sr)
    first = next(item for item in group[0].ContentSequence if item.ValueType == "NUM")
    name = first.ConceptNameCodeSequence[0]
    assert name.CodeMeaning == "COVID-19 present"
    assert name.CodingSchemeDesignator == codes.LOCAL_SCHEME
    assert len(name.CodeValue) <= 16  # SH
    assert codes.LOCAL_SCHEME.startswith("99")
    (scheme,) = sr.CodingSchemeIdentificationSequence
    assert scheme.CodingSchemeDesignator == codes.LOCAL_SCHEME
    assert scheme.CodingSchemeName and scheme.CodingSchemeResponsibleOrganization


def test_no_evidence_no_region_but_the_image_outline(
    source: Dataset, algorithm: AlgorithmInfo, display_image
) -> None:
    flat = np.full(SHAPE, -0.01, dtype=np.float32)
    sr = build(source, algorithm, flat, display_image, probability=0.1).sr
    report = read_report(sr)
    assert report.region_groups == ()
    assert report.image_group is not None
    points = report.image_group.roi.value
    assert points[:, 0].max() == SHAPE[1] and points[:, 1].max() == SHAPE[0]
    # 9 points, not a 5-point rectangle (which OHIF would take for its own rectangle tool's)
    assert len(points) == 9 and np.allclose(points[0], points[-1])
    assert report.verdict == "Absent"


def test_procedure_reported_is_from_cid_100(source, algorithm, heatmap, display_image) -> None:
    sr = build(source, algorithm, heatmap, display_image).sr
    (procedure,) = [
        item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "121058"
    ]
    concept = procedure.ConceptCodeSequence[0]
    assert (concept.CodeValue, concept.CodingSchemeDesignator) == ("43468-8", "LN")


def test_library_modality_is_the_source_attribute(source: Dataset) -> None:
    source.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture, like the NIH file
    source.Modality = "DX"
    entry = image_library(source).ContentSequence[0].ContentSequence[0]
    (modality,) = [
        item
        for item in entry.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeMeaning == "Modality"
    ]
    assert modality.ConceptCodeSequence[0].CodeValue == "DX"


def test_regions_at_the_border_and_around_a_hole() -> None:
    """Each region is traced on its own bounding box: a region cut by the image border is
    closed along it, a ring's hole is filled (one outer contour), in image coordinates."""
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    corner = np.exp(-((yy - 0.0) ** 2 + (xx - 0.0) ** 2) / 200.0)
    radius = np.hypot(yy - 60.0, xx - 60.0)
    ring = 0.95 * np.exp(-((radius - 14.0) ** 2) / 8.0)
    regions = evidence_regions((corner + ring).astype(np.float32))
    assert len(regions) == 2
    for region in regions:
        points = region.points
        assert np.allclose(points[0], points[-1])
        assert points.min() >= 0.0
        assert points[:, 0].max() <= SHAPE[1] and points[:, 1].max() <= SHAPE[0]
    by_centre = sorted(regions, key=lambda region: float(region.points[:-1, 0].mean()))
    near_corner, around_hole = by_centre
    # closed along the border: within the first pixel (centre 0.5) of both edges
    assert near_corner.points[:, 0].min() < 0.5 and near_corner.points[:, 1].min() < 0.5
    centre = around_hole.points[:-1].mean(axis=0)
    assert np.allclose(centre, [60.5, 60.5], atol=1.5)
    # the outer edge only: every vertex is outside the hole
    distances = np.hypot(*(around_hole.points - 60.5).T)
    assert distances.min() > 14.0
