"""What an operator may do to jobs: re-analyse, resend results, retry failed deliveries.

One implementation for the console's buttons and the ``deepcovid jobs reanalyse | resend |
retry-failed`` commands. Each action is idempotent -- a second click, or the command run twice,
finds nothing left to do and says so -- and changes states only through
:meth:`store.JobStore.transition`'s compare-and-set, so it cannot undo what a worker or the
dispatcher did meanwhile. Who asked is written on the job's timeline.

- **re-analyse** (a ``failed`` or ``rejected`` job): the job goes back to ``received``, its
  failed deliveries start over, and the analysis task is published again. With the same
  content and model the result UIDs are the same, so nothing is duplicated at the PACS.
- **resend** (a ``delivered``, ``failed`` or ``rejected`` job with result objects): every result
  object goes back to ``pending`` with a fresh attempt count; the node's dispatcher sends them
  within a second or so and the job is settled again (``delivered`` or ``failed``).
- **retry failed deliveries**: every result object whose delivery was given up goes back to
  ``pending``, and its job from ``failed`` to ``results_built``.

Sending is left to the node's dispatcher (``worker.delivery``), which keeps the back-off and the
C-FIND confirmation in one place.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from common.states import JobState
from store.jobstore import JobStore, JobView
from store.schema import DeliveryState, ResultObject, utcnow

log = logging.getLogger(__name__)

REANALYSABLE = (JobState.FAILED, JobState.REJECTED)
RESENDABLE = (JobState.DELIVERED, JobState.FAILED, JobState.REJECTED)
IN_FLIGHT = (str(DeliveryState.PENDING), str(DeliveryState.SENDING))

Enqueue = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class ActionResult:
    """What an action did: ``changed`` is False when there was nothing (more) to do."""

    changed: bool
    message: str


def find_job(store: JobStore, ref: str) -> JobView | None:
    """A job by SOP Instance UID, or by id when ``ref`` is all digits and no UID matches."""
    job = store.get_by_uid(ref)
    if job is None and ref.isdigit():
        job = store.get(int(ref))
    return job


def reanalyse(
    store: JobStore, job_id: int, *, by: str, enqueue: Enqueue | None = None
) -> ActionResult:
    """Send a failed or rejected job through the analysis again."""
    job = store.get(job_id)
    if job is None:
        return ActionResult(False, f"no job {job_id}")
    if job.state not in REANALYSABLE:
        return ActionResult(
            False, f"job {job_id} is {job.state}: only failed or rejected jobs are analysed again"
        )
    with store.session() as s:
        if not JobStore.transition(
            s,
            job_id,
            JobState.RECEIVED,
            f"re-analysis requested by {by}",
            expect=REANALYSABLE,
            reason=None,
        ):
            return ActionResult(False, f"job {job_id} changed meanwhile; nothing done")
        restarted = _restart_deliveries(
            s,
            (ResultObject.job_id == job_id)
            & (ResultObject.delivery_state == str(DeliveryState.FAILED)),
        )
    if enqueue is None:
        from store.queue import enqueue_analysis

        enqueue = enqueue_analysis
    try:
        enqueue(job_id)
    except Exception as exc:  # the broker is away: the reconciler queues it when it is back
        log.warning("job %s: re-analysis not queued yet: %s", job_id, exc)
        return ActionResult(
            True, f"job {job_id} will be analysed again once the broker is reachable"
        )
    extra = f"; {restarted} failed delivery(ies) start over" if restarted else ""
    return ActionResult(True, f"job {job_id} queued for analysis again{extra}")


def resend(
    store: JobStore, job_id: int, *, by: str, destination: str | None = None
) -> ActionResult:
    """Send a finished job's result objects again (to their destination, else ``destination``)."""
    job = store.get(job_id)
    if job is None:
        return ActionResult(False, f"no job {job_id}")
    if job.state == JobState.RESULTS_BUILT:
        return ActionResult(False, f"the results of job {job_id} are being sent already")
    if job.state not in RESENDABLE:
        return ActionResult(
            False, f"job {job_id} is {job.state}: its results are sent when it finishes"
        )
    with store.session() as s:
        rows = list(s.scalars(select(ResultObject).where(ResultObject.job_id == job_id)))
        if not rows:
            return ActionResult(False, f"job {job_id} has no result objects to send")
        if any(r.delivery_state in IN_FLIGHT for r in rows):
            return ActionResult(False, f"the results of job {job_id} are being sent already")
        if not destination and any(not r.destination for r in rows):
            return ActionResult(
                False,
                "no destination is configured (setting `destination`): the results stay in "
                "the results folder",
            )
        if destination and "," in destination and any(not r.destination for r in rows):
            # Which of several destinations takes which object is the destination types'
            # decision (worker.delivery.queue); a re-analysis queues them that way, once each.
            return ActionResult(
                False,
                f"job {job_id}'s results were kept while no destination was configured; with "
                "several destinations, re-analyse the job to send them to each once",
            )
        message = f"results resent on request of {by}"
        if job.state == JobState.REJECTED:  # a rejection SR: the job stays rejected
            JobStore.transition(s, job_id, JobState.REJECTED, message, expect=[JobState.REJECTED])
        elif not JobStore.transition(
            s,
            job_id,
            JobState.RESULTS_BUILT,
            message,
            expect=[JobState(job.state)],
        ):
            return ActionResult(False, f"job {job_id} changed meanwhile; nothing done")
        for row in rows:
            row.destination = row.destination or destination
        count = _restart_deliveries(s, ResultObject.job_id == job_id)
    return ActionResult(True, f"{count} result object(s) of job {job_id} queued for sending")


def retry_failed_deliveries(store: JobStore, *, by: str) -> ActionResult:
    """Put every given-up result object back in the outbox and its job back to delivery."""
    with store.session() as s:
        job_ids = sorted(
            set(
                s.scalars(
                    select(ResultObject.job_id).where(
                        ResultObject.delivery_state == str(DeliveryState.FAILED)
                    )
                )
            )
        )
        if not job_ids:
            return ActionResult(False, "no failed deliveries")
        for job_id in job_ids:
            JobStore.transition(
                s,
                job_id,
                JobState.RESULTS_BUILT,
                f"failed deliveries retried on request of {by}",
                expect=[JobState.FAILED],
            )
        count = _restart_deliveries(s, ResultObject.delivery_state == str(DeliveryState.FAILED))
    return ActionResult(
        True, f"{count} failed result object(s) of {len(job_ids)} job(s) queued for sending"
    )


def _restart_deliveries(s: Session, where: object) -> int:
    """Result objects matching ``where`` back to ``pending``, due now, attempts from zero."""
    result = s.execute(
        update(ResultObject)
        .where(where)  # type: ignore[arg-type]
        .values(
            delivery_state=str(DeliveryState.PENDING),
            attempts=0,
            next_attempt_at=None,
            last_error=None,
            updated_at=utcnow(),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult at run time
