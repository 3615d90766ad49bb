"""DICOM audit messages (PS3.15 A.5): every message we emit is valid against the A.5.1 schema,
uses the standard's codes, and carries no patient data beyond the Patient ID A.5.3 requires.

The schema is ``docs/schemas/dicom-audit-message.rng``, written from the standard's text; a few
invalid messages show it is not vacuous.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from common.atna import (
    DICOM_INSTANCES_TRANSFERRED,
    AtnaAuditor,
    AuditMessage,
    Outcome,
    Participant,
    get_auditor,
)
from common.settings import Settings
from common.syslog import format_message, octet_frame

REPO = Path(__file__).resolve().parents[3]
SCHEMA = etree.RelaxNG(etree.parse(str(REPO / "docs" / "schemas" / "dicom-audit-message.rng")))
HEADER = re.compile(
    rb"^<85>1 (?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (?P<host>\S+) deepcovid "
    rb"(?P<procid>\d+) DICOM\+RFC3881 - \xef\xbb\xbf(?P<msg><\?xml .*)$",
    re.DOTALL,
)
STUDY = "1.2.826.0.1.3680043.8.498.1"
CR = "1.2.840.10008.5.1.4.1.1.1"


class Recorder:
    """A sender that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def send(self, message: bytes) -> None:
        self.messages.append(message)

    def close(self, timeout_s: float = 5.0) -> None:
        pass


def xml_of(message: bytes) -> etree._Element:
    match = HEADER.match(message)
    assert match, message[:120]
    return etree.fromstring(match["msg"])


def assert_valid(doc: etree._Element) -> None:
    assert SCHEMA.validate(doc), SCHEMA.error_log


EMITS: dict[str, Callable[[AtnaAuditor], None]] = {
    "association accepted": lambda a: a.emit_association(
        accepted=True, calling_ae="PACS1", peer_address="10.1.20.31"
    ),
    "association rejected": lambda a: a.emit_association(
        accepted=False,
        reason="calling AE title not allowed",
        calling_ae="INTRUDER",
        peer_address="10.1.9.14",
    ),
    "tls failed": lambda a: a.emit_tls_failure(
        reason="TLS handshake failed: PEER_DID_NOT_RETURN_A_CERTIFICATE", peer_address="::1"
    ),
    "received": lambda a: a.emit_instances_received(
        calling_ae="PACS1",
        peer_address="10.1.20.31",
        study_instance_uid=STUDY,
        sop_classes={CR: 1},
        patient_id="PAT-1234",
    ),
    "sent": lambda a: a.emit_instances_sent(
        destination_ae="PACS1",
        destination_host="pacs.hospital.local",
        study_instance_uid=STUDY,
        sop_classes={"1.2.840.10008.5.1.4.1.1.88.22": 1, "1.2.840.10008.5.1.4.1.1.7": 1},
        patient_id="PAT-1234",
    ),
    "given up": lambda a: a.emit_instances_sent(
        destination_ae="PACS1",
        destination_host="10.1.20.40",
        study_instance_uid=STUDY,
        sop_classes={"1.2.840.10008.5.1.4.1.1.30": 1},
        patient_id=None,
        outcome=Outcome.SERIOUS_FAILURE,
        reason="not delivered after 12 attempts: connection refused",
    ),
    "purged": lambda a: a.emit_study_deleted(
        study_instance_uid=STUDY, sop_classes={CR: 1}, patient_id=None
    ),
    "started": lambda a: a.emit_application(started=True),
    "stopped": lambda a: a.emit_application(started=False),
    "login": lambda a: a.emit_login("alice", success=True, address="10.1.5.5"),
    "login failed": lambda a: a.emit_login(
        "mallory", success=False, address="10.1.5.6", reason="wrong password"
    ),
    "logout": lambda a: a.emit_login("alice", success=True, address="10.1.5.5", logout=True),
    "action on a study": lambda a: a.emit_action(
        "alice", "reanalyse", address="10.1.5.5", study_instance_uid=STUDY, patient_id="PAT-1234"
    ),
    "other action": lambda a: a.emit_action("alice", "activate model", address="10.1.5.5"),
}


@pytest.mark.parametrize("name", list(EMITS))
def test_every_message_is_valid_rfc5424_and_a5_1(name: str) -> None:
    sent = Recorder()
    EMITS[name](AtnaAuditor(sent, ae_title="DEEPCOVID", hostname="node1.hospital.local"))
    assert len(sent.messages) == 1
    match = HEADER.match(sent.messages[0])
    assert match, sent.messages[0][:120]
    assert match["host"] == b"node1.hospital.local"
    doc = xml_of(sent.messages[0])
    assert_valid(doc)
    assert doc.find("AuditSourceIdentification").get("AuditSourceID") == (
        "DEEPCOVID@node1.hospital.local"
    )
    assert doc.find("ParticipantObjectIdentification/ParticipantObjectName") is None
    when = dt.datetime.fromisoformat(doc.find("EventIdentification").get("EventDateTime"))
    assert when.tzinfo is not None


def codes(doc: etree._Element, path: str) -> list[tuple[str, str, str]]:
    return [
        (e.get("csd-code"), e.get("codeSystemName"), e.get("originalText"))
        for e in doc.iterfind(path)
    ]


def test_coded_values_are_the_standards() -> None:
    sent = Recorder()
    auditor = AtnaAuditor(sent, ae_title="DEEPCOVID", hostname="node1")
    for name in ("association rejected", "tls failed", "received", "sent", "login failed"):
        EMITS[name](auditor)
    rejected, tls, received, sent_, login = (xml_of(m) for m in sent.messages)

    assert codes(rejected, "EventIdentification/EventID") == [
        ("110114", "DCM", "User Authentication")
    ]
    assert codes(rejected, "EventIdentification/EventTypeCode") == [("110122", "DCM", "Login")]
    event = rejected.find("EventIdentification")
    assert (event.get("EventActionCode"), event.get("EventOutcomeIndicator")) == ("E", "4")
    assert event.findtext("EventOutcomeDescription") == "calling AE title not allowed"
    peer = rejected.find("ActiveParticipant")
    assert (peer.get("UserID"), peer.get("AlternativeUserID")) == ("INTRUDER", "AETITLES=INTRUDER")
    assert (peer.get("NetworkAccessPointID"), peer.get("NetworkAccessPointTypeCode")) == (
        "10.1.9.14",
        "2",
    )
    assert peer.get("UserIsRequestor") == "true"

    assert codes(tls, "EventIdentification/EventID") == [("110113", "DCM", "Security Alert")]
    assert codes(tls, "EventIdentification/EventTypeCode") == [
        ("110126", "DCM", "Node Authentication")
    ]
    subject = tls.find("ParticipantObjectIdentification")
    assert codes(subject, "ParticipantObjectIDTypeCode") == [("110182", "DCM", "Node ID")]
    detail = subject.find("ParticipantObjectDetail")
    assert detail.get("type") == "Alert Description"

    assert codes(received, "EventIdentification/EventID") == [
        ("110104", "DCM", "DICOM Instances Transferred")
    ]
    assert received.find("EventIdentification").get("EventActionCode") == "C"
    roles = codes(received, "ActiveParticipant/RoleIDCode")
    assert roles == [("110153", "DCM", "Source Role ID"), ("110152", "DCM", "Destination Role ID")]
    study, patient = received.findall("ParticipantObjectIdentification")
    assert study.get("ParticipantObjectID") == STUDY
    assert study.get("ParticipantObjectTypeCode") == "2"
    assert study.get("ParticipantObjectTypeCodeRole") == "3"
    assert codes(study, "ParticipantObjectIDTypeCode") == [("110180", "DCM", "Study Instance UID")]
    assert [(s.get("UID"), s.get("NumberOfInstances")) for s in study.iter("SOPClass")] == [
        (CR, "1")
    ]
    assert (patient.get("ParticipantObjectID"), patient.get("ParticipantObjectTypeCode")) == (
        "PAT-1234",
        "1",
    )
    assert codes(patient, "ParticipantObjectIDTypeCode") == [("2", "RFC-3881", "Patient Number")]

    assert sent_.find("EventIdentification").get("EventActionCode") == "R"
    us = sent_.find("ActiveParticipant")
    assert (us.get("UserID"), us.get("UserIsRequestor")) == ("DEEPCOVID", "true")
    assert login.find("ActiveParticipant").get("UserID") == "mallory"


def test_text_a_sender_controls_cannot_break_the_xml() -> None:
    sent = Recorder()
    AtnaAuditor(sent, ae_title="DEEPCOVID", hostname="n").emit_association(
        accepted=False, reason='<AuditMessage> & "x"', calling_ae="<X&Y>", peer_address="10.0.0.1"
    )
    doc = xml_of(sent.messages[0])
    assert_valid(doc)
    assert doc.find("ActiveParticipant").get("UserID") == "<X&Y>"


@pytest.mark.parametrize(
    "broken",
    [
        # no EventID
        lambda d: d.find("EventIdentification").remove(d.find("EventIdentification/EventID")),
        # outcome outside 0/4/8/12
        lambda d: d.find("EventIdentification").set("EventOutcomeIndicator", "1"),
        # no ActiveParticipant
        lambda d: [d.remove(p) for p in d.findall("ActiveParticipant")],
        # a coded value without its meaning (originalText is mandatory in A.5.1)
        lambda d: d.find("EventIdentification/EventID").attrib.pop("originalText"),
        # ParticipantObjectID missing
        lambda d: d.find("ParticipantObjectIdentification").attrib.pop("ParticipantObjectID"),
        # elements out of order: the audit source before the participants
        lambda d: d.insert(1, d.find("AuditSourceIdentification")),
        # an element A.5.1 does not have
        lambda d: etree.SubElement(d, "PatientName").__setattr__("text", "DOE^JOHN"),
    ],
)
def test_the_schema_rejects_invalid_messages(broken: Callable[[etree._Element], object]) -> None:
    sent = Recorder()
    EMITS["received"](AtnaAuditor(sent, ae_title="DEEPCOVID", hostname="n"))
    doc = xml_of(sent.messages[0])
    assert_valid(doc)
    broken(doc)
    assert not SCHEMA.validate(doc)


def test_a_message_needs_a_participant_and_a_zoned_time() -> None:
    us = Participant("DEEPCOVID", True)
    with pytest.raises(ValueError, match="ActiveParticipant"):
        AuditMessage(DICOM_INSTANCES_TRANSFERRED, "R", Outcome.SUCCESS, (), "X")
    with pytest.raises(ValueError, match="time zone"):
        AuditMessage(
            DICOM_INSTANCES_TRANSFERRED, "R", Outcome.SUCCESS, (us,), "X", time=dt.datetime.now()
        )


def test_off_by_default_and_then_silent(tmp_path: Path) -> None:
    auditor = get_auditor(Settings(data_dir=tmp_path))
    assert not auditor.enabled
    for emit in EMITS.values():
        emit(auditor)  # nothing to send to, nothing raised


def test_rfc5424_header_and_octet_counting() -> None:
    when = dt.datetime(2026, 11, 27, 14, 5, 31, 123456, tzinfo=dt.UTC)
    msg = format_message(
        "<x>é</x>".encode(), app_name="deepcovid", msgid="DICOM+RFC3881", hostname="h h",
        procid="42", timestamp=when,
    )  # fmt: skip
    assert msg == (
        b"<85>1 2026-11-27T14:05:31.123456Z hh deepcovid 42 DICOM+RFC3881 - \xef\xbb\xbf"
        + "<x>é</x>".encode()
    )
    assert octet_frame(msg) == str(len(msg)).encode() + b" " + msg
