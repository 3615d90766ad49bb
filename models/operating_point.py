"""Named operating points of a model: the thresholds a card offers and what each one rests on.

A card may hold two points, chosen by the rule "the highest threshold whose sensitivity is at least
the target" (:func:`training.metrics.threshold_for_sensitivity`): ``paper`` at 98 % sensitivity
(the paper's point) and ``clinical`` at 90 %. The highest threshold that keeps the sensitivity
target is also the one with the highest specificity (specificity never falls as the threshold
rises), so ``clinical`` is "the highest specificity with sensitivity >= 90 %". The service picks one
by the ``threshold_policy`` setting; the result objects say which point and value gave the finding.

This module only describes the points (so serving can read them without the training code);
:mod:`training.operating_points` computes them from labelled predictions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from common.records import known_fields

PAPER = "paper"
CLINICAL = "clinical"

TARGET_SENSITIVITY: dict[str, float] = {PAPER: 0.98, CLINICAL: 0.90}
"""The sensitivity each named point is chosen for; its keys are the known point names."""

POINT_NAMES: tuple[str, ...] = tuple(TARGET_SENSITIVITY)
"""Known operating point names (also the values of the ``threshold_policy`` setting)."""

N_BOOT = 2000
"""Bootstrap resamples behind the points' intervals unless a caller asks otherwise."""

UNNAMED = "card"
"""Name of the single threshold of a card whose method text matches no named point."""


def describe(name: str) -> str:
    """Human wording of a point, e.g. ``"clinical (sensitivity >= 90 %)"``."""
    target = TARGET_SENSITIVITY.get(name)
    if target is None:
        return f"{name} threshold"
    return f"{name} (sensitivity >= {target * 100:g} %)"


def name_from_method(method: str) -> str:
    """The point name that a card's ``threshold_method`` text describes (older cards).

    Cards written before they held named points have one threshold and a sentence such as
    "highest threshold with sensitivity >= 0.98 on the val split ..."; its target names the point.
    Any other method (e.g. "default 0.5 (not tuned)") gives :data:`UNNAMED`.
    """
    match = re.search(r"sensitivity\s*>=\s*([0-9.]+)", method)
    if match:
        try:
            target = float(match.group(1).rstrip("."))
        except ValueError:
            return UNNAMED
        for name, wanted in TARGET_SENSITIVITY.items():
            if math.isclose(target, wanted):
                return name
    return UNNAMED


def _interval(value: Any, what: str) -> tuple[float, float] | None:
    if value is None:
        return None
    lo, hi = (float(v) for v in value)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{what} interval must be finite with low <= high, got ({lo}, {hi})")
    return (lo, hi)


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold with its sensitivity and specificity on the data it was chosen on.

    The intervals are 95 % stratified bootstrap intervals (``ci_method`` says how many resamples);
    ``None`` where the point was computed without them (e.g. the one threshold of an older card).
    """

    threshold: float
    method: str
    """How the threshold was chosen, in words (the data, the rule, the margin)."""
    sensitivity: float | None = None
    specificity: float | None = None
    n_pos: int | None = None
    """Number of COVID-19 images the point rests on."""
    n_neg: int | None = None
    """Number of non-COVID images the specificity rests on."""
    threshold_ci: tuple[float, float] | None = None
    sensitivity_ci: tuple[float, float] | None = None
    specificity_ci: tuple[float, float] | None = None
    ci_method: str = ""

    def __post_init__(self) -> None:
        threshold = float(self.threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"operating point threshold must be in [0, 1], got {threshold}")
        object.__setattr__(self, "threshold", threshold)
        for rate in ("sensitivity", "specificity"):
            value = getattr(self, rate)
            if value is not None and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{rate} must be in [0, 1], got {value}")
        for count in ("n_pos", "n_neg"):
            value = getattr(self, count)
            if value is not None and int(value) < 0:
                raise ValueError(f"{count} must not be negative, got {value}")
        for ci in ("threshold_ci", "sensitivity_ci", "specificity_ci"):
            object.__setattr__(self, ci, _interval(getattr(self, ci), ci))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (intervals as lists)."""
        data = asdict(self)
        for ci in ("threshold_ci", "sensitivity_ci", "specificity_ci"):
            if data[ci] is not None:
                data[ci] = list(data[ci])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OperatingPoint:
        """From :meth:`to_dict` output; unknown keys are an error."""
        return cls(**known_fields(cls, data, "operating point fields"))


def validate_points(points: Mapping[str, Any]) -> dict[str, OperatingPoint]:
    """``points`` as named :class:`OperatingPoint` objects; unknown names are an error."""
    out: dict[str, OperatingPoint] = {}
    for name, point in points.items():
        if name not in POINT_NAMES:
            raise ValueError(f"unknown operating point {name!r}; known: {', '.join(POINT_NAMES)}")
        out[name] = point if isinstance(point, OperatingPoint) else OperatingPoint.from_dict(point)
    return out
