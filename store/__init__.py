"""The job store: one job per received SOP Instance and its event timeline (SQLAlchemy 2).

The store is the source of truth for "nothing received is lost": the broker only carries
hints ("look at job 42"), and every job ends in a state a person can see.
"""

from store.jobstore import JobStore, JobView, ReceiptOutcome
from store.schema import FINAL_STATES, JobState

__all__ = ["FINAL_STATES", "JobState", "JobStore", "JobView", "ReceiptOutcome"]
