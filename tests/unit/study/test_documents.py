"""The study SR and KOS: what they say about each image, the study, and the image behind it.

``dciodvfy`` checks both on real objects in ``tests/integration/test_study_result.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.unit.study.conftest import STUDY_UID, header, image
from worker.results import AlgorithmInfo
from worker.study.documents import build_study_kos, build_study_sr, predecessor
from worker.study.rule import ImageResult, study_finding


def _roundtrip(ds: Dataset) -> Dataset:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


def _items(seq: object) -> Iterator[Dataset]:
    for item in seq or []:  # type: ignore[attr-defined]
        yield item
        yield from _items(item.get("ContentSequence"))


def _name(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeMeaning)


def _fraction(value: Dataset) -> float:
    """A NUM probability as a fraction, whether the SR writes it in % or unitless."""
    number = float(value.NumericValue)
    return number / 100 if value.MeasurementUnitsCodeSequence[0].CodeValue == "%" else number


def _images() -> list[ImageResult]:
    return [
        image(1, "absent", 0.2),
        image(2, "present", 0.7),
        image(3, "rejected", reason="lateral view (from the image)"),
        image(4, "failed", reason="pixel data cannot be converted"),
    ]


def _sr(algorithm: AlgorithmInfo, previous: Dataset | None = None) -> tuple[Dataset, Dataset]:
    images = _images()
    headers = {i.sop_instance_uid: header(i) for i in images[:3]}
    identity = headers[images[0].sop_instance_uid]
    sr = build_study_sr(
        images,
        study_finding(images),
        identity=identity,
        headers=headers,
        algorithm=algorithm,
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        previous_sr=previous,
    )
    return _roundtrip(sr), identity


def test_the_sr_has_one_group_per_image_with_its_finding_or_reason(
    algorithm: AlgorithmInfo,
) -> None:
    sr, _ = _sr(algorithm)
    report = hd.sr.Comprehensive3DSR.from_dataset(sr)
    groups = report.content.get_image_measurement_groups()
    assert [g.tracking_identifier for g in groups] == [
        f"COVID-19 classification, image {n}" for n in (1, 2, 3, 4)
    ]
    referenced = [g.source_images[0].referenced_sop_instance_uid for g in groups]
    assert referenced == [i.sop_instance_uid for i in _images()]
    verdicts = [[str(e.value.meaning) for e in g.get_qualitative_evaluations()] for g in groups]
    assert verdicts == [["Absent"], ["Present"], [], []]
    probabilities = [
        [
            _fraction(item.MeasuredValueSequence[0])
            for item in _items(g[0].ContentSequence)
            if item.ValueType == "NUM" and _name(item) == "Probability"
        ]
        for g in groups
    ]
    assert probabilities == [[0.2], [0.7], [], []]
    comments = [
        str(item.TextValue)
        for item in _items(sr.ContentSequence)
        if item.ValueType == "TEXT" and _name(item) == "Comment"
    ]
    assert "Not analysed: lateral view (from the image)" in comments
    assert "Analysis failed: pixel data cannot be converted" in comments


def test_the_sr_states_the_study_finding_and_the_image_behind_it(
    algorithm: AlgorithmInfo,
) -> None:
    sr, _ = _sr(algorithm)
    (evaluations,) = [
        item for item in sr.ContentSequence if _name(item) == "Qualitative Evaluations"
    ]
    verdict, comment = evaluations.ContentSequence
    assert _name(verdict) == "COVID-19"
    assert verdict.ConceptCodeSequence[0].CodeMeaning == "Present"
    assert (_name(comment), comment.RelationshipType) == ("Comment", "CONTAINS")
    assert comment.TextValue == "Study finding: present in 1 of 2 analysed image(s)"
    (best,) = verdict.ContentSequence
    assert _name(best) == "Best illustration of finding"
    assert best.RelationshipType == "INFERRED FROM"
    assert best.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == _images()[1].sop_instance_uid


def test_the_sr_lists_readable_images_in_its_library_and_all_as_evidence(
    algorithm: AlgorithmInfo,
) -> None:
    sr, identity = _sr(algorithm)
    library = [item for item in _items(sr.ContentSequence) if _name(item) == "Image Library Group"]
    assert len(library) == 3  # the fourth image's header is gone
    evidence = {
        ref.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert evidence == {i.sop_instance_uid for i in _images()}
    assert sr.StudyInstanceUID == STUDY_UID
    assert (sr.PatientID, sr.AccessionNumber) == (identity.PatientID, identity.AccessionNumber)
    assert "PredecessorDocumentsSequence" not in sr


def test_a_replacement_names_its_predecessor(algorithm: AlgorithmInfo) -> None:
    identity = header(_images()[0])
    old_sr, old_series = generate_uid(), generate_uid()
    sr, _ = _sr(algorithm, previous=predecessor(old_sr, old_series, identity))
    (study,) = sr.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == STUDY_UID
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == old_series
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == old_sr


def test_the_kos_names_the_image_that_drove_the_finding(algorithm: AlgorithmInfo) -> None:
    images = _images()
    identity = header(images[0])
    kos = _roundtrip(
        build_study_kos(
            study_finding(images),
            identity=identity,
            algorithm=algorithm,
            series_instance_uid=generate_uid(),
            sop_instance_uid=generate_uid(),
        )
    )
    assert kos.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59"
    assert kos.ConceptNameCodeSequence[0].CodeMeaning == "Of Interest"
    items = {_name(item): item for item in kos.ContentSequence}
    assert items["Source"].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        images[1].sop_instance_uid
    )
    description = str(items["Key Object Description"].TextValue)
    assert description.startswith("COVID-19 present: the image that drove the study finding")
    assert "probability 0.700" in description
    assert (kos.PatientID, kos.StudyInstanceUID) == (identity.PatientID, STUDY_UID)


def test_no_kos_without_an_analysed_image(algorithm: AlgorithmInfo) -> None:
    rejected = [image(1, "rejected", reason="CT slice (from the image)")]
    with pytest.raises(ValueError, match="no image drove the finding"):
        build_study_kos(
            study_finding(rejected),
            identity=header(rejected[0]),
            algorithm=algorithm,
            series_instance_uid=generate_uid(),
            sop_instance_uid=generate_uid(),
        )
