"""How a RIS send can fail: worth retrying (unreachable, busy) or not (it refused the message).

The destination types (``worker.destinations.hl7``, ``worker.destinations.fhir``) turn these into
the outbox's retry-with-back-off or failed-with-reason; the messages name the destination and the
receiver's reason, never a patient identifier.
"""

from __future__ import annotations


class RisError(Exception):
    """A RIS message was not accepted."""


class RisUnavailable(RisError):
    """The RIS could not be reached, timed out, or answered "try later" (5xx): retry."""


class RisRefused(RisError):
    """The RIS read the message and refused it (HL7 AE/AR, HTTP 4xx): resending will not help."""
