"""The audit vocabulary: every happening that leaves an audit trail, named once.

As pynetdicom's ``events.py`` names what happens on an association, this module names what the
node audits. A caller builds one event and hands it to :func:`audit.record`; each sink decides
what it writes for it (:mod:`audit.sinks.json_log`: the JSON audit log; :mod:`audit.sinks.syslog`
with :mod:`audit.atna`: a DICOM audit message). Adding an event means a class here and a line
in each sink that records it -- never a new call at the audit site.

============================  ==========================================================
event                          when
============================  ==========================================================
:class:`AssociationAccepted`   the listener accepted an A-ASSOCIATE-RQ
:class:`AssociationRejected`   the listener rejected one (allow-lists, called AE, limit)
:class:`TlsHandshakeFailed`    a connection failed DICOM TLS before any DICOM was exchanged
:class:`InstancesReceived`     an instance was stored (C-STORE Success)
:class:`InstancesSent`         results reached the destination, or were given up
:class:`StudyDeleted`          retention removed a study's files
:class:`ApplicationStarted`    the listener started
:class:`ApplicationStopped`    the listener stopped
:class:`LoginSucceeded`        a person logged in to the console
:class:`LoginFailed`           a console login was refused (wrong password, rate limit)
:class:`LoggedOut`             a person logged out of the console
:class:`UserAction`            a person ran an action (console or ``deepcovid`` command)
:class:`AccountChanged`        a console account was added or removed (``deepcovid users``)
============================  ==========================================================

Events hold UIDs, AE titles, addresses, user names and fixed reasons. The Patient ID of
:class:`InstancesReceived`, :class:`InstancesSent` and :class:`StudyDeleted` is there for the
DICOM audit message, which A.5.3 requires to name the patient; the JSON log never writes it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import ClassVar, Literal

Via = Literal["console", "cli"]
"""Where a person acted: the operator console, or a ``deepcovid`` command."""
ReceivedAs = Literal["C", "U", "R"]
"""How a received instance was kept: C new, U different content replaced, R identical copy."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditEvent:
    """Something that happened and must be audited; ``time`` is when (UTC)."""

    name: ClassVar[str]
    """A short fixed name (for logs and for sinks that name events)."""

    time: dt.datetime = dataclasses.field(default_factory=_now)


# --- the DICOM listener -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class AssociationAccepted(AuditEvent):
    """The listener accepted an association request."""

    name: ClassVar[str] = "association-accepted"
    calling_ae: str
    called_ae: str
    peer_address: str | None
    peer_port: int | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class AssociationRejected(AuditEvent):
    """The listener rejected an association request; ``reason`` says why."""

    name: ClassVar[str] = "association-rejected"
    calling_ae: str
    called_ae: str
    peer_address: str | None
    peer_port: int | None
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class TlsHandshakeFailed(AuditEvent):
    """A peer did not complete DICOM TLS (no or an untrusted certificate, plain TCP...)."""

    name: ClassVar[str] = "tls-handshake-failed"
    peer_address: str | None
    peer_port: int | None
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class InstancesReceived(AuditEvent):
    """Instances of one study were stored here (C-STORE answered Success)."""

    name: ClassVar[str] = "instances-received"
    calling_ae: str
    peer_address: str | None
    study_instance_uid: str
    sop_classes: Mapping[str, int]
    """SOP Class UID -> number of instances."""
    patient_id: str | None
    received_as: ReceivedAs = "C"


@dataclasses.dataclass(frozen=True, kw_only=True)
class InstancesSent(AuditEvent):
    """Results of one study were stored at a destination, or given up (``failure`` says why)."""

    name: ClassVar[str] = "instances-sent"
    destination_ae: str
    destination_host: str
    study_instance_uid: str
    sop_classes: Mapping[str, int]
    patient_id: str | None
    failure: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudyDeleted(AuditEvent):
    """Retention removed the files of a study's job."""

    name: ClassVar[str] = "study-deleted"
    study_instance_uid: str
    sop_classes: Mapping[str, int]
    patient_id: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApplicationStarted(AuditEvent):
    """The listener started."""

    name: ClassVar[str] = "application-started"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApplicationStopped(AuditEvent):
    """The listener stopped."""

    name: ClassVar[str] = "application-stopped"


# --- people -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class LoginSucceeded(AuditEvent):
    """A person logged in."""

    name: ClassVar[str] = "login-succeeded"
    user: str
    role: str
    peer_address: str | None
    via: Via = "console"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoginFailed(AuditEvent):
    """A login was refused; ``reason`` says why (never the password tried)."""

    name: ClassVar[str] = "login-failed"
    user: str
    peer_address: str | None
    reason: str
    via: Via = "console"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoggedOut(AuditEvent):
    """A person logged out."""

    name: ClassVar[str] = "logged-out"
    user: str
    role: str
    peer_address: str | None
    via: Via = "console"


@dataclasses.dataclass(frozen=True, kw_only=True)
class UserAction(AuditEvent):
    """A person ran an action (re-analyse, resend, retry deliveries, activate a model, purge).

    ``target`` is what it acted on (a SOP Instance UID, a model version, "all failed
    deliveries"); ``study_instance_uid`` is given when the action concerns one study, which
    makes it a DICOM Instances Accessed message. ``accepted=False``: it was refused, and
    ``reason`` says why; otherwise ``reason`` says what was done.
    """

    name: ClassVar[str] = "user-action"
    user: str
    role: str | None
    via: Via
    peer_address: str | None
    action: str
    target: str
    reason: str
    accepted: bool = True
    study_instance_uid: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class AccountChanged(AuditEvent):
    """A console account was added or removed (``action``: ``add`` or ``remove``) by ``user``."""

    name: ClassVar[str] = "account-changed"
    user: str
    via: Via
    action: Literal["add", "remove"]
    account: str
    reason: str = ""


def count_sop_classes(uids: Iterable[str]) -> dict[str, int]:
    """SOP Class UID -> number of instances, for an event's ``sop_classes``.

    An empty UID is not counted: it marks a file that is no DICOM instance (a RIS message in the
    outbox, kinds ``hl7_*``/``fhir_*``), which a DICOM audit message has no participant for."""
    counts: dict[str, int] = {}
    for uid in uids:
        if uid:
            counts[uid] = counts.get(uid, 0) + 1
    return counts
