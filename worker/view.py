"""The view check in the worker: after the header gate, before the classifier.

The header gate (:mod:`worker.gate`) has accepted the instance: CR/DX, chest or no Body Part,
View Position PA, AP or absent. The pixels (:mod:`models.viewcheck`) now say whether the image is
a frontal chest radiograph, and where they say otherwise they decide, whatever the header says:

- pixels ``lateral`` -> rejected, reason :data:`LATERAL_REASON`;
- pixels ``other`` (a CT slice or localiser, another body part) -> rejected, :data:`OTHER_REASON`;
- pixels ``frontal`` -> analysed; the job's timeline records the check either way.

A header that says lateral (View Position LL, RL, ...) is rejected by the gate before the pixels
are looked at, even when the pixels look frontal: analysing needs the header and the pixels to
agree, so a lateral the check misses (it recognises about 98 % of them) is still caught when its
header is right, while a frontal film with a wrong "LL" costs one image not analysed, which its
timeline explains. Setting ``model.view_check`` (default on) turns the check off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from models.viewcheck import FRONTAL, LATERAL, ViewResult, shipped

log = logging.getLogger(__name__)

LATERAL_REASON = "lateral view (from the image)"
"""The job's rejection reason when the pixels show a lateral chest radiograph."""

OTHER_REASON = "not a chest radiograph (from the image)"
"""The job's rejection reason when the pixels show a CT image, a localiser or another body part."""


@dataclass(frozen=True)
class ViewVerdict:
    """Outcome of :func:`check`: ``reason`` is None when the image is analysed; ``note`` is the
    timeline text (the check's version, its probabilities, what the header said)."""

    result: ViewResult
    version: str
    header_view: str | None
    reason: str | None

    @property
    def ok(self) -> bool:
        """True when the image goes on to the classifier."""
        return self.reason is None

    @property
    def note(self) -> str:
        """E.g. ``view check viewcheck-1: lateral (frontal 0.01, lateral 0.98, other 0.01);
        header View Position (none)``."""
        probs = ", ".join(f"{k} {v:.2f}" for k, v in self.result.probabilities.items())
        header = self.header_view or "(none)"
        agree = "" if self.agrees else ": the image decides"
        return (
            f"view check {self.version}: {self.result.view} ({probs}); "
            f"header View Position {header}{agree}"
        )

    @property
    def agrees(self) -> bool:
        """Whether the header stated the view the pixels show (absent: it did not)."""
        return self.header_view is not None and self.result.frontal


def _header_view(ds: Dataset) -> str | None:
    value = ds.get("ViewPosition")
    text = str(value).strip().upper() if value is not None else ""
    return text or None


def check(ds: Dataset, image: np.ndarray) -> ViewVerdict:
    """The view of ``image`` (the dataset's pixels as the classifier gets them) and what follows.

    Loads the shipped check on first use; a check whose weights do not match their card raises
    ``ValueError`` (the job then fails: images must not pass unchecked).
    """
    checker = shipped()
    result = checker(image)
    reason = None
    if result.view != FRONTAL:
        reason = LATERAL_REASON if result.view == LATERAL else OTHER_REASON
    verdict = ViewVerdict(result, checker.version, _header_view(ds), reason)
    if not verdict.ok:
        log.info("view check rejected SOPInstanceUID=%s: %s", ds.get("SOPInstanceUID", "?"), reason)
    return verdict
