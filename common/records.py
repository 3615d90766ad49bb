"""Records read back from JSON (model cards, training configs): unknown keys are errors.

A card or config written by hand or by a newer version may carry a key this code does not know;
silently dropping it would run something other than what the file says, so every ``from_dict``
of a dataclass record refuses it with the names of the keys, through :func:`known_fields`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any


def known_fields(record: type[Any], data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``data`` as a dict of keyword arguments for the dataclass ``record``.

    Raises ``ValueError`` naming every key ``record`` has no field for
    (``unknown model card fields: a, b``); ``what`` names the record in that message.
    """
    unknown = sorted(set(data) - {f.name for f in fields(record)})
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(unknown)}")
    return dict(data)
