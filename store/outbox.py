"""The delivery outbox: result objects waiting to reach their destinations, with back-off.

Rows live in the job store, so a PACS that is down for minutes (or a node restart) loses
nothing: each row is claimed by one sender at a time, retried with exponential back-off, and
marked once the destination has it. A job becomes ``delivered`` when all its objects are.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from common.states import JobState
from store.jobstore import JobStore
from store.schema import DeliveryState, Job, ResultObject, utcnow


@dataclasses.dataclass(frozen=True)
class ResultView:
    """A read-only snapshot of a result object row."""

    id: int
    job_id: int
    kind: str
    model_version: str | None
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str | None
    path: str
    destination: str | None
    delivery_state: str
    attempts: int
    last_error: str | None

    @classmethod
    def of(cls, row: ResultObject) -> ResultView:
        """Snapshot an ORM row."""
        return cls(**{f.name: getattr(row, f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class NewResult:
    """A result object to record (already written to ``path``)."""

    kind: str
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str | None
    path: str


class Outbox:
    """Result objects and their delivery state, on the job store's database."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def add(
        self,
        job_id: int,
        results: list[NewResult],
        *,
        model_version: str | None,
        destination: str | None,
    ) -> int:
        """Record result objects not recorded yet for ``destination``; returns how many were new.

        Each (object, destination) pair is one row with its own delivery state; with no
        destination the objects are ``kept`` (the results folder is the delivery).
        """
        state = DeliveryState.PENDING if destination else DeliveryState.KEPT
        new = 0
        with self.store.session() as s:
            for r in results:
                exists = s.scalars(
                    select(ResultObject.id).where(
                        ResultObject.sop_instance_uid == r.sop_instance_uid,
                        ResultObject.destination.is_(None)
                        if destination is None
                        else ResultObject.destination == destination,
                    )
                ).first()
                if exists is not None:
                    continue
                s.add(
                    ResultObject(
                        job_id=job_id,
                        model_version=model_version,
                        destination=destination,
                        delivery_state=state,
                        attempts=0,
                        **dataclasses.asdict(r),
                    )
                )
                new += 1
        return new

    def for_job(self, job_id: int) -> list[ResultView]:
        """The job's result objects, oldest first."""
        with self.store.session() as s:
            rows = s.scalars(
                select(ResultObject).where(ResultObject.job_id == job_id).order_by(ResultObject.id)
            )
            return [ResultView.of(r) for r in rows]

    def previous_sr(self, job_id: int, model_version: str) -> ResultView | None:
        """The newest SR of this job made by another model version, to reference as previous."""
        with self.store.session() as s:
            row = s.scalars(
                select(ResultObject)
                .where(
                    ResultObject.job_id == job_id,
                    ResultObject.kind == "sr",
                    ResultObject.model_version != model_version,
                )
                .order_by(ResultObject.id.desc())
            ).first()
            return ResultView.of(row) if row else None

    def claim_due(
        self, *, limit: int = 50, lease_s: float = 300.0, job_id: int | None = None
    ) -> list[ResultView]:
        """Take up to ``limit`` objects due for sending (pending and due, or a stale send)."""
        now = utcnow()
        stale = now - dt.timedelta(seconds=lease_s)
        with self.store.session() as s:
            query = select(ResultObject.id)
            if job_id is not None:
                query = query.where(ResultObject.job_id == job_id)
            candidates = list(
                s.scalars(
                    query.where(
                        or_(
                            (ResultObject.delivery_state == str(DeliveryState.PENDING))
                            & or_(
                                ResultObject.next_attempt_at.is_(None),
                                ResultObject.next_attempt_at <= now,
                            ),
                            (ResultObject.delivery_state == str(DeliveryState.SENDING))
                            & (ResultObject.updated_at <= stale),
                        )
                    )
                    .order_by(ResultObject.id)
                    .limit(limit)
                )
            )
        claimed: list[ResultView] = []
        for rid in candidates:
            with self.store.session() as s:
                stmt = (
                    update(ResultObject)
                    .where(
                        ResultObject.id == rid,
                        or_(
                            ResultObject.delivery_state == str(DeliveryState.PENDING),
                            (ResultObject.delivery_state == str(DeliveryState.SENDING))
                            & (ResultObject.updated_at <= stale),
                        ),
                    )
                    .values(
                        delivery_state=str(DeliveryState.SENDING),
                        attempts=ResultObject.attempts + 1,
                        updated_at=utcnow(),
                    )
                )
                if s.execute(stmt).rowcount == 1:  # type: ignore[attr-defined]  # a CursorResult at run time
                    row = s.get(ResultObject, rid)
                    assert row is not None
                    claimed.append(ResultView.of(row))
        return claimed

    def wake(self, destination: str | None) -> int:
        """Make every result waiting out a back-off for ``destination`` due now; returns how many.

        Called when a send to ``destination`` has just succeeded: the destination is back, so
        results that failed while it was down need not wait out the rest of their (doubling)
        delays, which after a long outage could hold them for minutes more. Only the due time
        changes: attempts, errors and the claim rules stay as they are, so nothing is sent twice.
        """
        now = utcnow()
        with self.store.session() as s:
            stmt = (
                update(ResultObject)
                .where(
                    ResultObject.delivery_state == str(DeliveryState.PENDING),
                    ResultObject.destination == destination,
                    ResultObject.next_attempt_at > now,
                )
                .values(next_attempt_at=now)
            )
            return int(s.execute(stmt).rowcount)  # type: ignore[attr-defined]  # a CursorResult at run time

    def mark(
        self,
        result_id: int,
        state: DeliveryState,
        *,
        error: str | None = None,
        retry_in_s: float | None = None,
    ) -> None:
        """Record the outcome of one send and settle the job if all its objects are done."""
        next_at = utcnow() + dt.timedelta(seconds=retry_in_s) if retry_in_s is not None else None
        with self.store.session() as s:
            row = s.get(ResultObject, result_id)
            if row is None:
                raise KeyError(result_id)
            row.delivery_state = str(state)
            row.last_error = error
            row.next_attempt_at = next_at
            row.updated_at = utcnow()
            s.flush()
            self._settle(s, row.job_id)

    def settle(self, job_id: int) -> None:
        """Move the job to ``delivered``/``failed`` if all its objects are done."""
        with self.store.session() as s:
            self._settle(s, job_id)

    def _settle(self, s: Session, job_id: int) -> None:
        job = s.get(Job, job_id)
        if job is None or job.state not in {JobState.RESULTS_BUILT, JobState.REJECTED}:
            return
        states = [
            r.delivery_state
            for r in s.scalars(select(ResultObject).where(ResultObject.job_id == job_id))
        ]
        if not states or any(st in {DeliveryState.PENDING, DeliveryState.SENDING} for st in states):
            return
        if job.state == JobState.REJECTED:
            return  # a rejection SR's delivery does not change a rejected job
        failed = [st for st in states if st == DeliveryState.FAILED]
        if failed:
            reason = f"{len(failed)} result object(s) could not be delivered"
            JobStore.transition(
                s, job_id, JobState.FAILED, reason, expect=[JobState.RESULTS_BUILT], reason=reason
            )
        else:
            kept = all(st == DeliveryState.KEPT for st in states)
            message = (
                "results kept in the results folder (no destination configured)"
                if kept
                else f"{len(states)} result object(s) delivered"
            )
            JobStore.transition(
                s, job_id, JobState.DELIVERED, message, expect=[JobState.RESULTS_BUILT]
            )
