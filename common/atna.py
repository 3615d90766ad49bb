"""DICOM audit trail messages (PS3.15 A.5, IHE ATNA), sent to the site's audit repository.

The JSON audit log of the listener (``dicom_node.audit``) is the node's own record; this
module writes the same decisions -- and what was received and sent -- as the standard's XML
audit messages and sends them over syslog (:mod:`common.syslog`) to the Audit Record
Repository named by ``audit_syslog_host``. Both services use it (the listener for association
decisions and received instances, the worker and the node's dispatcher for delivered results),
which is why it lives below them.

Messages (PS3.15 A.5.3), with the coded values of PS3.16 (``DCM``) named below:

============================  =========================================  ======================
what happened                  EventID / EventTypeCode                    outcome
============================  =========================================  ======================
association accepted/refused   User Authentication (110114) / Login        0, or 4 with reason
TLS handshake failed           Security Alert (110113) / Node Auth.        4, alert description
instance received (C-STORE)    DICOM Instances Transferred (110104), C/U/R 0
results delivered (C-STORE)    DICOM Instances Transferred (110104), R     0, or 8 when given up
files purged (retention)       DICOM Study Deleted (110105)                0
node started / stopped         Application Activity (110100) / Start/Stop  0
console login / action         :meth:`AtnaAuditor.emit_login` / ``emit_action``
============================  =========================================  ======================

Patient data: participant objects are identified by Study Instance UID; the Patient
participant object that A.5.3 makes mandatory for instance transfers carries the Patient ID
only (never the Patient Name, which A.5 leaves optional), and is left out when the instance
has no Patient ID. Nothing else in a message concerns a patient.

Identifiers (A.5.2.1-2, as a conformance statement must say): a DICOM application participant
(this node, a peer) has UserID = its AE title and AlternativeUserID = ``AETITLES=<AE title>``;
a person (console user) has UserID = the login name. NetworkAccessPointID is the peer's IP
address (type 2) or this host's name (type 1). AuditSourceID = ``<AE title>@<host name>``,
AuditSourceTypeCode 4 (application server process). The syslog PROCID is the process id.

:func:`get_auditor` gives the process's auditor; with no collector configured it is a
disabled one whose ``emit_*`` do nothing, so callers never check. Building a message and
queueing it takes microseconds; sending happens on the sender's thread.
"""

from __future__ import annotations

import atexit
import base64
import dataclasses
import datetime as dt
import enum
import ipaddress
import logging
import os
import socket
import ssl
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, Protocol

from common.settings import Settings
from common.syslog import SyslogSender, format_message

log = logging.getLogger(__name__)

APP_NAME = "deepcovid"
MSGID = "DICOM+RFC3881"
"""The syslog MSGID PS3.15 A.6/A.7 suggest for messages in this format."""

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

APPLICATION = Code("110150", "DCM", "Application")
DESTINATION_ROLE = Code("110152", "DCM", "Destination Role ID")
SOURCE_ROLE = Code("110153", "DCM", "Source Role ID")

STUDY_INSTANCE_UID = Code("110180", "DCM", "Study Instance UID")
NODE_ID = Code("110182", "DCM", "Node ID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")

LOCAL_SCHEME = "99DEEPCOVID"
"""Coding scheme of our own event type codes (console actions), as PS3.16 allows (99...)."""


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


class Sender(Protocol):
    """Where formatted messages go (:class:`common.syslog.SyslogSender`, or a test double)."""

    def send(self, message: bytes) -> None: ...
    def close(self, timeout_s: float = 5.0) -> None: ...


class AtnaAuditor:
    """The audit messages of one process, built here and handed to a syslog sender.

    Every ``emit_*`` method is safe to call from any thread and never raises: an audit
    message that cannot be built is logged (it is a bug), one that cannot be sent waits in
    the sender's queue. With ``sender=None`` the auditor is disabled and does nothing.
    """

    def __init__(
        self, sender: Sender | None, *, ae_title: str, hostname: str | None = None
    ) -> None:
        self.sender = sender
        self.ae_title = ae_title
        self.hostname = hostname or socket.gethostname()
        self.source_id = f"{ae_title}@{self.hostname}"

    @property
    def enabled(self) -> bool:
        """Whether messages are sent anywhere."""
        return self.sender is not None

    def emit(self, message: AuditMessage) -> None:
        """Send one message (RFC 5424, MSGID ``DICOM+RFC3881``)."""
        if self.sender is None:
            return
        try:
            self.sender.send(
                format_message(
                    message.to_xml(), app_name=APP_NAME, msgid=MSGID, hostname=self.hostname
                )
            )
        except Exception:
            log.exception("audit message %s could not be built or queued", message.event.meaning)

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (for up to ``timeout_s``) and stop the sender."""
        if self.sender is not None:
            self.sender.close(timeout_s)

    # --- the node as a participant ----------------------------------------------------------
    def _us(self, *, requestor: bool, role: Code | None = None) -> Participant:
        return application(self.ae_title, requestor=requestor, address=self.hostname, role=role)

    def _message(self, event: Code, action: ActionCode, outcome: Outcome, **kw: object) -> None:
        if self.sender is None:
            return
        try:
            message = AuditMessage(event, action, outcome, source_id=self.source_id, **kw)  # type: ignore[arg-type]
        except Exception:
            log.exception("audit message %s could not be built", event.meaning)
            return
        self.emit(message)

    # --- DICOM events -------------------------------------------------------------------------
    def emit_association(
        self,
        *,
        accepted: bool,
        reason: str = "",
        calling_ae: str | None,
        peer_address: str | None,
    ) -> None:
        """An association request decided: User Authentication / Login (A.5.3.12)."""
        peer = application(calling_ae or "", requestor=True, address=peer_address)
        self._message(
            USER_AUTHENTICATION,
            "E",
            Outcome.SUCCESS if accepted else Outcome.MINOR_FAILURE,
            participants=(peer, self._us(requestor=False)),
            event_types=(LOGIN,),
            outcome_description=None if accepted else (reason or "association rejected"),
        )

    def emit_tls_failure(self, *, reason: str, peer_address: str | None) -> None:
        """A peer failed DICOM TLS: Security Alert / Node Authentication (A.5.3.11)."""
        subject = ParticipantObject(
            object_id=peer_address or "unknown",
            id_type=NODE_ID,
            type_code=ObjectType.SYSTEM,
            role=ObjectRole.SECURITY_RESOURCE,
            details=(("Alert Description", reason),),
        )
        peer = Participant(
            user_id=peer_address or "unknown",
            is_requestor=False,
            network_access_point=peer_address or None,
        )
        self._message(
            SECURITY_ALERT,
            "E",
            Outcome.MINOR_FAILURE,
            participants=(self._us(requestor=True), peer),
            objects=(subject,),
            event_types=(NODE_AUTHENTICATION,),
            outcome_description=reason,
        )

    def emit_instances_received(
        self,
        *,
        calling_ae: str | None,
        peer_address: str | None,
        study_instance_uid: str,
        sop_classes: Mapping[str, int],
        patient_id: str | None,
        action: ActionCode = "C",
    ) -> None:
        """Instances stored here: DICOM Instances Transferred (A.5.3.7), we are Destination.

        ``action``: C (new), U (replaced with different content), R (identical copy held).
        """
        self._message(
            DICOM_INSTANCES_TRANSFERRED,
            action,
            Outcome.SUCCESS,
            participants=(
                application(
                    calling_ae or "", requestor=True, address=peer_address, role=SOURCE_ROLE
                ),
                self._us(requestor=False, role=DESTINATION_ROLE),
            ),
            objects=(study(study_instance_uid, sop_classes), *patient(patient_id)),
        )

    def emit_instances_sent(
        self,
        *,
        destination_ae: str,
        destination_host: str,
        study_instance_uid: str,
        sop_classes: Mapping[str, int],
        patient_id: str | None,
        outcome: Outcome = Outcome.SUCCESS,
        reason: str | None = None,
    ) -> None:
        """Results stored at the destination (or given up): DICOM Instances Transferred, R."""
        self._message(
            DICOM_INSTANCES_TRANSFERRED,
            "R",  # A.5.3.7: the source does not know what the receiver held before
            outcome,
            participants=(
                self._us(requestor=True, role=SOURCE_ROLE),
                application(
                    destination_ae, requestor=False, address=destination_host, role=DESTINATION_ROLE
                ),
            ),
            objects=(study(study_instance_uid, sop_classes), *patient(patient_id)),
            outcome_description=reason,
        )

    def emit_study_deleted(
        self, *, study_instance_uid: str, sop_classes: Mapping[str, int], patient_id: str | None
    ) -> None:
        """Files of a study removed by retention: DICOM Study Deleted (A.5.3.8)."""
        self._message(
            DICOM_STUDY_DELETED,
            "D",
            Outcome.SUCCESS,
            participants=(self._us(requestor=True),),
            objects=(study(study_instance_uid, sop_classes), *patient(patient_id)),
        )

    def emit_application(self, *, started: bool) -> None:
        """This service started or stopped: Application Activity (A.5.3.1)."""
        self._message(
            APPLICATION_ACTIVITY,
            "E",
            Outcome.SUCCESS,
            participants=(self._us(requestor=False, role=APPLICATION),),
            event_types=(APPLICATION_START if started else APPLICATION_STOP,),
        )

    # --- people (the web console) ---------------------------------------------------------------
    def emit_login(
        self,
        user: str,
        *,
        success: bool,
        address: str | None,
        user_name: str | None = None,
        reason: str | None = None,
        logout: bool = False,
    ) -> None:
        """A person logged in (or failed to, or logged out): User Authentication (A.5.3.12).

        ``user`` is the login name, ``address`` the client's IP address; ``reason`` says why a
        login failed (never the password tried).
        """
        person = Participant(
            user_id=user or "?",
            is_requestor=True,
            user_name=user_name,
            network_access_point=address or None,
        )
        self._message(
            USER_AUTHENTICATION,
            "E",
            Outcome.SUCCESS if success else Outcome.MINOR_FAILURE,
            participants=(person, self._us(requestor=False)),
            event_types=(LOGOUT if logout else LOGIN,),
            outcome_description=None if success else (reason or "login failed"),
        )

    def emit_action(
        self,
        user: str,
        action: str,
        *,
        address: str | None,
        action_code: ActionCode = "U",
        study_instance_uid: str | None = None,
        sop_classes: Mapping[str, int] | None = None,
        patient_id: str | None = None,
        success: bool = True,
        reason: str | None = None,
    ) -> None:
        """A person did something through the console.

        On a study (``study_instance_uid`` given -- e.g. "re-analyse"): DICOM Instances
        Accessed (A.5.3.6) with ``action_code`` C/R/U/D. Otherwise (a setting, a user, the
        service): Security Alert / Use of Restricted Function (A.5.3.11). ``action`` is a short
        fixed name ("reanalyse", "activate-model"); it becomes an event type code of our own
        scheme (99DEEPCOVID).
        """
        person = Participant(user_id=user or "?", is_requestor=True, network_access_point=address)
        own = Code(_code_value(action), LOCAL_SCHEME, action)
        outcome = Outcome.SUCCESS if success else Outcome.MINOR_FAILURE
        if study_instance_uid:
            self._message(
                DICOM_INSTANCES_ACCESSED,
                action_code,
                outcome,
                participants=(person, self._us(requestor=False)),
                objects=(study(study_instance_uid, sop_classes), *patient(patient_id)),
                event_types=(own,),
                outcome_description=reason,
            )
        else:
            self._message(
                SECURITY_ALERT,
                "E",
                outcome,
                participants=(person, self._us(requestor=False)),
                event_types=(USE_OF_RESTRICTED_FUNCTION, own),
                outcome_description=reason,
            )


def _code_value(text: str) -> str:
    """A token for a code value: the action's name without spaces, at most 16 characters."""
    return "-".join(text.split())[:16] or "action"


def count_sop_classes(uids: Iterable[str]) -> dict[str, int]:
    """SOP Class UID → number of instances, for the SOPClass elements of a study object."""
    counts: dict[str, int] = {}
    for uid in uids:
        counts[uid] = counts.get(uid, 0) + 1
    return counts


# --- the process's auditor ----------------------------------------------------------------------
_lock = threading.Lock()
_auditors: dict[tuple[object, ...], AtnaAuditor] = {}


def get_auditor(settings: Settings) -> AtnaAuditor:
    """This process's auditor for ``settings`` (disabled when ``audit_syslog_host`` is empty).

    One per process and collector: made on first use -- in each forked worker child too,
    since a sender's thread does not survive a fork -- and flushed when the process exits.
    """
    key: tuple[object, ...] = (
        os.getpid(),
        settings.audit_syslog_host,
        settings.audit_syslog_port,
        settings.audit_syslog_protocol,
        settings.ae_title,
    )
    with _lock:
        auditor = _auditors.get(key)
        if auditor is None:
            auditor = _auditors[key] = _make(settings)
            if auditor.enabled:
                atexit.register(auditor.close, 2.0)
        return auditor


def close_auditors(timeout_s: float = 2.0) -> None:
    """Flush and stop this process's auditors (for process ends that skip ``atexit``)."""
    with _lock:
        mine = [a for key, a in _auditors.items() if key[0] == os.getpid()]
        for key in [k for k in _auditors if k[0] == os.getpid()]:
            del _auditors[key]
    for auditor in mine:
        auditor.close(timeout_s)


def _make(settings: Settings) -> AtnaAuditor:
    if not settings.audit_syslog_host:
        return AtnaAuditor(None, ae_title=settings.ae_title)
    tls = settings.audit_syslog_protocol == "tls"
    sender = SyslogSender(
        settings.audit_syslog_host,
        settings.audit_syslog_port,
        settings.audit_syslog_protocol,
        ssl_context=syslog_tls_context(settings) if tls else None,
    )
    log.info("audit messages go to %r", sender)
    return AtnaAuditor(sender, ae_title=settings.ae_title)


def syslog_tls_context(settings: Settings) -> ssl.SSLContext:
    """TLS client context for the collector (RFC 5425): its certificate and host name checked
    against ``tls_ca`` (the system's CAs when unset); ``tls_cert`` presented when set."""
    context = ssl.create_default_context(cafile=str(settings.tls_ca) if settings.tls_ca else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.tls_cert is not None:
        key = str(settings.tls_key) if settings.tls_key is not None else None
        context.load_cert_chain(str(settings.tls_cert), key)
    return context


__all__: Sequence[str] = [
    "AtnaAuditor",
    "AuditMessage",
    "Code",
    "Outcome",
    "Participant",
    "ParticipantObject",
    "close_auditors",
    "count_sop_classes",
    "get_auditor",
]
