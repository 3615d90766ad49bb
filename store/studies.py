"""Studies: the jobs of one Study Instance UID and the study-level results issued for them.

A study *settles* when every job of it is in a final state (delivered, rejected or failed) and
none has changed for ``settle_s`` seconds. :meth:`Studies.settled` finds the settled
studies that changed after their latest study result (or have none); the worker's study watcher
(:mod:`worker.study.watcher`) builds their result. :meth:`Studies.claim` records a new study
result under the unique (study, sequence) pair, so however many watchers race, one builds it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from common.states import FINAL_STATES
from store.jobstore import JobStore, JobView
from store.schema import Job, StudyResult, utcnow

DONE_STATES = FINAL_STATES
"""Job states after which the study result reports the image: final, so the per-image objects
have reached the destinations (or been given up) before the study's; a PACS that is down holds
the study result back with them, and its per-image deliveries are not mixed with the study's."""
DEFAULT_LOOKBACK_S = 24 * 3600.0
"""Only studies changed within this long are looked at: a node upgraded onto a store full of
old studies does not send a study result for each of them."""
STALE_CLAIM_S = 300.0
"""A claimed study result not queued after this long was left by a watcher that died."""


def aware(value: Any) -> dt.datetime:
    """A stored time as an aware UTC datetime (SQLite hands back naive ones, or text)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class _StudyResultFields:
    """What a study result says, as its builder sets it (one list for the new and stored forms)."""

    study_instance_uid: str
    sequence: int
    fingerprint: str
    finding: str
    probability: float | None
    threshold: float | None
    model_version: str | None
    images: int
    driving_sop_instance_uid: str | None
    sr_sop_instance_uid: str | None  # None: nothing sent (no image analysed)
    kos_sop_instance_uid: str | None
    predecessor_sr_sop_instance_uid: str | None
    covers_until: dt.datetime


@dataclasses.dataclass(frozen=True)
class StudyResultView(_StudyResultFields):
    """A read-only snapshot of a study result row: its fields, id and times."""

    id: int
    created_at: dt.datetime
    queued_at: dt.datetime | None

    @classmethod
    def of(cls, row: StudyResult) -> StudyResultView:
        """Snapshot an ORM row (times made aware)."""
        values = {f.name: getattr(row, f.name) for f in dataclasses.fields(cls)}
        for name in ("covers_until", "created_at"):
            values[name] = aware(values[name])
        if values["queued_at"] is not None:
            values["queued_at"] = aware(values["queued_at"])
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class StudySummary:
    """One study as the console and ``deepcovid studies list`` show it."""

    study_instance_uid: str
    accession_number: str | None
    images: int
    waiting: int  # jobs not done yet
    last_change: dt.datetime
    latest: StudyResultView | None


@dataclasses.dataclass(frozen=True)
class NewStudyResult(_StudyResultFields):
    """A study result to claim (fields of :class:`StudyResult` set by its builder)."""


class Studies:
    """Study queries and study results, on the job store's database."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def settled(
        self,
        *,
        settle_s: float,
        now: dt.datetime | None = None,
        lookback_s: float = DEFAULT_LOOKBACK_S,
        limit: int = 50,
    ) -> list[tuple[str, dt.datetime]]:
        """(study UID, last change) of studies quiet for ``settle_s`` with every job done and
        a change after their latest study result (or none yet), oldest change first."""
        now = now or utcnow()
        # Only studies with a job changed within the lookback (index on jobs.updated_at), so a
        # poll costs what the recent studies cost, not the whole history.
        recent = (
            select(Job.study_instance_uid)
            .where(
                Job.updated_at >= now - dt.timedelta(seconds=lookback_s),
                Job.study_instance_uid.is_not(None),
            )
            .distinct()
        )
        covered = (
            select(func.max(StudyResult.covers_until))
            .where(StudyResult.study_instance_uid == Job.study_instance_uid)
            .correlate(Job)
            .scalar_subquery()
        )
        last = func.max(Job.updated_at)
        not_done = func.sum(case((Job.state.in_([str(s) for s in DONE_STATES]), 0), else_=1))
        stmt = (
            select(Job.study_instance_uid, last)
            .where(Job.study_instance_uid.in_(recent))
            .group_by(Job.study_instance_uid)
            .having(
                not_done == 0,
                last <= now - dt.timedelta(seconds=settle_s),
                or_(covered.is_(None), last > covered),
            )
            .order_by(last)
            .limit(limit)
        )
        with self.store.session() as s:
            return [(str(uid), aware(at)) for uid, at in s.execute(stmt)]

    def jobs(self, study_instance_uid: str) -> list[JobView]:
        """The study's jobs in order of receipt."""
        with self.store.session() as s:
            rows = s.scalars(
                select(Job).where(Job.study_instance_uid == study_instance_uid).order_by(Job.id)
            )
            return [JobView.of(job) for job in rows]

    def results(self, study_instance_uid: str) -> list[StudyResultView]:
        """The study's results, oldest first (the last one is current)."""
        with self.store.session() as s:
            rows = s.scalars(
                select(StudyResult)
                .where(StudyResult.study_instance_uid == study_instance_uid)
                .order_by(StudyResult.sequence)
            )
            return [StudyResultView.of(row) for row in rows]

    def latest(self, study_instance_uid: str) -> StudyResultView | None:
        """The study's current result, or None."""
        results = self.results(study_instance_uid)
        return results[-1] if results else None

    def latest_sr(self, study_instance_uid: str) -> str | None:
        """The SOP Instance UID of the newest study SR sent for the study (what a new one
        replaces), or None."""
        sent = [r.sr_sop_instance_uid for r in self.results(study_instance_uid)]
        return next((uid for uid in reversed(sent) if uid), None)

    def claim(self, new: NewStudyResult) -> StudyResultView | None:
        """Record a new study result; None when another watcher recorded that one first."""
        try:
            with self.store.session() as s:
                row = StudyResult(**dataclasses.asdict(new))
                s.add(row)
                s.flush()
                return StudyResultView.of(row)
        except IntegrityError:
            return None

    def cover(self, result_id: int, until: dt.datetime) -> None:
        """The study changed without changing its result: the result covers it up to ``until``."""
        with self.store.session() as s:
            s.execute(
                update(StudyResult)
                .where(StudyResult.id == result_id, StudyResult.covers_until < until)
                .values(covers_until=until)
            )

    def mark_queued(self, result_id: int) -> None:
        """The result's objects and notifications are in the outbox."""
        with self.store.session() as s:
            s.execute(
                update(StudyResult).where(StudyResult.id == result_id).values(queued_at=utcnow())
            )

    def release(self, result_id: int) -> None:
        """Forget a claim whose build failed, so a later pass builds it again."""
        with self.store.session() as s:
            s.execute(
                delete(StudyResult).where(
                    StudyResult.id == result_id, StudyResult.queued_at.is_(None)
                )
            )

    def release_stale(self, *, older_than_s: float = STALE_CLAIM_S) -> int:
        """Forget claims a dead watcher left unqueued; returns how many."""
        cutoff = utcnow() - dt.timedelta(seconds=older_than_s)
        with self.store.session() as s:
            result = s.execute(
                delete(StudyResult).where(
                    StudyResult.queued_at.is_(None), StudyResult.created_at < cutoff
                )
            )
            return int(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult at run time

    def summaries(self, *, limit: int = 50, offset: int = 0) -> list[StudySummary]:
        """The most recently changed studies, newest first, with their current result."""
        last = func.max(Job.updated_at)
        waiting = func.sum(case((Job.state.in_([str(s) for s in DONE_STATES]), 0), else_=1))
        stmt = (
            select(
                Job.study_instance_uid,
                func.max(Job.accession_number),
                func.count(Job.id),
                waiting,
                last,
            )
            .where(Job.study_instance_uid.is_not(None))
            .group_by(Job.study_instance_uid)
            .order_by(last.desc())
            .limit(limit)
            .offset(offset)
        )
        with self.store.session() as s:
            rows = list(s.execute(stmt))
            uids = [str(row[0]) for row in rows]
            latest: dict[str, StudyResultView] = {}
            if uids:
                for result in s.scalars(
                    select(StudyResult)
                    .where(StudyResult.study_instance_uid.in_(uids))
                    .order_by(StudyResult.sequence)
                ):
                    latest[result.study_instance_uid] = StudyResultView.of(result)
        return [
            StudySummary(
                study_instance_uid=str(uid),
                accession_number=accession,
                images=int(count),
                waiting=int(pending or 0),
                last_change=aware(at),
                latest=latest.get(str(uid)),
            )
            for uid, accession, count, pending, at in rows
        ]
