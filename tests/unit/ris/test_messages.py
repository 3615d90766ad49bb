"""The RIS messages: ORU^R01 read back with hl7apy, the FHIR Bundle validated by fhir.resources."""

from __future__ import annotations

import dataclasses
import json

import pytest
from fhir.resources.R4B.bundle import Bundle
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from ris import codes, fhir, hl7
from ris.fhir_http import FhirEndpoint
from ris.mllp import MllpAddress, frame, unframe
from ris.outcome import StudyOutcome
from tests.harness.ris import judge_bundle, judge_oru, study_outcome
from worker.results import codes as sr_codes

OUTCOME = study_outcome()
ISSUED = OUTCOME.issued
REPLACEMENT = dataclasses.replace(
    OUTCOME,
    finding="absent",
    probability=0.12,
    sr_sop_instance_uid="1.2.826.0.1.3680043.8.498.20",
    replaces_sr_sop_instance_uid=OUTCOME.sr_sop_instance_uid,
)


def _oru(outcome: StudyOutcome = OUTCOME, parties: hl7.Parties | None = None) -> str:
    return hl7.build_oru(
        outcome,
        message_control_id=hl7.control_id(outcome),
        parties=parties or hl7.Parties(sending_facility="HOSP", assigning_authority="HOSP-MRN"),
    )


def _obx(msg: object) -> dict[str, tuple[str, str, str]]:
    """OBX-3 code -> (OBX-2, OBX-5, OBX-11)."""
    order = msg.oru_r01_patient_result.oru_r01_order_observation  # type: ignore[attr-defined]
    out = {}
    for obs in order.oru_r01_observation:
        obx = obs.obx
        out[obx.obx_3.ce_1.to_er7()] = (
            obx.obx_2.to_er7(),
            obx.obx_5.to_er7(),
            obx.obx_11.to_er7(),
        )
    return out


def test_the_oru_parses_back_with_hl7apy_and_carries_every_field() -> None:
    er7 = _oru()
    assert judge_oru(er7) is None
    msg = parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert msg.name == "ORU_R01"
    assert msg.msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
    assert msg.msh.msh_12.to_er7() == "2.5.1"
    assert msg.msh.msh_10.to_er7() == hl7.control_id(OUTCOME)
    assert msg.msh.msh_4.to_er7() == "HOSP"
    pid = msg.oru_r01_patient_result.oru_r01_patient.pid
    assert pid.pid_3.to_er7() == "PAT-7731^^^HOSP-MRN^MR"
    assert pid.pid_5.to_er7() == "Doe^Jane^Q^III^Dr"  # XPN: suffix before prefix
    assert pid.pid_7.to_er7() == "19650412"
    assert pid.pid_8.to_er7() == "F"
    order = msg.oru_r01_patient_result.oru_r01_order_observation
    assert order.orc.orc_1.to_er7() == "RE"
    assert order.orc.orc_3.to_er7() == "ACC0042"
    assert order.obr.obr_3.to_er7() == "ACC0042"
    assert order.obr.obr_18.to_er7() == "ACC0042"
    assert order.obr.obr_25.to_er7() == "F"
    assert "Research use only" in order.nte.nte_3.to_er7()
    obx = _obx(msg)
    assert obx["840539006"] == ("CWE", "52101004^Present^SCT", "F")
    assert obx["C19-PROBABILITY"] == ("NM", "0.7231", "F")
    assert obx["122411"] == ("NM", "0.4000", "F")
    assert obx["C19-OPERATING-POINT"] == ("ST", "clinical", "F")
    assert obx["111003"] == ("ST", "deepcovid-2026.12", "F")
    assert obx["110180"] == ("ST", OUTCOME.study_instance_uid, "F")


def test_a_replacement_result_is_sent_corrected_with_its_own_control_id() -> None:
    msg = parse_message(_oru(REPLACEMENT), find_groups=True)
    order = msg.oru_r01_patient_result.oru_r01_order_observation
    assert order.obr.obr_25.to_er7() == "C"
    assert {status for _, _, status in _obx(msg).values()} == {"C"}
    assert _obx(msg)["840539006"][1] == "272519000^Absent^SCT"
    assert hl7.control_id(REPLACEMENT) != hl7.control_id(OUTCOME)
    assert hl7.control_id(OUTCOME) == hl7.control_id(dataclasses.replace(OUTCOME))
    assert len(hl7.control_id(OUTCOME)) <= 20


def test_delimiters_in_dicom_values_are_escaped_not_parsed() -> None:
    odd = dataclasses.replace(OUTCOME, patient_id="A|B^C", accession_number="X~Y&Z\\W")
    er7 = _oru(odd)
    assert judge_oru(er7) is None
    assert len(er7.split("\r")) == len(_oru().split("\r"))  # no segment split off
    msg = parse_message(er7, find_groups=True)
    pid = msg.oru_r01_patient_result.oru_r01_patient.pid
    assert pid.pid_3.cx_1.to_er7() == "A\\F\\B\\S\\C"
    assert pid.pid_3.cx_5.to_er7() == "MR"  # still the 5th component
    obr = msg.oru_r01_patient_result.oru_r01_order_observation.obr
    assert obr.obr_18.to_er7() == "X\\R\\Y\\T\\Z\\E\\W"


def test_missing_values_leave_their_fields_empty() -> None:
    bare = dataclasses.replace(
        OUTCOME,
        finding="indeterminate",
        probability=None,
        threshold=None,
        operating_point=None,
        patient_name=None,
        patient_birth_date="1965",  # not a DA: left out
        patient_sex=None,
        accession_number=None,
    )
    er7 = _oru(bare, hl7.Parties())
    assert judge_oru(er7) is None
    msg = parse_message(er7, find_groups=True)
    pid = msg.oru_r01_patient_result.oru_r01_patient.pid
    assert pid.pid_5.to_er7() == '""' and pid.pid_7.to_er7() == "" and pid.pid_8.to_er7() == "U"
    obx = _obx(msg)
    assert obx["840539006"][1] == "82334004^Indeterminate^SCT"
    assert "C19-PROBABILITY" not in obx and "122411" not in obx


def test_an_unknown_finding_or_a_naive_time_is_refused() -> None:
    with pytest.raises(hl7.Hl7Error):
        _oru(dataclasses.replace(OUTCOME, finding="maybe"))
    with pytest.raises(hl7.Hl7Error):
        _oru(dataclasses.replace(OUTCOME, issued=ISSUED.replace(tzinfo=None)))
    with pytest.raises(fhir.FhirError):
        fhir.build_bundle(dataclasses.replace(OUTCOME, finding="maybe"))
    percent = dataclasses.replace(OUTCOME, probability=72.31)  # a percentage, not a fraction
    with pytest.raises(hl7.Hl7Error, match=r"not in \[0, 1\]"):
        _oru(percent)
    with pytest.raises(fhir.FhirError, match=r"not in \[0, 1\]"):
        fhir.build_bundle(dataclasses.replace(OUTCOME, threshold=40.0))


def test_acks_are_read_and_the_control_id_is_found_in_msh() -> None:
    er7 = _oru()
    assert hl7.message_control_id(er7) == hl7.control_id(OUTCOME)
    aa = hl7.parse_ack("MSH|^~\\&|RIS||||20261206||ACK^R01^ACK|9|P|2.5.1\rMSA|AA|CID1")
    assert aa.accepted and aa.control_id == "CID1"
    ae = hl7.parse_ack(
        "MSH|^~\\&|RIS||||20261206||ACK^R01^ACK|9|P|2.5.1\rMSA|AE|CID1|unknown patient"
    )
    assert not ae.accepted and ae.code == "AE" and ae.text == "unknown patient"
    with pytest.raises(hl7.Hl7Error):
        hl7.parse_ack("HTTP/1.1 200 OK")
    with pytest.raises(hl7.Hl7Error):
        hl7.message_control_id("PID|1")


def test_our_codes_are_the_srs_codes() -> None:
    """ris may not import the worker, so the shared concepts are written twice; kept equal here."""
    pairs = [
        (codes.COVID19, sr_codes.COVID19),
        (codes.FINDING_VALUES["present"], sr_codes.PRESENT),
        (codes.FINDING_VALUES["absent"], sr_codes.ABSENT),
        (codes.FINDING_VALUES["indeterminate"], sr_codes.INDETERMINATE),
        (codes.PROBABILITY, sr_codes.COVID19_PROBABILITY),
        (codes.THRESHOLD, sr_codes.THRESHOLD),
    ]
    for ours, theirs in pairs:
        assert (ours.code, ours.scheme) == (theirs.value, theirs.scheme_designator)
    for concept in (codes.COVID19, codes.PROBABILITY, codes.REPORT, codes.OPERATING_POINT):
        assert not set("|^~\\&") & set(concept.code + concept.display + concept.scheme)


def test_the_fhir_bundle_validates_and_names_patient_order_study_and_finding() -> None:
    bundle = fhir.build_bundle(OUTCOME, patient_id_system="urn:oid:1.2.3.4")
    assert judge_bundle(bundle) is None
    parsed = Bundle.model_validate(json.loads(fhir.to_json(bundle)))
    assert parsed.type == "transaction"
    by_type = {e["resource"]["resourceType"]: e for e in bundle["entry"]}
    patient = by_type["Patient"]["resource"]
    assert patient["identifier"][0]["value"] == "PAT-7731"
    assert patient["birthDate"] == "1965-04-12" and patient["gender"] == "female"
    assert patient["name"][0] == {
        "family": "Doe",
        "given": ["Jane", "Q"],
        "prefix": ["Dr"],
        "suffix": ["III"],
    }
    assert by_type["Patient"]["request"]["ifNoneExist"] == "identifier=urn:oid:1.2.3.4|PAT-7731"
    obs = by_type["Observation"]["resource"]
    assert obs["status"] == "final"
    assert obs["code"]["coding"][0]["code"] == "840539006"
    assert obs["valueCodeableConcept"]["coding"][0]["code"] == "52101004"
    values = {c["code"]["coding"][0]["code"]: c for c in obs["component"]}
    assert values["C19-PROBABILITY"]["valueQuantity"]["value"] == 0.7231
    assert values["122411"]["valueQuantity"]["value"] == 0.4
    assert values["C19-OPERATING-POINT"]["valueString"] == "clinical"
    assert values["111003"]["valueString"] == "deepcovid-2026.12"
    report = by_type["DiagnosticReport"]["resource"]
    assert report["status"] == "final"
    assert report["basedOn"][0]["identifier"]["value"] == "ACC0042"
    assert (
        report["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{OUTCOME.study_instance_uid}"
    )
    assert report["result"] == [{"reference": by_type["Observation"]["fullUrl"]}]
    assert report["subject"] == {"reference": by_type["Patient"]["fullUrl"]}
    assert "Research use only" in report["conclusion"]
    assert by_type["DiagnosticReport"]["request"]["method"] == "PUT"  # conditional: idempotent
    assert fhir.to_json(bundle) == fhir.to_json(
        fhir.build_bundle(OUTCOME, patient_id_system="urn:oid:1.2.3.4")
    )


def test_a_replacement_updates_the_same_report_as_corrected() -> None:
    first = fhir.build_bundle(OUTCOME)
    second = fhir.build_bundle(REPLACEMENT)
    assert judge_bundle(second) is None
    urls = lambda b: [e["request"]["url"] for e in b["entry"]]  # noqa: E731
    assert urls(first) == urls(second)  # the same conditional update targets
    statuses = {e["resource"]["resourceType"]: e["resource"].get("status") for e in second["entry"]}
    assert statuses["DiagnosticReport"] == "corrected" and statuses["Observation"] == "corrected"
    assert "Corrected" in second["entry"][-1]["resource"]["conclusion"]


def test_an_invalid_bundle_is_refused_without_echoing_its_values() -> None:
    bundle = fhir.build_bundle(OUTCOME)
    bundle["entry"][1]["resource"]["issued"] = "PAT-7731"
    with pytest.raises(fhir.FhirError) as refused:
        fhir.validate_bundle(bundle)
    assert "issued" in str(refused.value) and "PAT-7731" not in str(refused.value)
    bundle = fhir.build_bundle(OUTCOME)
    bundle["entry"][2]["resource"]["status"] = "done"
    with pytest.raises(fhir.FhirError, match="status"):
        fhir.validate_bundle(bundle)


def test_destination_texts_parse_or_say_why_not() -> None:
    assert MllpAddress.parse("mllp://ris.local:2575") == MllpAddress("ris.local", 2575)
    for bad in ("mllp://ris.local", "http://ris:2575", "mllp://:2575", "mllp://ris:2575/x"):
        with pytest.raises(ValueError):
            MllpAddress.parse(bad)
    assert FhirEndpoint.parse("fhir+https://ris/fhir/").base_url == "https://ris/fhir"
    assert FhirEndpoint.parse("fhir+http://ris:8080/r4").host == "ris"
    for bad in ("https://ris/fhir", "fhir+https://u:p@ris/fhir", "fhir+https://ris/fhir?x=1"):
        with pytest.raises(ValueError):
            FhirEndpoint.parse(bad)
    assert unframe(frame("MSH|x")) == "MSH|x"


def test_a_value_hl7_cannot_hold_is_refused_without_quoting_it() -> None:
    too_long = dataclasses.replace(OUTCOME, operating_point="PAT-SECRET-" + "x" * 300)
    with pytest.raises(hl7.Hl7Error) as refused:
        _oru(too_long)
    assert "MaxLengthReached" in str(refused.value) and "PAT-SECRET" not in str(refused.value)


def test_ris_rows_are_not_counted_as_dicom_instances_in_audit_events() -> None:
    from audit.events import count_sop_classes

    sr = "1.2.840.10008.5.1.4.1.1.88.34"
    assert count_sop_classes([sr, "", sr, ""]) == {sr: 2}  # "" = an HL7/FHIR outbox row
