"""Prometheus figures read from the job store when Prometheus scrapes the node.

Workers run in other processes (often on other machines), so their counters would be lost with
them; the job store is what every process shares and what survives a restart. At each scrape
:class:`JobStoreCollector` therefore asks the store:

- jobs per state, and totals of jobs received / analysed / rejected / delivered / failed;
- analysed jobs per finding: present, absent, indeterminate (outside the model's domain);
- the queue depth (jobs ``received`` or ``queued``) and the age of the oldest waiting job;
- result objects per delivery state, and how many still wait to be delivered;
- stage latency histograms, built from the timelines (``job_events``) of the jobs that finished
  since the previous scrape. Only new final events are read (at most ``batch`` per scrape,
  the rest at the next one), so a scrape costs the same on a store holding millions of jobs;
  the histograms count from the node's start, like any Prometheus counter.

When the store cannot be read, ``deepcovid_jobstore_up`` is 0 and the store-derived series
are left out of that scrape rather than reported as zeros.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import shutil
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from common.states import FINAL_STATES, WAITING_STATES, JobState
from store.schema import DeliveryState, Job, JobEvent, ResultObject

log = logging.getLogger(__name__)

#: Upper bounds (seconds) of the latency buckets: from a fast queue hand-over to a PACS that
#: was down for an hour.
BUCKETS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
STAGES = ("queue", "analysis", "build", "delivery")
FINAL = tuple(str(s) for s in JobState if s in FINAL_STATES)
WAITING = tuple(str(s) for s in JobState if s in WAITING_STATES)
PENDING_DELIVERY = (str(DeliveryState.PENDING), str(DeliveryState.SENDING))
# Totals an operator follows: jobs that got as far as each of these.
TOTALS = ("received", "analysed", "rejected", "delivered", "failed")
# Findings of analysed jobs (indeterminate: the image failed the model's domain check).
FINDINGS = ("present", "absent", "indeterminate")


class Histogram:
    """Cumulative bucket counts and sum of observed durations (in memory)."""

    def __init__(self, buckets: Iterable[float] = BUCKETS) -> None:
        self.bounds = sorted(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Add one duration (negative values, from clock skew between hosts, count as 0)."""
        seconds = max(seconds, 0.0)
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        """``(le, cumulative count)`` pairs as Prometheus expects them, ending with +Inf."""
        out, running = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


def stage_durations(
    events: list[tuple[int, str, dt.datetime]], final_ids: set[int]
) -> Iterator[tuple[str, dict[str, float], float]]:
    """Durations of the cycles of one job's timeline that end in one of ``final_ids``.

    ``events`` are ``(id, state, at)`` in id order. A cycle starts at the first ``received``
    event after the previous final state and ends at a *transition* into a final state (an
    event repeating the current state, e.g. "received again, identical content" on a
    delivered job, is not one). Yields ``(outcome, {stage: seconds}, total seconds)``; a stage
    is present only when both of its ends are on the timeline.
    """
    start: dt.datetime | None = None
    first: dict[str, dt.datetime] = {}
    previous: str | None = None
    for event_id, state, at in events:
        if state == JobState.RECEIVED and start is None:
            start, first = at, {}
        first.setdefault(state, at)
        is_transition = state != previous
        previous = state
        if state not in FINAL or not is_transition or start is None:
            continue
        if event_id in final_ids:
            marks = [
                first.get(JobState.RECEIVED),
                first.get(JobState.ANALYSING),
                first.get(JobState.ANALYSED),
                first.get(JobState.RESULTS_BUILT),
                at if state != JobState.REJECTED else None,
            ]
            stages = {
                name: (end - begin).total_seconds()
                for name, begin, end in zip(STAGES, marks, marks[1:], strict=False)
                if begin is not None and end is not None
            }
            yield state, stages, (at - start).total_seconds()
        start, first = None, {}


class JobStoreCollector(Collector):
    """A custom collector answering each scrape from the job store (see the module doc)."""

    def __init__(self, engine: Engine, *, batch: int = 2000) -> None:
        self.engine = engine
        self.batch = batch
        self._lock = threading.Lock()
        self._stages = {name: Histogram() for name in STAGES}
        self._outcomes = {name: Histogram() for name in FINAL}
        self._watermark: int | None = None
        try:
            self._watermark = self._max_event_id()
        except Exception as exc:  # store down at start: begin at the first good scrape
            log.warning("metrics: job store not readable yet (%s)", type(exc).__name__)

    def describe(self) -> list[Metric]:
        """Nothing up front: the registry must not query the store when it is created."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The store-derived metrics (serialised: one scrape reads the timelines at a time)."""
        with self._lock:
            try:
                snapshot = self._snapshot()
                self._observe_finished()
            except Exception as exc:
                log.warning("metrics: job store unreadable: %s", type(exc).__name__)
                yield _gauge("deepcovid_jobstore_up", "Whether the job store could be read.", 0)
                return
            yield _gauge("deepcovid_jobstore_up", "Whether the job store could be read.", 1)
            yield from snapshot
            yield from self._histograms()

    # --- point-in-time figures ------------------------------------------------------------
    def _snapshot(self) -> list[Metric]:
        now = dt.datetime.now(dt.UTC)
        with self.engine.connect() as conn:
            by_state = dict(conn.execute(select(Job.state, func.count()).group_by(Job.state)).all())
            analysed = conn.execute(
                select(func.count()).select_from(Job).where(Job.probability.is_not(None))
            ).scalar_one()
            findings = dict(
                conn.execute(
                    select(Job.finding, func.count())
                    .where(Job.finding.is_not(None))
                    .group_by(Job.finding)
                ).all()
            )
            oldest = conn.execute(
                select(func.min(Job.created_at)).where(Job.state.in_(WAITING))
            ).scalar_one()
            outbox = dict(
                conn.execute(
                    select(ResultObject.delivery_state, func.count()).group_by(
                        ResultObject.delivery_state
                    )
                ).all()
            )
        in_state = GaugeMetricFamily(
            "deepcovid_jobs_in_state", "Jobs currently in each state.", labels=["state"]
        )
        for state in JobState:
            in_state.add_metric([str(state)], float(by_state.get(str(state), 0)))
        totals = CounterMetricFamily(
            "deepcovid_jobs",
            "Jobs that got as far as: received (all jobs), analysed (the model gave a "
            "probability), rejected / delivered / failed (final states). Read from the job store.",
            labels=["stage"],
        )
        values = {
            "received": sum(by_state.values()),
            "analysed": analysed,
            **{s: by_state.get(s, 0) for s in FINAL},
        }
        for name in TOTALS:
            totals.add_metric([name], float(values[name]))
        by_finding = CounterMetricFamily(
            "deepcovid_findings",
            "Analysed jobs per finding: present / absent at the operating threshold, "
            "indeterminate when the image was outside the model's validated domain.",
            labels=["finding"],
        )
        for name in FINDINGS:
            by_finding.add_metric([name], float(findings.get(name, 0)))
        depth = sum(by_state.get(s, 0) for s in WAITING)
        boxes = GaugeMetricFamily(
            "deepcovid_outbox_objects",
            "Result objects per delivery state.",
            labels=["state"],
        )
        for delivery in DeliveryState:
            boxes.add_metric([str(delivery)], float(outbox.get(str(delivery), 0)))
        return [
            in_state,
            totals,
            by_finding,
            _gauge(
                "deepcovid_queue_depth",
                "Jobs waiting for a worker (states received and queued).",
                depth,
            ),
            _gauge(
                "deepcovid_oldest_waiting_job_age_seconds",
                "Age of the oldest job waiting for a worker (0 when none waits).",
                _age(now, oldest),
            ),
            boxes,
            _gauge(
                "deepcovid_outbox_pending",
                "Result objects not yet delivered (pending or being sent).",
                sum(outbox.get(s, 0) for s in PENDING_DELIVERY),
            ),
        ]

    # --- latency histograms -----------------------------------------------------------------
    def _max_event_id(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(JobEvent.id))).scalar_one() or 0)

    def _observe_finished(self) -> None:
        """Fold the jobs that reached a final state since the last scrape into the histograms."""
        if self._watermark is None:
            self._watermark = self._max_event_id()
            return
        with self.engine.connect() as conn:
            finals = conn.execute(
                select(JobEvent.id, JobEvent.job_id)
                .where(JobEvent.id > self._watermark, JobEvent.state.in_(FINAL))
                .order_by(JobEvent.id)
                .limit(self.batch)
            ).all()
            if not finals:
                return
            job_ids = sorted({job_id for _, job_id in finals})
            timelines: dict[int, list[tuple[int, str, dt.datetime]]] = defaultdict(list)
            for event_id, job_id, state, at in conn.execute(
                select(JobEvent.id, JobEvent.job_id, JobEvent.state, JobEvent.at)
                .where(JobEvent.job_id.in_(job_ids))
                .order_by(JobEvent.id)
            ):
                timelines[job_id].append((event_id, state, at))
        final_ids = {event_id for event_id, _ in finals}
        for events in timelines.values():
            for outcome, stages, total in stage_durations(events, final_ids):
                self._outcomes[outcome].observe(total)
                for name, seconds in stages.items():
                    self._stages[name].observe(seconds)
        self._watermark = finals[-1][0]

    def _histograms(self) -> Iterator[Metric]:
        stages = HistogramMetricFamily(
            "deepcovid_stage_duration_seconds",
            "Time jobs spent in each stage: queue (received to claimed by a worker), analysis "
            "(to probability and heatmap), build (to result objects written), delivery (to "
            "all objects at the destination). Jobs finished since the node started.",
            labels=["stage"],
        )
        for name in STAGES:
            h = self._stages[name]
            stages.add_metric([name], h.buckets(), h.total)
        yield stages
        outcomes = HistogramMetricFamily(
            "deepcovid_job_duration_seconds",
            "Receipt to final state, by outcome (delivered, rejected, failed). Jobs finished "
            "since the node started.",
            labels=["outcome"],
        )
        for name in FINAL:
            h = self._outcomes[name]
            outcomes.add_metric([name], h.buckets(), h.total)
        yield outcomes


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _age(now: dt.datetime, then: Any) -> float:
    """Seconds since ``then`` (SQLite hands back naive datetimes; the store writes UTC)."""
    if then is None:
        return 0.0
    if isinstance(then, str):
        then = dt.datetime.fromisoformat(then)
    if then.tzinfo is None:
        then = then.replace(tzinfo=dt.UTC)
    return max((now - then).total_seconds(), 0.0)


class SpoolCollector(Collector):
    """Free space on the spool's disk and the watermark below which C-STORE answers 0xA700."""

    def __init__(self, spool_dir: Path, min_free_bytes: int) -> None:
        self.spool_dir = spool_dir
        self.min_free_bytes = min_free_bytes

    def describe(self) -> list[Metric]:
        """Nothing up front (values are read at scrape time)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Free bytes (when the folder can be read) and the watermark, in bytes."""
        try:
            free: int | None = shutil.disk_usage(self.spool_dir).free
        except OSError:
            free = None
        if free is not None:
            yield _gauge(
                "deepcovid_spool_free_bytes", "Free bytes on the spool's file system.", free
            )
        yield _gauge(
            "deepcovid_spool_watermark_bytes",
            "Free-space watermark of the spool (min_free_space_mb); below it C-STORE answers "
            "0xA700.",
            self.min_free_bytes,
        )
