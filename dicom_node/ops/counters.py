"""In-process counters of the listener: associations and C-STORE responses by status.

These happen only inside the node process, so they are counted in memory (reset when the node
restarts, as Prometheus counters may be). :data:`HANDLERS` are pynetdicom notification handlers
the listener binds next to its own; they only increment counters, so they cannot disturb an
association.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pynetdicom import evt
from pynetdicom.events import Event

#: The node's metric registry (not prometheus_client's global one, so that importing this
#: module twice, or in tests, never registers a metric twice).
REGISTRY = CollectorRegistry(auto_describe=True)

ASSOCIATIONS = Counter(
    "deepcovid_associations",
    "DICOM associations requested of the listener, by outcome (accepted, rejected).",
    ["outcome"],
    registry=REGISTRY,
)
C_STORE_RESPONSES = Counter(
    "deepcovid_c_store_responses",
    "C-STORE responses the listener sent, by status (0x0000 success, 0xA700 out of resources "
    "e.g. spool below its watermark, 0xA900 / 0xC000 / 0x0122 refused input).",
    ["status"],
    registry=REGISTRY,
)
for _outcome in ("accepted", "rejected"):
    ASSOCIATIONS.labels(_outcome)  # exported as 0 from the start
C_STORE_RESPONSES.labels("0x0000")


def status_label(status: int) -> str:
    """A DIMSE status as the label value used in the metrics, e.g. ``0xA700``."""
    return f"0x{status:04X}"


def _accepted(event: Event) -> None:
    del event
    ASSOCIATIONS.labels("accepted").inc()


def _rejected(event: Event) -> None:
    del event
    ASSOCIATIONS.labels("rejected").inc()


def _dimse_sent(event: Event) -> None:
    """Count C-STORE responses by their status (other messages are ignored)."""
    message: Any = event.message
    if type(message).__name__ != "C_STORE_RSP":
        return
    status = getattr(message.command_set, "Status", None)
    if status is not None:
        C_STORE_RESPONSES.labels(status_label(int(status))).inc()


#: ``(event, handler)`` pairs for ``AE.start_server(evt_handlers=...)``.
HANDLERS: list[tuple[Any, Any]] = [
    (evt.EVT_ACCEPTED, _accepted),
    (evt.EVT_REJECTED, _rejected),
    (evt.EVT_DIMSE_SENT, _dimse_sent),
]
