"""Data lifecycle: remove the images and result files of finished jobs after a retention period.

The spool keeps every received instance and the results folder every object we made, so a node
that runs for years would keep patient images for years. With ``retention_days`` = N > 0, the
files of a job are removed once the job has been finished for N days:

- only jobs that are ``delivered`` -- or ``rejected`` by the input gate -- whose result objects
  (if any) all reached their destination (``sent``, ``confirmed``, or ``kept`` where the results
  folder is the destination). Jobs still in progress, ``failed`` jobs and objects waiting for
  delivery are never touched: they may still be needed;
- only files inside the spool and results folders, and only files not written since the cutoff
  (an instance received again is written afresh, and a job receiving it is no longer old);
- the job rows and their timelines stay: each purge adds a timeline entry ("files purged ...")
  saying what was removed, so ``deepcovid jobs show`` tells why a file is gone. That entry is
  also how a later run knows the job is done (until it is received again).

Runs every hour in the node (:func:`start_purger`) and on demand with ``deepcovid db purge``
(``--dry-run`` counts without removing). A job is taken with a conditional update inside the
transaction that records its purge, so a concurrent change (the instance received again) is
never purged behind its back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy import Select, exists, select, update
from sqlalchemy.orm import Session

from common.states import JobState
from store.jobstore import JobStore
from store.schema import DeliveryState, Job, JobEvent, ResultObject, utcnow

log = logging.getLogger(__name__)

PURGED = "files purged"
"""How a purge's timeline entry starts (also how the next run recognises a purged job)."""
PURGEABLE_STATES = (JobState.DELIVERED, JobState.REJECTED)
"""Finished jobs whose files may go: everything they produced reached its destination."""
SETTLED_DELIVERY = (DeliveryState.SENT, DeliveryState.CONFIRMED, DeliveryState.KEPT)
"""Delivery states of result objects whose files may go."""
DEFAULT_INTERVAL_S = 3600.0
OnPurged = Callable[[str, list[str]], None]
"""Told of each purged job: its Study Instance UID and the SOP Class UIDs of its files."""
BATCH = 200


@dataclasses.dataclass
class PurgeReport:
    """What a purge removed (or, with ``dry_run``, would remove)."""

    jobs: int = 0
    files: int = 0
    bytes: int = 0
    kept: int = 0
    """Files left in place: outside the spool/results folders, or written after the cutoff."""
    dry_run: bool = False

    def __str__(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        text = f"{verb} {self.files} file(s), {self.bytes / 2**20:.1f} MiB, of {self.jobs} job(s)"
        return text + (f"; kept {self.kept} file(s)" if self.kept else "")


def purge_expired(
    store: JobStore,
    *,
    retention_days: float,
    spool_dir: Path,
    results_dir: Path,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    on_purged: OnPurged | None = None,
) -> PurgeReport:
    """Remove the files of jobs finished more than ``retention_days`` ago (0: do nothing).

    ``on_purged`` hears of each job whose files were removed (not in a dry run), with its
    Study Instance UID and SOP classes: the caller audits it as a deleted study.
    """
    report = PurgeReport(dry_run=dry_run)
    if retention_days <= 0:
        return report
    cutoff = (now or utcnow()) - dt.timedelta(days=retention_days)
    roots = (spool_dir.resolve(), results_dir.resolve())
    last_id = 0
    while True:
        with store.session() as s:
            batch = list(s.scalars(_candidates(cutoff, after_id=last_id)))
        if not batch:
            return report
        last_id = batch[-1]
        for job_id in batch:
            purged = _purge_job(store, job_id, cutoff, roots, retention_days, report, dry_run)
            if purged is None:
                continue
            report.jobs += 1
            study_uid, sop_classes = purged
            if on_purged is not None and not dry_run and study_uid:
                on_purged(study_uid, sop_classes)


def _candidates(cutoff: dt.datetime, *, after_id: int) -> Select[int]:
    """Ids of jobs that may be purged: finished long enough, delivered, not purged since."""
    purged_since = exists().where(
        JobEvent.job_id == Job.id,
        JobEvent.message.like(f"{PURGED}%"),
        JobEvent.at >= Job.updated_at,
    )
    unsettled = exists().where(
        ResultObject.job_id == Job.id,
        ResultObject.delivery_state.notin_([str(d) for d in SETTLED_DELIVERY]),
    )
    return (
        select(Job.id)
        .where(
            Job.state.in_([str(st) for st in PURGEABLE_STATES]),
            Job.updated_at <= cutoff,
            Job.id > after_id,
            ~purged_since,
            ~unsettled,
        )
        .order_by(Job.id)
        .limit(BATCH)
    )


def _purge_job(
    store: JobStore,
    job_id: int,
    cutoff: dt.datetime,
    roots: tuple[Path, Path],
    retention_days: float,
    report: PurgeReport,
    dry_run: bool,
) -> tuple[str | None, list[str]] | None:
    """Purge one job's files and record it, in one transaction; None if it changed meanwhile.

    Returns the job's Study Instance UID and the SOP classes of its instance and results.
    """
    with store.session() as s:
        if not dry_run:
            # A no-op update with the candidate's conditions takes the job's row (PostgreSQL)
            # or the database (SQLite) for this transaction: a receipt of the instance waits.
            taken = s.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.state.in_([str(st) for st in PURGEABLE_STATES]),
                    Job.updated_at <= cutoff,
                )
                .values(updated_at=Job.updated_at)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]  # a CursorResult at run time
                return None
        job = s.get(Job, job_id)
        assert job is not None
        results = list(s.scalars(select(ResultObject).where(ResultObject.job_id == job_id)))
        if any(r.delivery_state not in SETTLED_DELIVERY for r in results):
            return None
        removed = kept = 0
        for path in _paths(job.spool_path, (r.path for r in results)):
            outcome = _remove(path, cutoff, roots, report, dry_run)
            removed += outcome == "removed"
            kept += outcome == "kept"
        if not dry_run:
            _record(s, job, removed, kept, len(results), retention_days)
        return job.study_instance_uid, [job.sop_class_uid, *(r.sop_class_uid for r in results)]


def _paths(spool_path: str, result_paths: Iterable[str]) -> list[Path]:
    return [Path(p) for p in (spool_path, *result_paths) if p]


def _remove(
    path: Path, cutoff: dt.datetime, roots: tuple[Path, Path], report: PurgeReport, dry_run: bool
) -> str:
    """Remove one file if it may go: ``removed``, ``kept`` or ``absent``."""
    try:
        resolved = path.resolve()
        stat = resolved.stat()
    except FileNotFoundError:
        return "absent"
    except OSError as exc:
        log.warning("purge: cannot read %s: %s", path, exc)
        report.kept += 1
        return "kept"
    inside = any(resolved.is_relative_to(root) for root in roots)
    fresh = dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC) > cutoff
    if not inside or fresh:
        report.kept += 1
        return "kept"
    if not dry_run:
        try:
            resolved.unlink()
        except FileNotFoundError:
            return "absent"
        except OSError as exc:
            log.warning("purge: cannot remove %s: %s", path, exc)
            report.kept += 1
            return "kept"
        _remove_empty_parent(resolved, roots)
    report.files += 1
    report.bytes += stat.st_size
    return "removed"


def _remove_empty_parent(path: Path, roots: tuple[Path, Path]) -> None:
    """Remove a study folder of the results folder once its last file is gone."""
    parent = path.parent
    if parent in roots or not any(parent.is_relative_to(root) for root in roots):
        return
    with contextlib.suppress(OSError):  # not empty, or already gone
        parent.rmdir()


def _record(
    s: Session, job: Job, removed: int, kept: int, results: int, retention_days: float
) -> None:
    """The timeline entry: what went, after how long; state unchanged."""
    message = (
        f"{PURGED} after {retention_days:g} days: {removed} file(s) removed "
        f"(the received instance and {results} result object(s))"
    )
    if kept:
        message += f"; {kept} kept (outside the spool/results folders, or written since)"
    s.add(JobEvent(job_id=job.id, state=job.state, message=message))


def start_purger(
    store: JobStore,
    *,
    retention_days: float,
    spool_dir: Path,
    results_dir: Path,
    interval_s: float = DEFAULT_INTERVAL_S,
    on_purged: OnPurged | None = None,
) -> threading.Event:
    """Run :func:`purge_expired` now and every ``interval_s`` in a daemon thread.

    Returns an event that stops the loop when set. Nothing runs when ``retention_days`` is 0.
    """
    stop = threading.Event()
    if retention_days <= 0:
        return stop

    def loop() -> None:
        while not stop.is_set():
            try:
                report = purge_expired(
                    store,
                    retention_days=retention_days,
                    spool_dir=spool_dir,
                    results_dir=results_dir,
                    on_purged=on_purged,
                )
                if report.jobs or report.kept:
                    log.info("retention (%g days): %s", retention_days, report)
            except Exception:
                log.exception("purge run failed")
            stop.wait(interval_s)

    threading.Thread(target=loop, name="purger", daemon=True).start()
    return stop


__all__ = [
    "PURGEABLE_STATES",
    "PURGED",
    "SETTLED_DELIVERY",
    "PurgeReport",
    "purge_expired",
    "start_purger",
]
