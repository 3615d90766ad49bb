"""Celery tasks. Thin: each task hands its job id to :mod:`worker.pipeline`."""

from __future__ import annotations

import logging

from celery.signals import worker_ready
from sqlalchemy.exc import OperationalError

from deepcovid.settings import get_settings
from worker.celery_app import app
from worker.pipeline import run_job
from worker.queue import default_store, enqueue_analysis
from worker.recovery import requeue_unfinished

log = logging.getLogger(__name__)


@app.task(
    name="worker.tasks.analyse_instance",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=20,
)
def analyse_instance(job_id: int) -> str:
    """Analyse the instance of job ``job_id`` (idempotent: finished jobs are left alone)."""
    return run_job(job_id, default_store(), get_settings())


@worker_ready.connect
def _requeue_on_start(**_: object) -> None:
    """A worker that starts re-enqueues jobs a crashed worker or broker left unfinished."""
    try:
        requeue_unfinished(
            default_store(),
            enqueue_analysis,
            stale_after_s=30.0,
            analysis_lease_s=get_settings().analysis_lease_s,
        )
    except Exception:  # never stop a worker from starting
        log.exception("re-enqueue on worker start failed")
