"""Re-enqueue work the broker may have lost, so nothing received is ever left behind.

Runs when the node starts, when a worker starts, and periodically in the node. Duplicated
task messages are harmless: :meth:`store.JobStore.claim` lets only one of them work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from common.states import LEASED_STATES
from store import JobStore
from store.outage import UNREACHABLE_ERRORS, OutageLog

log = logging.getLogger(__name__)


def requeue_unfinished(
    store: JobStore,
    enqueue: Callable[[int], None],
    *,
    stale_after_s: float = 0.0,
    analysis_lease_s: float = 900.0,
) -> int:
    """Enqueue jobs waiting longer than ``stale_after_s`` and analyses whose lease expired.

    Returns how many jobs were enqueued. Stops at the first broker failure (the next run
    tries again); the jobs stay in the store either way.
    """
    waiting = store.unfinished(stale_after_s=stale_after_s)
    stuck = store.unfinished(stale_after_s=analysis_lease_s, states=LEASED_STATES)
    done = 0
    for job_id in [*waiting, *stuck]:
        try:
            enqueue(job_id)
        except Exception as exc:  # broker down: keep the jobs for the next run
            log.warning("re-enqueue stopped at job %s: %s", job_id, exc)
            break
        done += 1
    if done:
        log.info("re-enqueued %d unfinished job(s)", done)
    return done


def start_reconciler(
    store: JobStore,
    enqueue: Callable[[int], None],
    *,
    interval_s: float,
    analysis_lease_s: float,
) -> threading.Event:
    """Run :func:`requeue_unfinished` now and every ``interval_s`` in a daemon thread.

    Waiting jobs are re-enqueued once they are 10 intervals old (the broker normally delivers
    long before); returns an event that stops the loop when set.
    """
    stop = threading.Event()
    outage = OutageLog(log, "reconciler")

    def loop() -> None:
        stale = 0.0  # on start: everything the previous run left waiting
        while not stop.is_set():
            try:
                requeue_unfinished(
                    store, enqueue, stale_after_s=stale, analysis_lease_s=analysis_lease_s
                )
                outage.succeeded()
            except UNREACHABLE_ERRORS as exc:  # one line per outage, not a traceback each run
                outage.failed(exc)
            except Exception:
                log.exception("reconciler run failed")
            stale = 10 * interval_s
            stop.wait(interval_s)

    threading.Thread(target=loop, name="reconciler", daemon=True).start()
    return stop
