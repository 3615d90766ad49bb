"""Operations on the job store used by the listener, the worker and the CLI.

Every method runs in its own short transaction, so the store can be shared by threads (one
engine, a session per call) and by processes (SQLite in WAL mode with a busy timeout, or
PostgreSQL). Methods return plain snapshots (:class:`JobView`), never live ORM objects.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from common.states import FINAL_STATES, LEASED_STATES, WAITING_STATES, JobState
from store.schema import Job, JobEvent, utcnow

#: Attributes a caller may set on a job together with a state change.
UPDATABLE_FIELDS = frozenset(
    {
        "reason",
        "modality",
        "view_position",
        "body_part",
        "rows",
        "columns",
        "photometric_interpretation",
        "transfer_syntax_uid",
        "model_version",
        "probability",
        "threshold",
        "finding",
        "attempts",
    }
)


@dataclasses.dataclass(frozen=True)
class JobView:
    """A read-only snapshot of a job row."""

    id: int
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    transfer_syntax_uid: str | None
    calling_ae: str | None
    spool_path: str
    sha256: str
    size_bytes: int
    state: str
    reason: str | None
    times_received: int
    attempts: int
    modality: str | None
    view_position: str | None
    body_part: str | None
    rows: int | None
    columns: int | None
    photometric_interpretation: str | None
    model_version: str | None
    probability: float | None
    threshold: float | None
    finding: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    accession_number: str | None = None

    @classmethod
    def of(cls, job: Job) -> JobView:
        """Snapshot an ORM row."""
        return cls(**{f.name: getattr(job, f.name) for f in dataclasses.fields(cls)})

    @property
    def is_final(self) -> bool:
        """True when nothing more will happen to the job."""
        return self.state in FINAL_STATES


@dataclasses.dataclass(frozen=True)
class EventView:
    """A read-only snapshot of a timeline entry."""

    at: dt.datetime
    state: str
    message: str | None


@dataclasses.dataclass(frozen=True)
class ReceiptOutcome:
    """What :meth:`JobStore.record_received` did."""

    job_id: int
    created: bool
    changed: bool
    needs_analysis: bool


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL and a busy timeout let the listener and several workers share one SQLite file."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the connection settings the store relies on.

    ``hide_parameters``: a database error's text (which Celery's retries and our warnings log)
    names the SQL but not the bound values, so no value a job row holds reaches a log.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=10, hide_parameters=True
    )


class JobStore:
    """The job table and its timeline behind a small, transactional API."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self._sessions.begin() as session:
            yield session

    # --- intake ---------------------------------------------------------------------------
    def record_received(
        self,
        *,
        sop_instance_uid: str,
        sop_class_uid: str,
        study_instance_uid: str | None,
        series_instance_uid: str | None,
        transfer_syntax_uid: str | None,
        calling_ae: str | None,
        spool_path: str,
        sha256: str,
        size_bytes: int,
        accession_number: str | None = None,
    ) -> ReceiptOutcome:
        """Record that an instance is safely in the spool; raise if that cannot be recorded.

        The same SOP Instance received again with identical content is the same job (nothing
        new to do unless it never finished its analysis). Different content under a UID we
        already hold replaces the spooled copy and sends the job through analysis again.
        """
        fields = {
            "sop_instance_uid": sop_instance_uid,
            "sop_class_uid": sop_class_uid,
            "study_instance_uid": study_instance_uid,
            "series_instance_uid": series_instance_uid,
            "transfer_syntax_uid": transfer_syntax_uid,
            "calling_ae": calling_ae,
            "spool_path": spool_path,
            "sha256": sha256,
            "size_bytes": size_bytes,
            "accession_number": accession_number,
        }
        try:
            return self._record_received(**fields)
        except IntegrityError:
            # Two associations raced on the same UID; the other one inserted first.
            return self._record_received(**fields)

    def _record_received(self, **fields: Any) -> ReceiptOutcome:
        with self.session() as s:
            job = s.scalars(
                select(Job).where(Job.sop_instance_uid == fields["sop_instance_uid"])
            ).one_or_none()
            if job is None:
                job = Job(state=JobState.RECEIVED, **fields)
                s.add(job)
                s.flush()
                s.add(JobEvent(job_id=job.id, state=JobState.RECEIVED, message=_from(fields)))
                return ReceiptOutcome(job.id, created=True, changed=True, needs_analysis=True)
            job.times_received += 1
            if job.sha256 != fields["sha256"]:
                for key, value in fields.items():
                    setattr(job, key, value)
                job.state = JobState.RECEIVED
                job.reason = None
                s.add(
                    JobEvent(
                        job_id=job.id,
                        state=JobState.RECEIVED,
                        message="received again with different content; analysing again",
                    )
                )
                return ReceiptOutcome(job.id, created=False, changed=True, needs_analysis=True)
            s.add(
                JobEvent(
                    job_id=job.id, state=job.state, message="received again, identical content"
                )
            )
            unfinished = job.state not in FINAL_STATES
            return ReceiptOutcome(job.id, created=False, changed=False, needs_analysis=unfinished)

    # --- state changes --------------------------------------------------------------------
    def set_state(
        self,
        job_id: int,
        state: JobState,
        message: str | None = None,
        *,
        expect: Iterable[JobState] | None = None,
        **fields: Any,
    ) -> bool:
        """Move a job to ``state`` (and set ``fields``), adding a timeline event.

        With ``expect``, the change happens only if the job is in one of those states (an
        atomic compare-and-set); returns whether it happened. This is what makes a
        redelivered task harmless: it cannot claim a job another worker already finished.
        """
        with self.session() as s:
            return self.transition(s, job_id, state, message, expect=expect, **fields)

    @staticmethod
    def transition(
        s: Session,
        job_id: int,
        state: JobState,
        message: str | None = None,
        *,
        expect: Iterable[JobState] | None = None,
        **fields: Any,
    ) -> bool:
        """:meth:`set_state` inside the caller's session ``s`` (committed with the caller's work).

        The one place a job's state changes after receipt: the compare-and-set guard, the
        allowed fields and the timeline event are applied here for every caller.
        """
        unknown = set(fields) - UPDATABLE_FIELDS
        if unknown:
            raise ValueError(f"cannot set job fields {sorted(unknown)}")
        stmt = update(Job).where(Job.id == job_id)
        if expect is not None:
            stmt = stmt.where(Job.state.in_([str(e) for e in expect]))
        result = s.execute(stmt.values(state=str(state), updated_at=utcnow(), **fields))
        if result.rowcount != 1:  # type: ignore[attr-defined]  # a CursorResult at run time
            return False
        s.add(JobEvent(job_id=job_id, state=str(state), message=message))
        return True

    def claim(self, job_id: int, *, lease_s: float) -> bool:
        """Atomically take a job for analysis; False if it is not ours to take.

        A job can be claimed when it waits (``received``/``queued``) or when a previous
        claim (``analysing``/``analysed``) is older than ``lease_s``: its worker died, or lost
        the database, mid-task. Finished jobs are never claimed again, so a redelivered or
        duplicated task message does nothing.
        """
        cutoff = utcnow() - dt.timedelta(seconds=lease_s)
        waiting = [str(s) for s in WAITING_STATES]
        leased = [str(s) for s in LEASED_STATES]
        with self.session() as s:
            stmt = (
                update(Job)
                .where(Job.id == job_id)
                .where(
                    Job.state.in_(waiting) | (Job.state.in_(leased) & (Job.updated_at <= cutoff))
                )
                .values(
                    state=str(JobState.ANALYSING), updated_at=utcnow(), attempts=Job.attempts + 1
                )
            )
            if s.execute(stmt).rowcount != 1:  # type: ignore[attr-defined]  # a CursorResult at run time
                return False
            s.add(
                JobEvent(job_id=job_id, state=str(JobState.ANALYSING), message="analysis started")
            )
            return True

    def renew(self, job_id: int) -> bool:
        """Renew the claim on a job being analysed (its ``updated_at``); False if lost."""
        with self.session() as s:
            stmt = (
                update(Job)
                .where(Job.id == job_id, Job.state.in_([str(s) for s in LEASED_STATES]))
                .values(updated_at=utcnow())
            )
            return bool(s.execute(stmt).rowcount == 1)  # type: ignore[attr-defined]  # a CursorResult at run time

    # --- queries --------------------------------------------------------------------------
    def get(self, job_id: int) -> JobView | None:
        """The job with this id, or None."""
        with self.session() as s:
            job = s.get(Job, job_id)
            return JobView.of(job) if job else None

    def get_by_uid(self, sop_instance_uid: str) -> JobView | None:
        """The job of this SOP Instance UID, or None."""
        with self.session() as s:
            job = s.scalars(
                select(Job).where(Job.sop_instance_uid == sop_instance_uid)
            ).one_or_none()
            return JobView.of(job) if job else None

    def list(self, *, state: str | None = None, limit: int = 50) -> list[JobView]:
        """The most recent jobs, newest first, optionally in one state."""
        with self.session() as s:
            stmt = select(Job).order_by(Job.id.desc()).limit(limit)
            if state:
                stmt = stmt.where(Job.state == state)
            return [JobView.of(j) for j in s.scalars(stmt)]

    def events(self, job_id: int) -> builtins.list[EventView]:
        """The job's timeline, oldest first."""
        with self.session() as s:
            rows = s.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
            )
            return [EventView(e.at, e.state, e.message) for e in rows]

    def counts(self) -> dict[str, int]:
        """Number of jobs per state."""
        from sqlalchemy import func

        with self.session() as s:
            rows = s.execute(select(Job.state, func.count()).group_by(Job.state))
            return {state: n for state, n in rows}

    def unfinished(
        self, *, stale_after_s: float = 0.0, states: Iterable[JobState] | None = None
    ) -> builtins.list[int]:
        """Ids of jobs not in a final state whose last change is older than ``stale_after_s``.

        Used on start-up and periodically to re-enqueue work the broker may have lost.
        """
        wanted = [str(s) for s in (states or WAITING_STATES)]
        cutoff = utcnow() - dt.timedelta(seconds=stale_after_s)
        with self.session() as s:
            stmt = (
                select(Job.id)
                .where(Job.state.in_(wanted), Job.updated_at <= cutoff)
                .order_by(Job.id)
            )
            return list(s.scalars(stmt))


def _from(fields: dict[str, Any]) -> str:
    """Timeline text for a receipt: UIDs and AE titles only, never patient data."""
    return f"received from {fields.get('calling_ae') or '?'} ({fields.get('size_bytes', 0)} bytes)"
