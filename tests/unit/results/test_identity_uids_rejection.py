"""Identity copying, result UIDs, algorithm card checks and the "not analysed" SR."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import highdicom as hd
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from worker.results import AlgorithmInfo, ResultUIDs, build_rejection_sr, build_results, codes
from worker.results.identity import copy_identity


def test_copy_identity_copies_study_and_patient(source) -> None:
    source.IssuerOfPatientID = "HOSP"
    target = Dataset()
    target.AccessionNumber = "OTHER"
    target.PatientAge = "040Y"
    copy_identity(source, target)
    for keyword in (
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "StudyInstanceUID",
        "AccessionNumber",
        "StudyDescription",
        "StudyDate",
        "PatientBirthDate",
    ):
        assert target[keyword].value == source[keyword].value, keyword
    assert "PatientAge" not in target  # absent in source: not kept


def test_copy_identity_keeps_type2_and_drops_malformed_age(source) -> None:
    del source.AccessionNumber
    with pytest.warns(UserWarning, match="AS"):
        source.PatientAge = "81"  # as in the NIH Secondary Capture
    target = copy_identity(source, Dataset())
    assert "AccessionNumber" in target and not target.AccessionNumber
    assert "PatientAge" not in target
    source.PatientAge = "081Y"
    assert copy_identity(source, Dataset()).PatientAge == "081Y"


def test_derived_uids_are_stable_per_source_and_version() -> None:
    a = ResultUIDs.derive("1.2.3.4", "v1")
    assert a == ResultUIDs.derive("1.2.3.4", "v1")
    assert a.sr_instance != ResultUIDs.derive("1.2.3.4", "v2").sr_instance
    assert a.sr_instance != ResultUIDs.derive("1.2.3.5", "v1").sr_instance
    assert ResultUIDs.generate() != ResultUIDs.generate()


def test_result_uids_refuse_invalid_or_repeated() -> None:
    uid = generate_uid()
    with pytest.raises(ValueError, match="distinct"):
        ResultUIDs(*([uid] * 8))
    with pytest.raises(ValueError, match="not a valid UID"):
        ResultUIDs("1.2.03", *(generate_uid() for _ in range(7)))


def test_algorithm_info_validates_and_reads_card() -> None:
    with pytest.raises(ValueError, match="device_uid"):
        AlgorithmInfo(name="x", version="1", device_uid="not-a-uid")
    with pytest.raises(ValueError, match="version"):
        AlgorithmInfo(name="x", version="", device_uid=generate_uid())
    card = SimpleNamespace(
        architecture="resnet18", device_uid=generate_uid(), threshold=0.3, input_size=224
    )
    info = AlgorithmInfo.from_card(card, version="v7")
    assert (info.model_name, info.version, info.device_uid) == ("resnet18", "v7", card.device_uid)
    assert info.parameter_strings == ["architecture=resnet18", "input_size=224", "threshold=0.3"]


def test_rejection_sr_says_why_and_references_source(source, algorithm) -> None:
    reason = "ViewPosition LL: lateral views are not analysed"
    sr = build_rejection_sr(
        source,
        reason,
        algorithm=algorithm,
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        series_number=9004,
    )
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.AccessionNumber == source.AccessionNumber
    root = hd.sr.ComprehensiveSR.from_dataset(sr)
    # TID 1500 without measurements: the reason is the Qualitative Evaluations' comment
    assert root.ConceptNameCodeSequence[0].CodeValue == "126000"
    assert root.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    items = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in root.ContentSequence}
    (comment,) = items["Qualitative Evaluations"].ContentSequence
    assert comment.ConceptNameCodeSequence[0].CodeValue == codes.COMMENT.value
    assert comment.TextValue == f"Not analysed: {reason}"
    (library_group,) = items["Image Library"].ContentSequence
    (entry,) = library_group.ContentSequence
    assert entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert items["Procedure reported"].ConceptCodeSequence[0].CodeValue == "43468-8"
    observer_uid = items["Device Observer UID"].UID
    assert observer_uid == algorithm.device_uid


def test_rejection_sr_needs_a_reason(source, algorithm) -> None:
    with pytest.raises(ValueError, match="reason"):
        build_rejection_sr(
            source,
            "  ",
            algorithm=algorithm,
            series_instance_uid=generate_uid(),
            sop_instance_uid=generate_uid(),
            series_number=1,
        )


def test_builders_do_not_warn_with_patient_names(source, algorithm, heatmap, display_image) -> None:
    source.PatientName = "Secretname"  # single component: highdicom would warn, quoting it
    source.ReferringPhysicianName = "Drwho"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_results(
            source,
            probability=0.5,
            threshold=0.5,
            heatmap=heatmap,
            display_image=display_image,
            algorithm=algorithm,
        )
    messages = " ".join(str(w.message) for w in caught)
    assert "Secretname" not in messages and "Drwho" not in messages
