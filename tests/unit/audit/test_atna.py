"""DICOM audit messages (PS3.15 A.5): every audit event becomes a message valid against the
A.5.1 schema, with the standard's codes, and no patient data beyond the Patient ID A.5.3 requires.

The schema is ``docs/schemas/dicom-audit-message.rng``, written from the standard's text; a few
invalid messages show it is not vacuous.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from audit import events as ev
from audit.atna import Source, to_message
from audit.messages import DICOM_INSTANCES_TRANSFERRED, AuditMessage, Outcome, Participant
from audit.sinks.syslog import APP_NAME, MSGID
from common.syslog import format_message, octet_frame
from tests.unit.audit.examples import CR, EVENTS, PEER, STUDY

REPO = Path(__file__).resolve().parents[3]
SCHEMA = etree.RelaxNG(etree.parse(str(REPO / "docs" / "schemas" / "dicom-audit-message.rng")))
HEADER = re.compile(
    rb"^<85>1 (?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (?P<host>\S+) deepcovid "
    rb"(?P<procid>\d+) DICOM\+RFC3881 - \xef\xbb\xbf(?P<msg><\?xml .*)$",
    re.DOTALL,
)


SOURCE = Source("DEEPCOVID", "node1.hospital.local")


def xml_of(event: ev.AuditEvent) -> etree._Element:
    """The event's message as the syslog sink frames it, parsed back from the frame."""
    framed = format_message(
        to_message(event, SOURCE).to_xml(), app_name=APP_NAME, msgid=MSGID,
        hostname=SOURCE.hostname,
    )  # fmt: skip
    match = HEADER.match(framed)
    assert match, framed[:120]
    assert match["host"] == b"node1.hospital.local"
    return etree.fromstring(match["msg"])


def assert_valid(doc: etree._Element) -> None:
    assert SCHEMA.validate(doc), SCHEMA.error_log


def test_every_event_of_the_vocabulary_is_exercised() -> None:
    kinds = {
        c for _, c in inspect.getmembers(ev, inspect.isclass)
        if issubclass(c, ev.AuditEvent) and c is not ev.AuditEvent
    }  # fmt: skip
    assert kinds == {type(e) for e in EVENTS.values()}


@pytest.mark.parametrize("name", list(EVENTS))
def test_every_message_is_valid_rfc5424_and_a5_1(name: str) -> None:
    doc = xml_of(EVENTS[name])
    assert_valid(doc)
    assert doc.find("AuditSourceIdentification").get("AuditSourceID") == (
        "DEEPCOVID@node1.hospital.local"
    )
    assert doc.find("ParticipantObjectIdentification/ParticipantObjectName") is None
    when = dt.datetime.fromisoformat(doc.find("EventIdentification").get("EventDateTime"))
    assert when == EVENTS[name].time and when.tzinfo is not None


def codes(doc: etree._Element, path: str) -> list[tuple[str, str, str]]:
    return [
        (e.get("csd-code"), e.get("codeSystemName"), e.get("originalText"))
        for e in doc.iterfind(path)
    ]


def event_of(doc: etree._Element) -> tuple[str, str, str]:
    e = doc.find("EventIdentification")
    return (
        e.find("EventID").get("csd-code"),
        e.get("EventActionCode"),
        e.get("EventOutcomeIndicator"),
    )


def test_coded_values_are_the_standards() -> None:
    rejected, tls, received, sent_, login = (
        xml_of(EVENTS[n])
        for n in ("association rejected", "tls failed", "received", "sent", "login failed")
    )
    assert codes(rejected, "EventIdentification/EventID") == [
        ("110114", "DCM", "User Authentication")
    ]
    assert codes(rejected, "EventIdentification/EventTypeCode") == [("110122", "DCM", "Login")]
    assert event_of(rejected) == ("110114", "E", "4")
    assert rejected.findtext("EventIdentification/EventOutcomeDescription") == (
        "calling AE title not allowed"
    )
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
    assert subject.find("ParticipantObjectDetail").get("type") == "Alert Description"

    assert event_of(received) == ("110104", "C", "0")
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

    assert event_of(sent_) == ("110104", "R", "0")
    us = sent_.find("ActiveParticipant")
    assert (us.get("UserID"), us.get("UserIsRequestor")) == ("DEEPCOVID", "true")
    assert login.find("ActiveParticipant").get("UserID") == "mallory"


def test_outcomes_and_event_types_of_people_and_services() -> None:
    """Each event's EventID, action and outcome, as docs/security.md's table says."""
    expected = {
        "association accepted": ("110114", "E", "0"),
        "given up": ("110104", "R", "8"),
        "purged": ("110105", "D", "0"),
        "started": ("110100", "E", "0"),
        "login": ("110114", "E", "0"),
        "login failed": ("110114", "E", "4"),
        "logout": ("110114", "E", "0"),
        "action on a study": ("110103", "U", "0"),
        "refused action": ("110113", "E", "4"),
        "other action": ("110113", "E", "0"),
        "cli action": ("110113", "E", "0"),
        "account added": ("110113", "E", "0"),
    }
    assert {name: event_of(xml_of(EVENTS[name])) for name in expected} == expected
    types = {n: codes(xml_of(EVENTS[n]), "EventIdentification/EventTypeCode") for n in EVENTS}
    assert types["logout"] == [("110123", "DCM", "Logout")]
    assert types["stopped"] == [("110121", "DCM", "Application Stop")]
    assert types["action on a study"] == [("reanalyse", "99DEEPCOVID", "reanalyse")]
    assert types["other action"] == [
        ("110132", "DCM", "Use of Restricted Function"),
        ("activate-model", "99DEEPCOVID", "activate model"),
    ]
    assert types["account added"][0] == ("110137", "DCM", "User security Attributes Changed")
    person = xml_of(EVENTS["login"]).find("ActiveParticipant")
    assert (person.get("UserID"), person.get("NetworkAccessPointID")) == ("alice", PEER)
    assert person.get("AlternativeUserID") is None  # a person, not an AE
    account = xml_of(EVENTS["account added"]).find("ParticipantObjectIdentification")
    assert (account.get("ParticipantObjectID"), account.get("ParticipantObjectTypeCode")) == (
        "alice",
        "1",
    )


def test_text_a_sender_controls_cannot_break_the_xml() -> None:
    event = dataclasses.replace(
        EVENTS["association rejected"], calling_ae="<X&Y>", reason='<AuditMessage> & "x"'
    )
    doc = xml_of(event)
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
    doc = xml_of(EVENTS["received"])
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
