"""Publishing analysis work: the only way other packages put a job on the queue."""

from __future__ import annotations

import logging

from common.settings import get_settings
from common.states import WAITING_STATES, JobState
from common.tasks import ANALYSE_TASK
from store.jobstore import JobStore

log = logging.getLogger(__name__)


def enqueue_analysis(job_id: int, store: JobStore | None = None) -> None:
    """Publish the analysis task for ``job_id`` and mark the job ``queued``.

    Raises when the broker does not take the message: the job then stays ``received`` and
    :func:`store.recovery.requeue_unfinished` picks it up when the service starts again.
    """
    from store.broker import get_app

    get_app().send_task(ANALYSE_TASK, args=[job_id])
    store = store or default_store()
    store.set_state(job_id, JobState.QUEUED, "queued for analysis", expect=WAITING_STATES)


_stores: dict[str, JobStore] = {}


def default_store() -> JobStore:
    """The process-wide job store for the current settings (created on first use)."""
    url = get_settings().storage.db_url
    if url not in _stores:
        _stores[url] = JobStore(url)
    return _stores[url]
