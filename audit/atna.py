"""What each audit event becomes as a DICOM audit message (PS3.15 A.5.3, IHE ATNA).

=======================  ===============================================  =======================
event                     message (EventID / EventTypeCode)                action; outcome
=======================  ===============================================  =======================
AssociationAccepted       User Authentication (110114) / Login (110122)    E; 0
AssociationRejected       User Authentication (110114) / Login (110122)    E; 4, reason
TlsHandshakeFailed        Security Alert (110113) / Node Authentication    E; 4, alert description
InstancesReceived         DICOM Instances Transferred (110104)             C/U/R; 0
InstancesSent             DICOM Instances Transferred (110104)             R; 0, or 8 when given up
StudyDeleted              DICOM Study Deleted (110105)                     D; 0
ApplicationStarted/-ped   Application Activity (110100) / 110120, 110121   E; 0
LoginSucceeded            User Authentication (110114) / Login (110122)    E; 0
LoginFailed               User Authentication (110114) / Login (110122)    E; 4, reason
LoggedOut                 User Authentication (110114) / Logout (110123)   E; 0
UserAction on a study     DICOM Instances Accessed (110103) + own code     U; 0, or 4 when refused
UserAction otherwise      Security Alert (110113) / Use of Restricted      E; 0, or 4 when refused
                          Function (110132) + own code
AccountChanged            Security Alert (110113) / User security          E; 0
                          Attributes Changed (110137) + own code
=======================  ===============================================  =======================

"Own code": the action's name as an event type code of our scheme ``99DEEPCOVID``
(:data:`common.coding.LOCAL_SCHEME`), so a repository can tell a re-analysis from a resend.
"""

from __future__ import annotations

import dataclasses
import functools
import socket

from audit import events as ev
from audit.messages import (
    APPLICATION,
    APPLICATION_ACTIVITY,
    APPLICATION_START,
    APPLICATION_STOP,
    DESTINATION_ROLE,
    DICOM_INSTANCES_ACCESSED,
    DICOM_INSTANCES_TRANSFERRED,
    DICOM_STUDY_DELETED,
    LOGIN,
    LOGOUT,
    NODE_AUTHENTICATION,
    NODE_ID,
    SECURITY_ALERT,
    SOURCE_ROLE,
    USE_OF_RESTRICTED_FUNCTION,
    USER_AUTHENTICATION,
    USER_IDENTIFIER,
    USER_SECURITY_ATTRIBUTES_CHANGED,
    AuditMessage,
    Code,
    ObjectRole,
    ObjectType,
    Outcome,
    Participant,
    ParticipantObject,
    application,
    patient,
    study,
)
from common.coding import LOCAL_SCHEME


@dataclasses.dataclass(frozen=True)
class Source:
    """This node as the messages name it: its AE title and host name."""

    ae_title: str
    hostname: str = dataclasses.field(default_factory=socket.gethostname)

    @property
    def source_id(self) -> str:
        """AuditSourceID: ``<AE title>@<host name>``."""
        return f"{self.ae_title}@{self.hostname}"

    def participant(self, *, requestor: bool, role: Code | None = None) -> Participant:
        """This node as an active participant (its host name as network access point)."""
        return application(self.ae_title, requestor=requestor, address=self.hostname, role=role)


def to_message(event: ev.AuditEvent, source: Source) -> AuditMessage:
    """The DICOM audit message for ``event`` (every event of :mod:`audit.events` has one)."""
    us = source.participant
    message = functools.partial(AuditMessage, source_id=source.source_id, time=event.time)
    match event:
        case ev.AssociationAccepted() | ev.AssociationRejected():
            rejected = isinstance(event, ev.AssociationRejected)
            return message(
                USER_AUTHENTICATION,
                "E",
                Outcome.MINOR_FAILURE if rejected else Outcome.SUCCESS,
                participants=(
                    application(event.calling_ae, requestor=True, address=event.peer_address),
                    us(requestor=False),
                ),
                event_types=(LOGIN,),
                outcome_description=(event.reason or "association rejected")
                if isinstance(event, ev.AssociationRejected)
                else None,
            )
        case ev.TlsHandshakeFailed():
            peer = event.peer_address or "unknown"
            return message(
                SECURITY_ALERT,
                "E",
                Outcome.MINOR_FAILURE,
                participants=(
                    us(requestor=True),
                    Participant(
                        user_id=peer,
                        is_requestor=False,
                        network_access_point=event.peer_address or None,
                    ),
                ),
                objects=(
                    ParticipantObject(
                        object_id=peer,
                        id_type=NODE_ID,
                        type_code=ObjectType.SYSTEM,
                        role=ObjectRole.SECURITY_RESOURCE,
                        details=(("Alert Description", event.reason),),
                    ),
                ),
                event_types=(NODE_AUTHENTICATION,),
                outcome_description=event.reason,
            )
        case ev.InstancesReceived():
            return message(
                DICOM_INSTANCES_TRANSFERRED,
                event.received_as,
                Outcome.SUCCESS,
                participants=(
                    application(
                        event.calling_ae, requestor=True, address=event.peer_address,
                        role=SOURCE_ROLE,
                    ),
                    us(requestor=False, role=DESTINATION_ROLE),
                ),
                objects=(study(event.study_instance_uid, event.sop_classes),
                         *patient(event.patient_id)),
            )  # fmt: skip
        case ev.InstancesSent():
            return message(
                DICOM_INSTANCES_TRANSFERRED,
                "R",  # A.5.3.7: the source does not know what the receiver held before
                Outcome.SERIOUS_FAILURE if event.failure else Outcome.SUCCESS,
                participants=(
                    us(requestor=True, role=SOURCE_ROLE),
                    application(
                        event.destination_ae, requestor=False, address=event.destination_host,
                        role=DESTINATION_ROLE,
                    ),
                ),
                objects=(study(event.study_instance_uid, event.sop_classes),
                         *patient(event.patient_id)),
                outcome_description=event.failure,
            )  # fmt: skip
        case ev.StudyDeleted():
            return message(
                DICOM_STUDY_DELETED,
                "D",
                Outcome.SUCCESS,
                participants=(us(requestor=True),),
                objects=(study(event.study_instance_uid, event.sop_classes),
                         *patient(event.patient_id)),
            )  # fmt: skip
        case ev.ApplicationStarted() | ev.ApplicationStopped():
            started = isinstance(event, ev.ApplicationStarted)
            return message(
                APPLICATION_ACTIVITY,
                "E",
                Outcome.SUCCESS,
                participants=(us(requestor=False, role=APPLICATION),),
                event_types=(APPLICATION_START if started else APPLICATION_STOP,),
            )
        case ev.LoginSucceeded() | ev.LoginFailed() | ev.LoggedOut():
            failed = isinstance(event, ev.LoginFailed)
            return message(
                USER_AUTHENTICATION,
                "E",
                Outcome.MINOR_FAILURE if failed else Outcome.SUCCESS,
                participants=(_person(event.user, event.peer_address), us(requestor=False)),
                event_types=(LOGOUT if isinstance(event, ev.LoggedOut) else LOGIN,),
                outcome_description=(event.reason or "login failed")
                if isinstance(event, ev.LoginFailed)
                else None,
            )
        case ev.UserAction():
            outcome = Outcome.SUCCESS if event.accepted else Outcome.MINOR_FAILURE
            person = _person(event.user, event.peer_address)
            own = _own_code(event.action)
            if event.study_instance_uid:
                return message(
                    DICOM_INSTANCES_ACCESSED,
                    "U",
                    outcome,
                    participants=(person, us(requestor=False)),
                    objects=(study(event.study_instance_uid),),
                    event_types=(own,),
                    outcome_description=event.reason or None,
                )
            return message(
                SECURITY_ALERT,
                "E",
                outcome,
                participants=(person, us(requestor=False)),
                event_types=(USE_OF_RESTRICTED_FUNCTION, own),
                outcome_description=event.reason or None,
            )
        case ev.AccountChanged():
            account = ParticipantObject(
                object_id=event.account,
                id_type=USER_IDENTIFIER,
                type_code=ObjectType.PERSON,
                role=ObjectRole.SECURITY_USER_ENTITY,
            )
            return message(
                SECURITY_ALERT,
                "E",
                Outcome.SUCCESS,
                participants=(_person(event.user, None), us(requestor=False)),
                objects=(account,),
                event_types=(USER_SECURITY_ATTRIBUTES_CHANGED, _own_code(f"user-{event.action}")),
                outcome_description=event.reason or None,
            )
    raise TypeError(f"no DICOM audit message for {type(event).__name__}")


def _person(user: str, address: str | None) -> Participant:
    """A person as the requesting participant: UserID = the login name."""
    return Participant(user_id=user or "?", is_requestor=True, network_access_point=address or None)


def _own_code(action: str) -> Code:
    """The action's name as an event type code of our own scheme (a token of 16 characters)."""
    return Code("-".join(action.split())[:16] or "action", LOCAL_SCHEME, action)
