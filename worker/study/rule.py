"""The study finding, decided from what became of each image of the study.

Present if any analysed image is present; else indeterminate if any analysed image is; else
absent. Only frontal films are analysed (the input gate and the view check reject the others),
so "analysed" means "analysed frontal image". A study with no analysed image at all gets
*indeterminate* with the reason, never *absent*: no image was looked at, so nothing is ruled out.

The image that *drove* the finding (the one the Key Object Selection names) is, among the
images with the study's finding, the one with the highest probability.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.states import JobState
from ris.outcome import ImageOutcome

if TYPE_CHECKING:
    from store.jobstore import JobView

PRESENT = "present"
ABSENT = "absent"
INDETERMINATE = "indeterminate"
REJECTED = "rejected"
FAILED = "failed"
ANALYSED = (PRESENT, ABSENT, INDETERMINATE)
"""Findings of an analysed image (``jobs.finding``)."""
NOTHING_ANALYSED = "no image of the study could be analysed"


@dataclass(frozen=True)
class ImageResult:
    """One image of a study as the job store records it, and what became of it."""

    job_id: int
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    finding: str  # present | absent | indeterminate | rejected | failed
    probability: float | None = None
    threshold: float | None = None
    model_version: str | None = None
    reason: str | None = None  # why it was not analysed (rejected, failed)
    view_position: str | None = None
    modality: str | None = None
    rows: int | None = None
    columns: int | None = None
    spool_path: str | None = None

    @property
    def analysed(self) -> bool:
        """The model gave this image a finding."""
        return self.finding in ANALYSED

    @classmethod
    def of_job(cls, job: JobView) -> ImageResult:
        """The image of a finished job (``delivered``/``results_built``, ``rejected``, ``failed``).

        A job that failed after its analysis (its results could not be delivered) still has
        the model's finding, which is what the study reports.
        """
        analysed = job.finding in ANALYSED and job.state != JobState.REJECTED
        if analysed:
            finding = str(job.finding)
        else:
            finding = REJECTED if job.state == JobState.REJECTED else FAILED
        return cls(
            job_id=job.id,
            sop_instance_uid=job.sop_instance_uid,
            sop_class_uid=job.sop_class_uid,
            series_instance_uid=job.series_instance_uid or "",
            finding=finding,
            probability=job.probability if analysed else None,
            threshold=job.threshold if analysed else None,
            model_version=job.model_version if analysed else None,
            reason=None if analysed else (job.reason or finding),
            view_position=job.view_position,
            modality=job.modality,
            rows=job.rows,
            columns=job.columns,
            spool_path=job.spool_path,
        )

    def outcome(self) -> ImageOutcome:
        """The image as the RIS notification states it."""
        return ImageOutcome(
            sop_instance_uid=self.sop_instance_uid,
            series_instance_uid=self.series_instance_uid,
            finding=self.finding,
            probability=self.probability,
            reason=self.reason,
        )


@dataclass(frozen=True)
class StudyFinding:
    """The study's finding, the image that drove it (None when none was analysed), and why."""

    finding: str  # present | absent | indeterminate
    driver: ImageResult | None
    reason: str

    @property
    def probability(self) -> float | None:
        """The driving image's probability."""
        return self.driver.probability if self.driver else None

    @property
    def threshold(self) -> float | None:
        """The threshold the driving image was called with."""
        return self.driver.threshold if self.driver else None


def study_finding(images: Sequence[ImageResult]) -> StudyFinding:
    """Present if any analysed image is; else indeterminate if any is; else absent.

    With no analysed image, indeterminate (reason :data:`NOTHING_ANALYSED`).
    """
    analysed = [image for image in images if image.analysed]
    if not analysed:
        return StudyFinding(INDETERMINATE, None, NOTHING_ANALYSED)
    for finding in (PRESENT, INDETERMINATE, ABSENT):
        matching = [image for image in analysed if image.finding == finding]
        if matching:
            driver = max(matching, key=lambda image: (image.probability or 0.0, -image.job_id))
            count = f"{len(matching)} of {len(analysed)} analysed image(s)"
            return StudyFinding(finding, driver, f"{finding} in {count}")
    raise AssertionError("unreachable: every analysed image has one of the three findings")


def fingerprint(images: Sequence[ImageResult]) -> str:
    """SHA-256 of what the study result reports about its images (order-independent).

    Equal fingerprints mean an equal study result: an instance received again with the same
    outcome changes nothing, a new image or a new finding makes a new result.
    """
    rows = sorted(
        (
            image.sop_instance_uid,
            image.finding,
            None if image.probability is None else round(image.probability, 6),
            None if image.threshold is None else round(image.threshold, 6),
            image.model_version,
            image.reason,
        )
        for image in images
    )
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()
