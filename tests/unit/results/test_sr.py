"""The TID 1500 SR: finding, probability, threshold, algorithm, references, library."""

from __future__ import annotations

import highdicom as hd
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as pydicom_codes

from tests.harness.srread import read_report
from tests.unit.results.builders import build
from worker.results import ResultUIDs, codes
from worker.results.library import image_library
from worker.results.sr import percent, threshold_percent


def _group(sr: Dataset) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """The image-level group: a TID 1410 group whose region is the whole image."""
    group = read_report(sr).image_group
    assert group is not None
    return group


def _find(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations, code: object) -> list:
    """Items of the measurement group's container with concept name ``code``."""
    return list(group[0].ContentSequence.find(code))


@pytest.mark.parametrize(
    ("probability", "expected"),
    [(0.42, codes.PRESENT), (0.9, codes.PRESENT), (0.4199, codes.ABSENT), (0.0, codes.ABSENT)],
)
def test_finding_follows_threshold(
    source, algorithm, heatmap, display_image, probability, expected
) -> None:
    sr = build(source, algorithm, heatmap, display_image, probability=probability).sr
    report = read_report(sr)
    # stated once, at the report level (TID 1500 row 12), not in the groups
    assert report.verdict == expected.meaning
    assert all(not g.get_qualitative_evaluations() for g in report.region_groups)
    assert not _group(sr).get_qualitative_evaluations()


def test_probability_threshold_and_algorithm_read_back(
    source, algorithm, heatmap, display_image
) -> None:
    sr = build(source, algorithm, heatmap, display_image, probability=0.8125).sr
    group = _group(sr)
    values = {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()}
    assert values == {"Probability": (81.25, "%"), "Threshold Value": (42.0, "%")}
    assert group.tracking_identifier == "COVID-19 classification"
    outline = group.roi.value  # the whole image
    assert outline[:, 0].max() == source.Columns and outline[:, 1].max() == source.Rows
    assert group.tracking_uid
    assert group.finding_type == codes.COVID19
    assert _find(group, pydicom_codes.DCM.AlgorithmName)[0].value == "Deep-COVID"
    assert _find(group, pydicom_codes.DCM.AlgorithmVersion)[0].value == "2026.11.1"
    params = [item.value for item in _find(group, pydicom_codes.DCM.AlgorithmParameters)]
    assert params == ["occlusion_window=32", "threshold=0.42"]
    # identified once per group: no NUM carries the algorithm again
    for number in group.get_measurements():
        assert not list(number[0].get("ContentSequence", []))


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [(0.94428575038910, 94.42), (0.29, 29.0), (0.4199, 41.99), (0.41999999, 41.99), (1.0, 100.0)],
)
def test_percent_cuts_to_two_decimals(fraction: float, expected: float) -> None:
    assert percent(fraction) == expected


def test_a_probability_below_the_threshold_never_reads_as_reaching_it() -> None:
    for threshold in (0.42, 0.4217, 0.5, 0.3333):
        for step in (1e-9, 1e-6, 1e-5):
            below = threshold - step
            assert percent(below) < threshold_percent(threshold), (below, threshold)
            assert percent(threshold) >= threshold_percent(threshold)


def test_device_observer_is_the_model(source, algorithm, heatmap, display_image) -> None:
    sr = build(source, algorithm, heatmap, display_image).sr
    report = hd.sr.Comprehensive3DSR.from_dataset(sr).content
    (observer,) = report.get_observer_contexts()
    attributes = observer.observer_identifying_attributes
    assert attributes.uid == algorithm.device_uid
    assert attributes.name == "Deep-COVID"
    assert attributes.model_name == "squeezenet1_1"
    assert attributes.serial_number == "2026.11.1"


def test_references_source_sc_and_map(source, algorithm, heatmap, display_image) -> None:
    results = build(source, algorithm, heatmap, display_image)
    group = _group(results.sr)
    (image,) = [item for item in group.roi.ContentSequence if item.ValueType == "IMAGE"]
    assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    illustrations = {
        item.name.value: item.referenced_sop_instance_uid
        for item in _find(group, codes.BEST_ILLUSTRATION) + _find(group, codes.ILLUSTRATION)
    }
    assert illustrations == {
        codes.BEST_ILLUSTRATION.value: results.sc.SOPInstanceUID,
        codes.ILLUSTRATION.value: results.pmap.SOPInstanceUID,
    }
    evidence = {
        instance.ReferencedSOPInstanceUID
        for study in results.sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for instance in series.ReferencedSOPSequence
    }
    assert evidence == {
        source.SOPInstanceUID,
        results.sc.SOPInstanceUID,
        results.pmap.SOPInstanceUID,
    }


def test_image_library_without_imager_pixel_spacing(source) -> None:
    assert "ImagerPixelSpacing" not in source
    entry = image_library(source).ContentSequence[0].ContentSequence[0]
    names = {item.ConceptNameCodeSequence[0].CodeMeaning for item in entry.ContentSequence}
    assert {"Modality", "Pixel Data Rows", "Patient Orientation Row"} <= names
    assert "Horizontal Pixel Spacing" not in names


def test_image_library_with_imager_pixel_spacing(source) -> None:
    source.ImagerPixelSpacing = [0.143, 0.15]
    entry = image_library(source).ContentSequence[0].ContentSequence[0]
    spacing = {
        item.ConceptNameCodeSequence[0].CodeMeaning: float(
            item.MeasuredValueSequence[0].NumericValue
        )
        for item in entry.ContentSequence
        if "Pixel Spacing" in item.ConceptNameCodeSequence[0].CodeMeaning
    }
    assert spacing == {"Horizontal Pixel Spacing": 0.15, "Vertical Pixel Spacing": 0.143}


def test_previous_sr_becomes_predecessor(source, algorithm, heatmap, display_image) -> None:
    first = build(source, algorithm, heatmap, display_image).sr
    second = build(source, algorithm, heatmap, display_image, previous_sr=first).sr
    (study,) = second.PredecessorDocumentsSequence
    (series,) = study.ReferencedSeriesSequence
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID


def test_previous_sr_from_other_study_is_refused(source, algorithm, heatmap, display_image) -> None:
    first = build(source, algorithm, heatmap, display_image).sr
    first.StudyInstanceUID = "1.2.3.4"
    with pytest.raises(ValueError, match="another study"):
        build(source, algorithm, heatmap, display_image, previous_sr=first)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_invalid_probability_is_refused(source, algorithm, heatmap, display_image, bad) -> None:
    with pytest.raises(ValueError, match="probability"):
        build(source, algorithm, heatmap, display_image, probability=bad)


def test_explicit_uids_are_used(source, algorithm, heatmap, display_image) -> None:
    uids = ResultUIDs.derive(source.SOPInstanceUID, algorithm.version)
    results = build(source, algorithm, heatmap, display_image, uids=uids)
    assert (results.sr.SOPInstanceUID, results.sr.SeriesInstanceUID) == (
        uids.sr_instance,
        uids.sr_series,
    )
    assert results.sc.SOPInstanceUID == uids.sc_instance
    assert results.pmap.SeriesInstanceUID == uids.pm_series
    assert [ds.Modality for ds in results] == ["OT", "OT", "PR", "SR"]
