"""The verdict a result states, in codes and in words: present, absent, or indeterminate.

Present / absent follow the probability and the operating threshold. When the model's domain
check says the image is unlike those the model was validated on, the verdict is
*indeterminate* whatever the probability: the SR codes it (SCT 82334004) with the reason as
text, and the overlay's caption says it in words. The probability is still reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydicom.sr.coding import Code

from worker.results import codes

OUTSIDE_DOMAIN = "outside the model's validated domain"
"""Reason of an indeterminate verdict (SR text, caption, job timeline)."""


@dataclass(frozen=True)
class DomainResult:
    """The domain check of one image: its score and the model's limit (pass: score <= limit)."""

    score: float
    threshold: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.score) or not math.isfinite(self.threshold):
            raise ValueError("domain score and threshold must be finite numbers")

    @property
    def passed(self) -> bool:
        """The image is like those the model was validated on."""
        return self.score <= self.threshold

    @property
    def reason(self) -> str:
        """The reason text of an indeterminate verdict, with the numbers behind it."""
        return (
            f"{OUTSIDE_DOMAIN} (domain score {self.score:.2f} above the limit "
            f"{self.threshold:.2f} set on the validation images)"
        )


def indeterminate(domain: DomainResult | None) -> bool:
    """True when a domain check was made and the image failed it."""
    return domain is not None and not domain.passed


def verdict_code(probability: float, threshold: float, domain: DomainResult | None) -> Code:
    """Indeterminate outside the domain; else Present at or above the threshold, else Absent."""
    if indeterminate(domain):
        return codes.INDETERMINATE
    return codes.PRESENT if probability >= threshold else codes.ABSENT


def verdict_words(probability: float, threshold: float, domain: DomainResult | None) -> str:
    """The verdict line of the overlay, e.g. ``COVID-19 pattern: PRESENT``."""
    if indeterminate(domain):
        return f"COVID-19 pattern: INDETERMINATE ({OUTSIDE_DOMAIN})"
    return f"COVID-19 pattern: {'PRESENT' if probability >= threshold else 'ABSENT'}"
