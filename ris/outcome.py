"""The study result a RIS is told about: the interface between the study-level result and the RIS.

Probabilities and the threshold are fractions in [0, 1] (the builders refuse anything else).

The worker's study-level result fills a ``StudyOutcome`` once a study has settled and hands it to
``worker.notify.queue_notifications``; the builders in ``ris.hl7`` and ``ris.fhir`` turn it into
messages. Fields may be added (optional, with defaults), never removed or renamed.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageOutcome:
    """One image of the study and what the analysis made of it."""

    sop_instance_uid: str
    series_instance_uid: str
    finding: str  # "present" | "absent" | "indeterminate" | "rejected" | "failed"
    probability: float | None
    reason: str | None  # rejection/failure reason, None when analysed


@dataclass(frozen=True)
class StudyOutcome:
    """The study-level result: the study finding, the identifiers the RIS needs, and its images."""

    study_instance_uid: str
    accession_number: str | None
    patient_id: str | None
    patient_name: str | None
    patient_birth_date: str | None  # DICOM DA
    patient_sex: str | None
    finding: str  # "present" | "absent" | "indeterminate" (study level)
    probability: float | None  # of the image that drove the finding
    threshold: float | None
    operating_point: str | None  # "paper" | "clinical"
    model_version: str
    images: tuple[ImageOutcome, ...]
    sr_sop_instance_uid: str  # the study-level SR's SOP Instance UID (message id basis)
    kos_sop_instance_uid: str | None
    replaces_sr_sop_instance_uid: str | None  # when a later image replaced an earlier study result
    issued: datetime.datetime  # timezone-aware UTC


def fraction_problem(outcome: StudyOutcome) -> str | None:
    """Why the outcome's probability or threshold is no fraction in [0, 1], or None."""
    for name in ("probability", "threshold"):
        value = getattr(outcome, name)
        if value is not None and not 0.0 <= value <= 1.0:
            return f"the study {name} {value!r} is not in [0, 1]"
    return None
