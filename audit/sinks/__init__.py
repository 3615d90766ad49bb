"""Where audit events go: each sink writes the events it records, in its own format.

A sink has ``write(event)`` (called by :class:`audit.recorder.Recorder` for every event;
it may ignore events it does not record), ``flush(timeout_s)`` and ``close(timeout_s)``.
"""

from __future__ import annotations

from typing import Protocol

from audit.events import AuditEvent


class Sink(Protocol):
    """One destination of audit events."""

    def write(self, event: AuditEvent) -> None:
        """Record ``event`` (or nothing, for an event this sink does not record)."""

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until what was written has left; False when that took longer."""

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush (for up to ``timeout_s``) and release the file or connection."""
