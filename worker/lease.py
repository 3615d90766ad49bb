"""Keep a claim on a job alive while a worker works on it.

A claim (state ``analysing``) not renewed for ``analysis_lease_s`` is taken to belong to a dead
worker, and recovery sends the job through analysis again. A live worker renews it from a
background thread every quarter of the lease, however long inference takes.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from store import JobStore

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Context manager renewing the claim on ``job_id`` until the block ends."""

    def __init__(self, store: JobStore, job_id: int, lease_s: float) -> None:
        self.store = store
        self.job_id = job_id
        self.interval = max(lease_s / 4.0, 0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.store.renew(self.job_id):
                    return
            except Exception as exc:  # a database hiccup must not kill the analysis
                log.warning("job %s: lease renewal failed: %s", self.job_id, exc)
