"""Queue the RIS notifications (HL7 ORU^R01, FHIR DiagnosticReport) of one study result.

Called by the study-level result right after its SR and KOS are written and queued. For each
kind of RIS message some configured destination takes (``mllp://`` -> HL7 v2, ``fhir+https://``
-> FHIR; see ``worker.destinations``), the message is built (``ris.hl7``, ``ris.fhir``), written
durably beside the study's result objects (``results_dir/<StudyInstanceUID>/<uid>.hl7|.json``)
and put in the outbox for each such destination: the delivery loop sends it with the same
retries and back-off as the DICOM objects, and marks it once the RIS has it.

Exactly once: the row's key (its ``sop_instance_uid`` column) is a UID derived from the study SR's
SOP Instance UID and the message kind, so calling this again with the same outcome writes the same
bytes and adds no row; a replacement study result (another SR) is a new message, sent with status
*corrected*. A resend after an answer was lost carries the same HL7 control ID, and the FHIR Bundle
updates its resources conditionally, so the receiver keeps one copy.

Logs name the study by its UID only; the patient's identifiers travel in the messages alone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from pathlib import Path

from sqlalchemy import select

from common.atomic import atomic_write
from common.settings import Settings
from common.uids import validate_uid
from ris import fhir, hl7
from ris.outcome import StudyOutcome
from store.jobstore import JobStore
from store.outbox import NewResult, Outbox
from store.schema import Job, ResultObject
from worker.delivery import queue
from worker.destinations.base import type_for

log = logging.getLogger(__name__)

HL7_KIND = "hl7_oru"
"""Outbox kind of an HL7 v2.5.1 ORU^R01 message file (``.hl7``, ER7, UTF-8)."""
FHIR_KIND = "fhir_report"
"""Outbox kind of a FHIR R4 transaction Bundle file (``.json``): DiagnosticReport + Observation."""
_NAMESPACE = uuid.UUID("0c6d3f0e-8a4b-4e9f-a1d2-5b7c9e0f1a23")
"""Namespace of the messages' row UIDs (``2.25.<uuid5>``, PS3.5 B.2)."""


def queue_notifications(store: JobStore, outcome: StudyOutcome, settings: Settings) -> int:
    """Write the messages of ``outcome`` and put them in the outbox; return how many rows are new.

    0 when no RIS destination is configured (nothing is written), or when the outcome was queued
    before (idempotent). A message that cannot be built (bad data in the outcome) is logged as an
    error and left out; the other kind is still queued, and the study result stands.
    """
    kinds = wanted_kinds(settings)
    if not kinds:
        return 0
    study = validate_uid(outcome.study_instance_uid, "Study Instance UID")  # names a folder
    if outcome.issued.tzinfo is None:  # SQLite hands back naive datetimes; the store keeps UTC
        outcome = dataclasses.replace(outcome, issued=outcome.issued.replace(tzinfo=dt.UTC))
    job_id = _job_of(store, outcome)
    if job_id is None:
        log.error("study %s: no job to attach its RIS messages to; RIS not notified", study)
        return 0
    folder = settings.storage.results / study
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    results: list[NewResult] = []
    if HL7_KIND in kinds:
        parties = hl7.Parties(
            sending_facility=settings.ris.sending_facility,
            receiving_application=settings.ris.receiving_application,
            receiving_facility=settings.ris.receiving_facility,
            assigning_authority=settings.ris.patient_id_issuer,
        )
        try:
            message = hl7.build_oru(
                outcome, message_control_id=hl7.control_id(outcome), parties=parties
            )
        except hl7.Hl7Error as exc:
            log.error("study %s: no ORU^R01: %s", study, exc)
        else:
            results.append(_written(folder, outcome, HL7_KIND, ".hl7", message.encode("utf-8")))
    if FHIR_KIND in kinds:
        try:
            bundle = fhir.build_bundle(outcome, patient_id_system=settings.ris.patient_id_system)
        except fhir.FhirError as exc:
            log.error("study %s: no FHIR Bundle: %s", study, exc)
        else:
            results.append(_written(folder, outcome, FHIR_KIND, ".json", fhir.to_json(bundle)))
    if not results:
        return 0
    new = queue(
        Outbox(store), job_id, results, model_version=outcome.model_version, settings=settings
    )
    if new:
        log.info(
            "study %s: %d RIS message(s) queued (%s)",
            study,
            new,
            "corrected" if outcome.replaces_sr_sop_instance_uid else "final",
        )
    return new


def wanted_kinds(settings: Settings) -> set[str]:
    """The RIS message kinds some configured destination takes (none: no RIS configured)."""
    kinds: set[str] = set()
    for target in settings.delivery.targets():
        try:
            accepts = type_for(target.url).accepts
        except ValueError:  # a typo: delivery reports it on the DICOM rows
            continue
        kinds.update(kind for kind in (HL7_KIND, FHIR_KIND) if accepts(kind))
    return kinds


def message_uid(outcome: StudyOutcome, kind: str) -> str:
    """The outbox key of ``outcome``'s message of ``kind``: a UID, the same on every call."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, f'{kind}|{outcome.sr_sop_instance_uid}').int}"


def _written(folder: Path, outcome: StudyOutcome, kind: str, suffix: str, data: bytes) -> NewResult:
    """Write ``data`` durably (mode 0600: it names the patient) and describe its outbox row."""
    uid = message_uid(outcome, kind)
    path = folder / f"{uid}{suffix}"
    atomic_write(path, data, mode=0o600)
    return NewResult(
        kind=kind,
        sop_instance_uid=uid,
        sop_class_uid="",  # not a DICOM object
        series_instance_uid="",
        study_instance_uid=outcome.study_instance_uid,
        path=str(path),
    )


def _job_of(store: JobStore, outcome: StudyOutcome) -> int | None:
    """The job the study SR's outbox row belongs to, else the study's newest job."""
    with store.session() as s:
        job_id = s.scalars(
            select(ResultObject.job_id)
            .where(ResultObject.sop_instance_uid == outcome.sr_sop_instance_uid)
            .order_by(ResultObject.id)
        ).first()
        if job_id is None:
            job_id = s.scalars(
                select(Job.id)
                .where(Job.study_instance_uid == outcome.study_instance_uid)
                .order_by(Job.id.desc())
            ).first()
        return job_id
