"""What the console's pages read from the job store: the dashboard's figures and job searches.

Read-only, a few aggregate queries per page (counts per state use the ``(state, updated_at)``
index), plain dataclasses out. Nothing here reads patient data: the job store holds none.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.orm import Session

from common.states import FINAL_STATES, WAITING_STATES, JobState
from store.jobstore import JobView
from store.schema import DeliveryState, Job, ResultObject

PAGE_SIZE = 25
DAY = dt.timedelta(hours=24)
PENDING_DELIVERY = (str(DeliveryState.PENDING), str(DeliveryState.SENDING))
FINAL = tuple(str(s) for s in JobState if s in FINAL_STATES)
WAITING = tuple(str(s) for s in JobState if s in WAITING_STATES)
STATES = tuple(str(s) for s in JobState)


@dataclasses.dataclass(frozen=True)
class Reason:
    """One reason and how many jobs it ended in the last 24 h."""

    text: str
    count: int


@dataclasses.dataclass(frozen=True)
class Dashboard:
    """The figures of the dashboard, as of ``now``."""

    now: dt.datetime
    in_state: dict[str, int]
    received_24h: dict[str, int]
    finished_per_hour: list[int]  # 24 hourly counts, oldest first; the last is the current hour
    delivered_1h: int
    failures_24h: list[Reason]
    rejections_24h: list[Reason]
    backlog: int
    oldest_undelivered_s: float | None
    failed_deliveries: int
    waiting: int
    oldest_waiting_s: float | None

    @property
    def total(self) -> int:
        """All jobs in the store."""
        return sum(self.in_state.values())

    @property
    def finished_24h(self) -> int:
        """Jobs that reached a final state in the last 24 h."""
        return sum(self.finished_per_hour)

    @property
    def failed_24h(self) -> int:
        """Jobs that failed in the last 24 h."""
        return sum(r.count for r in self.failures_24h)

    @property
    def rejected_24h(self) -> int:
        """Jobs the input gate rejected in the last 24 h."""
        return sum(r.count for r in self.rejections_24h)


def aware(value: Any) -> dt.datetime | None:
    """A stored time as an aware UTC datetime (SQLite hands back naive ones)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def dashboard(engine: Engine, now: dt.datetime | None = None, top: int = 5) -> Dashboard:
    """Read the dashboard's figures."""
    now = now or dt.datetime.now(dt.UTC)
    since = now - DAY
    with engine.connect() as conn:
        in_state = dict(conn.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        received = dict(
            conn.execute(
                select(Job.state, func.count()).where(Job.created_at >= since).group_by(Job.state)
            ).all()
        )
        finished_at = conn.execute(
            select(Job.updated_at).where(Job.state.in_(FINAL), Job.updated_at >= since)
        ).scalars()
        per_hour = [0] * 24
        for at in finished_at:
            moment = aware(at)
            assert moment is not None
            slot = 23 - int((now - moment).total_seconds() // 3600)
            per_hour[min(max(slot, 0), 23)] += 1
        delivered_1h = conn.execute(
            select(func.count())
            .select_from(Job)
            .where(
                Job.state == str(JobState.DELIVERED),
                Job.updated_at >= now - dt.timedelta(hours=1),
            )
        ).scalar_one()
        reasons = {
            state: [
                Reason(text or "(no reason recorded)", n)
                for text, n in conn.execute(
                    select(Job.reason, func.count().label("n"))
                    .where(Job.state == state, Job.updated_at >= since)
                    .group_by(Job.reason)
                    .order_by(func.count().desc())
                    .limit(top)
                ).all()
            ]
            for state in (str(JobState.FAILED), str(JobState.REJECTED))
        }
        backlog, oldest_undelivered = conn.execute(
            select(func.count(), func.min(ResultObject.created_at)).where(
                ResultObject.delivery_state.in_(PENDING_DELIVERY)
            )
        ).one()
        failed_deliveries = conn.execute(
            select(func.count())
            .select_from(ResultObject)
            .where(ResultObject.delivery_state == str(DeliveryState.FAILED))
        ).scalar_one()
        oldest_waiting = conn.execute(
            select(func.min(Job.created_at)).where(Job.state.in_(WAITING))
        ).scalar_one()
    return Dashboard(
        now=now,
        in_state={s: int(in_state.get(s, 0)) for s in STATES},
        received_24h={s: int(received.get(s, 0)) for s in STATES},
        finished_per_hour=per_hour,
        delivered_1h=int(delivered_1h),
        failures_24h=reasons[str(JobState.FAILED)],
        rejections_24h=reasons[str(JobState.REJECTED)],
        backlog=int(backlog),
        oldest_undelivered_s=_age(now, oldest_undelivered),
        failed_deliveries=int(failed_deliveries),
        waiting=sum(int(in_state.get(s, 0)) for s in WAITING),
        oldest_waiting_s=_age(now, oldest_waiting),
    )


def _age(now: dt.datetime, then: Any) -> float | None:
    moment = aware(then)
    return None if moment is None else max((now - moment).total_seconds(), 0.0)


@dataclasses.dataclass(frozen=True)
class JobFilter:
    """The jobs page's filters (all optional)."""

    state: str = ""
    modality: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    q: str = ""  # a SOP Instance / Study / Series UID (or its start), or an accession number
    page: int = 1

    @classmethod
    def parse(cls, params: Any) -> JobFilter:
        """From query parameters; values that do not parse are ignored."""
        state = str(params.get("state", "")).strip()
        try:
            page = max(int(params.get("page", 1)), 1)
        except ValueError:
            page = 1
        return cls(
            state=state if state in STATES else "",
            modality=str(params.get("modality", "")).strip().upper()[:16],
            date_from=_date(params.get("from")),
            date_to=_date(params.get("to")),
            q=str(params.get("q", "")).strip()[:64],
            page=page,
        )

    def query(self, **changes: Any) -> dict[str, str]:
        """These filters as query parameters (empty ones left out), with ``changes``."""
        values = {
            "state": self.state,
            "modality": self.modality,
            "from": self.date_from.isoformat() if self.date_from else "",
            "to": self.date_to.isoformat() if self.date_to else "",
            "q": self.q,
            "page": str(self.page) if self.page > 1 else "",
        }
        values.update({k: str(v) for k, v in changes.items()})
        return {k: v for k, v in values.items() if v and not (k == "page" and v == "1")}


def _date(value: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class JobPage:
    """One page of jobs, newest first."""

    jobs: list[JobView]
    total: int
    page: int
    pages: int


def search_jobs(engine: Engine, f: JobFilter, page_size: int = PAGE_SIZE) -> JobPage:
    """Jobs matching ``f``, newest first, one page of them."""
    conditions = []
    if f.state:
        conditions.append(Job.state == f.state)
    if f.modality:
        conditions.append(Job.modality == f.modality)
    if f.date_from:
        start = dt.datetime.combine(f.date_from, dt.time(), tzinfo=dt.UTC)
        conditions.append(Job.created_at >= start)
    if f.date_to:
        end = dt.datetime.combine(f.date_to + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        conditions.append(Job.created_at < end)
    if f.q:
        prefix = _like_prefix(f.q)
        conditions.append(
            or_(
                Job.sop_instance_uid == f.q,
                Job.study_instance_uid == f.q,
                Job.series_instance_uid == f.q,
                Job.accession_number == f.q,
                Job.sop_instance_uid.like(prefix, escape="\\"),
                Job.accession_number.like(prefix, escape="\\"),
            )
        )
    with Session(engine) as s:
        total = s.execute(select(func.count()).select_from(Job).where(*conditions)).scalar_one()
        pages = max((int(total) + page_size - 1) // page_size, 1)
        page = min(f.page, pages)
        jobs = [
            JobView.of(job)
            for job in s.scalars(
                select(Job)
                .where(*conditions)
                .order_by(Job.id.desc())
                .limit(page_size)
                .offset((page - 1) * page_size)
            )
        ]
    return JobPage(jobs, int(total), page, pages)


def _like_prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def modalities(engine: Engine) -> list[str]:
    """The modalities jobs have, for the filter's choices."""
    with engine.connect() as conn:
        return sorted(
            m for m in conn.execute(select(Job.modality).distinct()).scalars() if m is not None
        )
