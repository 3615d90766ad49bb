"""Celery tasks. Thin: each task hands its job id to :mod:`worker.pipeline`."""

from __future__ import annotations

import logging
import os

from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_ready
from sqlalchemy.exc import OperationalError

import audit
from common.lifeline import die_with_parent
from common.settings import get_settings
from common.tasks import ANALYSE_TASK
from store.queue import default_store, enqueue_analysis
from store.recovery import requeue_unfinished
from worker.celery_app import app
from worker.pipeline import run_job

log = logging.getLogger(__name__)


@app.task(
    name=ANALYSE_TASK,
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
            analysis_lease_s=get_settings().worker.analysis_lease_s,
        )
    except Exception:  # never stop a worker from starting
        log.exception("re-enqueue on worker start failed")


_main_pid: int | None = None
"""Pid of the worker's main process, remembered there and inherited by its forked pool."""


@worker_init.connect
def _remember_main_process(**_: object) -> None:
    global _main_pid
    _main_pid = os.getpid()


@worker_process_init.connect
def _die_with_main_process(**_: object) -> None:
    """A pool child ends when the worker's main process does, even by SIGKILL.

    Otherwise a killed worker leaves its pool children running (and holding a GPU); its task
    message goes back to the broker either way (``acks_late``), so nothing is lost.
    """
    die_with_parent(_main_pid)


@worker_process_shutdown.connect
def _send_queued_audit_messages(**_: object) -> None:
    """A pool child ends with ``os._exit`` (no ``atexit``): send its audit messages first."""
    audit.close()
