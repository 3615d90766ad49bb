"""What the worker does with one job: claim it, open the instance, and move it to its end state.

Each stage records its outcome on the job's timeline. Errors end the job ``failed`` with the
reason; only errors that may pass (database or broker trouble) propagate so the task is retried.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from deepcovid.settings import Settings
from worker.attributes import key_attributes
from worker.lease import LeaseKeeper
from worker.store import JobState, JobStore

log = logging.getLogger(__name__)


def run_job(job_id: int, store: JobStore, settings: Settings) -> str:
    """Process one job; returns the state it ended in (or ``skipped`` if not ours)."""
    if not store.claim(job_id, lease_s=settings.analysis_lease_s):
        log.info("job %s: not claimable (already taken or finished); nothing to do", job_id)
        return "skipped"
    with LeaseKeeper(store, job_id, settings.analysis_lease_s):
        return _analyse(job_id, store, settings)


def _analyse(job_id: int, store: JobStore, settings: Settings) -> str:
    """The stages after the claim."""
    job = store.get(job_id)
    assert job is not None
    path = Path(job.spool_path)
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except (OSError, InvalidDicomError, ValueError) as exc:
        reason = f"cannot read spooled instance: {type(exc).__name__}: {exc}"
        store.set_state(job_id, JobState.FAILED, reason, reason=reason)
        log.error("job %s (%s): %s", job_id, job.sop_instance_uid, reason)
        return JobState.FAILED
    attrs = key_attributes(ds)
    store.set_state(
        job_id,
        JobState.ANALYSED,
        "attributes recorded: "
        f"{attrs['modality']} {attrs['view_position']} {attrs['rows']}x{attrs['columns']} "
        f"{attrs['photometric_interpretation']}",
        **attrs,
    )
    log.info("job %s (%s): attributes recorded", job_id, job.sop_instance_uid)
    return JobState.ANALYSED
