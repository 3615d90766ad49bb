"""Tables of the job store. Alembic migrations in ``migrations/`` create and evolve them."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from common.states import FINAL_STATES, JobState

__all__ = [
    "FINAL_STATES",
    "ApiToken",
    "Base",
    "ConsoleSession",
    "DeliveryState",
    "Job",
    "JobEvent",
    "JobState",
    "ResultObject",
    "StudyResult",
    "User",
    "utcnow",
]


def utcnow() -> dt.datetime:
    """Timezone-aware now, the only clock the store uses."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of the job-store tables."""


class Job(Base):
    """One received SOP Instance and what became of it."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    sop_class_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    # Indexed: jobs are grouped by study for the study-level result (worker/study).
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str | None] = mapped_column(String(64))
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    # Accession Number (0008,0050) as received: operators search by it; not patient data.
    accession_number: Mapped[str | None] = mapped_column(String(16), index=True)
    spool_path: Mapped[str] = mapped_column(String(1024), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size_bytes: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    state: Mapped[str] = mapped_column(String(20), nullable=False, default=JobState.RECEIVED)
    reason: Mapped[str | None] = mapped_column(Text)
    times_received: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Key attributes recorded by the worker when it opens the instance.
    modality: Mapped[str | None] = mapped_column(String(16))
    view_position: Mapped[str | None] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    photometric_interpretation: Mapped[str | None] = mapped_column(String(16))
    # Outcome of the analysis.
    model_version: Mapped[str | None] = mapped_column(String(128))
    probability: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    finding: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    events: Mapped[list[JobEvent]] = relationship(
        back_populates="job", order_by="JobEvent.id", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_jobs_state_updated", "state", "updated_at"),
        Index("ix_jobs_updated_at", "updated_at"),  # the study watcher's recent studies
    )


class JobEvent(Base):
    """One entry of a job's timeline: a state change or a notable fact, with its time."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    message: Mapped[str | None] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="events")


class DeliveryState(enum.StrEnum):
    """Where one result object stands on its way to the destination."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"  # stored by the destination, confirmation pending or not possible
    CONFIRMED = "confirmed"  # C-FIND found it at the destination
    KEPT = "kept"  # no destination configured: kept in the results folder only
    FAILED = "failed"


class ResultObject(Base):
    """One DICOM object we produced for a job, and its outbox entry for one destination.

    The SOP Instance UID is derived from the source instance and the model version, so
    analysing the same instance with the same model again finds the row that exists instead
    of creating anything new.
    """

    __tablename__ = "result_objects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # sr, sc, pm, rejection_sr
    model_version: Mapped[str | None] = mapped_column(String(128))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    sop_class_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    series_instance_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1024), nullable=False)
    # The destination's text (worker.destinations picks its type); NULL: kept, not delivered.
    destination: Mapped[str | None] = mapped_column(String(512))
    delivery_state: Mapped[str] = mapped_column(
        String(16), nullable=False, default=DeliveryState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    __table_args__ = (
        Index("ix_result_objects_due", "delivery_state", "next_attempt_at"),
        # One row per result and destination: each destination gets each result once.
        UniqueConstraint(
            "sop_instance_uid",
            "destination",
            name="uq_result_objects_sop_instance_uid_destination",
        ),
    )


class StudyResult(Base):
    """One study-level result (SR + KOS) the node issued for a study (:mod:`worker.study`).

    ``sequence`` numbers a study's results (1, 2, ...): an image that arrives after a result
    makes the next one, which names this one's SR as its predecessor. The unique (study,
    sequence) pair makes building a study result a claim only one watcher wins. ``fingerprint``
    is the digest of the images' outcomes it reports; ``covers_until`` the newest job change it
    took into account; ``queued_at`` is set once its objects (and RIS messages) are in the outbox.
    """

    __tablename__ = "study_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    sequence: Mapped[int] = mapped_column(Integer, nullable=False)
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    finding: Mapped[str] = mapped_column(String(16), nullable=False)  # present, absent, indet.
    probability: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(128))
    images: Mapped[int] = mapped_column(Integer, nullable=False)
    driving_sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    # None: nothing sent (no image analysed, send_rejection_sr off)
    sr_sop_instance_uid: Mapped[str | None] = mapped_column(String(64), unique=True)
    kos_sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    predecessor_sr_sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    covers_until: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    queued_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("study_instance_uid", "sequence", name="uq_study_results_sequence"),
        Index("ix_study_results_study", "study_instance_uid"),
    )


class User(Base):
    """A person who may log in to the operator console (``deepcovid users add``)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)  # viewer, admin
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ConsoleSession(Base):
    """A logged-in console session; the cookie holds the token, the table only its SHA-256."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    csrf_token: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    """A bearer token of a DICOMweb sender (``deepcovid tokens add``); only its SHA-256 is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
