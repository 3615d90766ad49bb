"""Queue the RIS notifications (HL7 ORU^R01, FHIR DiagnosticReport) of one study result.

Stub until the RIS destinations land: no RIS is configured, so nothing is queued.
"""

from __future__ import annotations

from common.settings import Settings
from ris.outcome import StudyOutcome
from store.jobstore import JobStore


def queue_notifications(store: JobStore, outcome: StudyOutcome, settings: Settings) -> int:
    """Write the messages of ``outcome`` and put them in the outbox; return how many were queued."""
    del store, outcome, settings
    return 0
