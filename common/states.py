"""Where a job stands: the one list of job states, and which of them are final."""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    """Where a job stands. ``delivered``, ``rejected`` and ``failed`` are final."""

    RECEIVED = "received"
    QUEUED = "queued"
    ANALYSING = "analysing"
    ANALYSED = "analysed"
    RESULTS_BUILT = "results_built"
    DELIVERED = "delivered"
    REJECTED = "rejected"
    FAILED = "failed"


FINAL_STATES = frozenset({JobState.DELIVERED, JobState.REJECTED, JobState.FAILED})
"""States a job never leaves on its own: every received instance ends in one of them."""

WAITING_STATES = frozenset({JobState.RECEIVED, JobState.QUEUED})
"""States of a job no worker has claimed yet."""

LEASED_STATES = frozenset({JobState.ANALYSING, JobState.ANALYSED})
"""States of a job a worker holds under a lease (renewed while it works, until its results are
built); a lease not renewed in time belongs to a dead or cut-off worker and the job is
claimed and analysed again."""
