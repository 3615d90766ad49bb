"""Destination types of the outbox: one module per type behind :mod:`worker.destinations.base`."""

from worker.destinations.base import (
    DeliveryError,
    Destination,
    PermanentError,
    TransientError,
    open_destination,
    register,
    registry,
    type_for,
)

__all__ = [
    "DeliveryError",
    "Destination",
    "PermanentError",
    "TransientError",
    "open_destination",
    "register",
    "registry",
    "type_for",
]
