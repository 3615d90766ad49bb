"""Hands received jobs to the analysis queue, off the association's thread.

The listener answers Success once the file and the job row are committed; publishing the Celery
task happens afterwards, here, on one background thread, so a slow or unreachable broker never
delays or fails a C-STORE. When publishing fails the job simply stays ``received`` (the failure
is logged) and is enqueued again when the service starts -- nothing is lost.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

EnqueueFn = Callable[[int], None]
_STOP = object()


class Enqueuer:
    """A single background thread calling ``enqueue(job_id)`` for each submitted job."""

    def __init__(self, enqueue: EnqueueFn, *, name: str = "deepcovid-enqueue") -> None:
        self._enqueue = enqueue
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.failures = 0
        """Jobs whose enqueueing failed since start (they stay ``received``)."""

    def submit(self, job_id: int) -> None:
        """Queue ``job_id`` for publishing; returns at once."""
        self._queue.put(job_id)

    def close(self, timeout: float | None = 10.0) -> None:
        """Publish what is pending, then stop the thread (waits up to ``timeout`` seconds)."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, int)
            try:
                self._enqueue(item)
            except Exception as exc:  # broker down, misconfigured...: keep the job `received`
                self.failures += 1
                log.error(
                    "could not enqueue job %d (%s); it stays 'received' and is enqueued again "
                    "when the service starts",
                    item,
                    type(exc).__name__,
                )
