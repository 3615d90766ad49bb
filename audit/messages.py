"""DICOM audit messages (PS3.15 A.5.1, the format of IHE ATNA's Record Audit Event): the model
and its XML.

A message has an event (EventID, EventTypeCodes, action, outcome), the active participants (who
took part, and whether they asked for it), the audit source (this node) and participant objects
(a study, a patient, a node, an account). :meth:`AuditMessage.to_xml` writes it in the element
order of A.5.1; ``docs/schemas/dicom-audit-message.rng`` is the schema it is checked against.
What each audit event becomes is :mod:`audit.atna`; this module knows nothing of events.

Identifiers (A.5.2.1-2, as a conformance statement must say): a DICOM application participant
(this node, a peer) has UserID = its AE title and AlternativeUserID = ``AETITLES=<AE title>``;
a person (console or command-line user) has UserID = the login name. NetworkAccessPointID is the
peer's IP address (type 2) or a host name (type 1). AuditSourceID = ``<AE title>@<host name>``,
AuditSourceTypeCode 4 (application server process).

Patient data: the Patient participant object (:func:`patient`) carries the Patient ID only,
never the Patient Name, which A.5 leaves optional.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import ipaddress
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Literal

ActionCode = Literal["C", "R", "U", "D", "E"]


@dataclasses.dataclass(frozen=True)
class Code:
    """A coded value: ``csd-code``, ``codeSystemName`` and ``originalText`` (code meaning)."""

    value: str
    scheme: str
    meaning: str


# --- PS3.16 codes (CID 400 events, 401 event types, 402 roles, 404 object ID types) --------
APPLICATION_ACTIVITY = Code("110100", "DCM", "Application Activity")
DICOM_INSTANCES_ACCESSED = Code("110103", "DCM", "DICOM Instances Accessed")
DICOM_INSTANCES_TRANSFERRED = Code("110104", "DCM", "DICOM Instances Transferred")
DICOM_STUDY_DELETED = Code("110105", "DCM", "DICOM Study Deleted")
SECURITY_ALERT = Code("110113", "DCM", "Security Alert")
USER_AUTHENTICATION = Code("110114", "DCM", "User Authentication")

APPLICATION_START = Code("110120", "DCM", "Application Start")
APPLICATION_STOP = Code("110121", "DCM", "Application Stop")
LOGIN = Code("110122", "DCM", "Login")
LOGOUT = Code("110123", "DCM", "Logout")
NODE_AUTHENTICATION = Code("110126", "DCM", "Node Authentication")
USE_OF_RESTRICTED_FUNCTION = Code("110132", "DCM", "Use of Restricted Function")
USER_SECURITY_ATTRIBUTES_CHANGED = Code("110137", "DCM", "User security Attributes Changed")

APPLICATION = Code("110150", "DCM", "Application")
DESTINATION_ROLE = Code("110152", "DCM", "Destination Role ID")
SOURCE_ROLE = Code("110153", "DCM", "Source Role ID")

STUDY_INSTANCE_UID = Code("110180", "DCM", "Study Instance UID")
NODE_ID = Code("110182", "DCM", "Node ID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
USER_IDENTIFIER = Code("11", "RFC-3881", "User Identifier")


class Outcome(enum.IntEnum):
    """EventOutcomeIndicator (A.5.1)."""

    SUCCESS = 0
    MINOR_FAILURE = 4  # e.g. a refused association: the peer may try again
    SERIOUS_FAILURE = 8  # e.g. a result given up after every delivery attempt
    MAJOR_FAILURE = 12


class ObjectType(enum.StrEnum):
    """ParticipantObjectTypeCode (A.5.1)."""

    PERSON = "1"
    SYSTEM = "2"


class ObjectRole(enum.StrEnum):
    """ParticipantObjectTypeCodeRole (A.5.1.2.2)."""

    PATIENT = "1"
    REPORT = "3"
    SECURITY_USER_ENTITY = "11"
    SECURITY_RESOURCE = "13"


@dataclasses.dataclass(frozen=True)
class Participant:
    """An ActiveParticipant: who took part, and whether they asked for it."""

    user_id: str
    is_requestor: bool
    alternative_user_id: str | None = None
    user_name: str | None = None
    role: Code | None = None
    network_access_point: str | None = None


@dataclasses.dataclass(frozen=True)
class ParticipantObject:
    """A ParticipantObjectIdentification: a study, a patient, a node, a user."""

    object_id: str
    id_type: Code
    type_code: ObjectType
    role: ObjectRole | None = None
    details: tuple[tuple[str, str], ...] = ()
    """(type, text) pairs; the text is sent base64-encoded as A.5.1 requires."""
    sop_classes: tuple[tuple[str, int], ...] = ()
    """(SOP Class UID, number of instances) pairs, for study objects."""


@dataclasses.dataclass(frozen=True)
class AuditMessage:
    """One audit message (``AuditMessage`` of A.5.1); :meth:`to_xml` serialises it."""

    event: Code
    action: ActionCode
    outcome: Outcome
    participants: tuple[Participant, ...]
    source_id: str
    objects: tuple[ParticipantObject, ...] = ()
    event_types: tuple[Code, ...] = ()
    outcome_description: str | None = None
    time: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def __post_init__(self) -> None:
        if not self.participants:
            raise ValueError("an audit message needs at least one ActiveParticipant")
        if self.time.tzinfo is None:
            raise ValueError("EventDateTime must carry its time zone (A.5.2.5)")

    def to_xml(self) -> bytes:
        """The message as UTF-8 XML with declaration, in the element order of A.5.1."""
        root = ET.Element("AuditMessage")
        event = ET.SubElement(
            root,
            "EventIdentification",
            {
                "EventActionCode": self.action,
                "EventDateTime": self.time.isoformat(),
                "EventOutcomeIndicator": str(int(self.outcome)),
            },
        )
        _coded(event, "EventID", self.event)
        for code in self.event_types:
            _coded(event, "EventTypeCode", code)
        if self.outcome_description:
            ET.SubElement(event, "EventOutcomeDescription").text = self.outcome_description
        for p in self.participants:
            attrs = {"UserID": p.user_id, "UserIsRequestor": "true" if p.is_requestor else "false"}
            if p.alternative_user_id:
                attrs["AlternativeUserID"] = p.alternative_user_id
            if p.user_name:
                attrs["UserName"] = p.user_name
            if p.network_access_point:
                attrs["NetworkAccessPointID"] = p.network_access_point
                attrs["NetworkAccessPointTypeCode"] = _access_point_type(p.network_access_point)
            participant = ET.SubElement(root, "ActiveParticipant", attrs)
            if p.role is not None:
                _coded(participant, "RoleIDCode", p.role)
        source = ET.SubElement(root, "AuditSourceIdentification", {"AuditSourceID": self.source_id})
        ET.SubElement(source, "AuditSourceTypeCode", {"csd-code": "4"})  # application server
        for o in self.objects:
            attrs = {"ParticipantObjectID": o.object_id, "ParticipantObjectTypeCode": o.type_code}
            if o.role is not None:
                attrs["ParticipantObjectTypeCodeRole"] = o.role
            obj = ET.SubElement(root, "ParticipantObjectIdentification", attrs)
            _coded(obj, "ParticipantObjectIDTypeCode", o.id_type)
            for kind, text in o.details:
                value = base64.b64encode(text.encode("utf-8")).decode("ascii")
                ET.SubElement(obj, "ParticipantObjectDetail", {"type": kind, "value": value})
            if o.sop_classes:
                description = ET.SubElement(obj, "ParticipantObjectDescription")
                for uid, count in o.sop_classes:
                    ET.SubElement(
                        description, "SOPClass", {"UID": uid, "NumberOfInstances": str(count)}
                    )
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _coded(parent: ET.Element, tag: str, code: Code) -> None:
    ET.SubElement(
        parent,
        tag,
        {"csd-code": code.value, "codeSystemName": code.scheme, "originalText": code.meaning},
    )


def _access_point_type(address: str) -> str:
    """NetworkAccessPointTypeCode: 2 for an IP address, 1 for a machine name."""
    try:
        ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "1"
    return "2"


# --- building blocks --------------------------------------------------------------------------
def application(
    ae_title: str, *, requestor: bool, address: str | None, role: Code | None = None
) -> Participant:
    """A DICOM application participant (A.5.2.1-2): UserID = AE title, AETITLES= alternative."""
    return Participant(
        user_id=ae_title or "?",
        is_requestor=requestor,
        alternative_user_id=f"AETITLES={ae_title}" if ae_title else None,
        role=role,
        network_access_point=address or None,
    )


def study(study_uid: str, sop_classes: Mapping[str, int] | None = None) -> ParticipantObject:
    """A study participant object (A.5.3.7): System / Report, identified by Study Instance UID."""
    return ParticipantObject(
        object_id=study_uid,
        id_type=STUDY_INSTANCE_UID,
        type_code=ObjectType.SYSTEM,
        role=ObjectRole.REPORT,
        sop_classes=tuple(sorted((sop_classes or {}).items())),
    )


def patient(patient_id: str | None) -> tuple[ParticipantObject, ...]:
    """The Patient participant object (Person / Patient, Patient ID only), if there is an ID."""
    if not patient_id or not patient_id.strip():
        return ()
    return (
        ParticipantObject(
            object_id=patient_id.strip(),
            id_type=PATIENT_NUMBER,
            type_code=ObjectType.PERSON,
            role=ObjectRole.PATIENT,
        ),
    )
