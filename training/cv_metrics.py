"""What a cross-validation measures on each held-out fold, and its summary as mean ± sd.

Per fold (and training seed), from the held-out fold's labels, probabilities and rows:

- ``auc``: pooled ROC AUC (:func:`training.metrics.roc_auc`);
- ``within_source_auc``: the AUC of the pairs that never cross a source
  (:func:`training.sources.pooled_within_source_auc`, the metric training selects by);
- ``specificity_at_95`` / ``specificity_at_98``: specificity at the highest threshold that keeps
  95 % / 98 % sensitivity *on this fold's own predictions* (the rule of
  :func:`training.operating_points.operating_threshold`, the card's rule);
- ``nih_no_finding_called``: the share of the fold's NIH "No Finding" films at or above that
  98 % point (the normal films a PACS would see flagged). The point is the fold's own, not one
  chosen on the other folds' predictions: those come from other models with other
  calibrations, so their threshold would measure the calibration gap, not this model;
- ``nema_cr_probability``: the fold model's probability for the NEMA sample CR (the shared
  ``RG1_UNCR.dcm``, a normal adult chest), and ``nema_cr_present``: 1 when it is at or above the
  fold's 98 % point.

A metric a fold cannot define (AUC with one class, a sensitivity point without COVID-19 films, no
NIH "No Finding" film, no NEMA image) is NaN there and left out of the summary, which says over
how many folds it is. The summary is the mean and the sample standard deviation (ddof 1) over
all (fold, seed) results: the fold-to-fold spread is what a recipe difference must exceed.
Pure numpy: ``compare`` reads a summary without torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.baseline import source_name
from training.manifest import ManifestRow
from training.metrics import NOT_DEFINED_ONE_CLASS, confusion_at, roc_auc
from training.operating_points import operating_threshold
from training.sources import pooled_within_source_auc

NIH_SOURCE = "nih_chestxray8"
"""The source whose "No Finding" films stand for the normal films a PACS routes to the node."""

CV_METRICS: dict[str, str] = {
    "auc": "pooled AUC",
    "within_source_auc": "within-source AUC",
    "specificity_at_95": "specificity at 95 % sensitivity",
    "specificity_at_98": "specificity at 98 % sensitivity",
    "nih_no_finding_called": 'NIH "No Finding" called COVID-19 (98 % point)',
    "nema_cr_probability": "NEMA CR probability",
    "nema_cr_present": "NEMA CR called COVID-19 (98 % point)",
}
"""Every per-fold metric, in table order, with its label."""

HEADLINE: tuple[str, ...] = (
    "auc",
    "within_source_auc",
    "specificity_at_95",
    "specificity_at_98",
    "nih_no_finding_called",
    "nema_cr_probability",
)
"""The metrics shown when recipes stand side by side (``compare --cv``, ``cv-compare``):
every :data:`CV_METRICS` value but the NEMA CR's called share, which its probability and the
98 % point already say."""

PERCENT = frozenset(
    {"specificity_at_95", "specificity_at_98", "nih_no_finding_called", "nema_cr_present"}
)
"""Metrics shown as percentages."""

SUMMARY_FILE = "cv.json"
"""The summary a cross-validation writes and ``compare --cv`` reads."""


def nih_no_finding(rows: Sequence[ManifestRow]) -> np.ndarray:
    """Boolean mask of the NIH "No Finding" films among ``rows``: the normal films a PACS routes
    to the node."""
    return np.array(
        [r.source == NIH_SOURCE and r.finding_group == "no_finding" for r in rows], dtype=bool
    )


def point_at(labels: np.ndarray, probs: np.ndarray, target: float) -> float:
    """The threshold at ``target`` sensitivity on these predictions; NaN without COVID-19."""
    if not (np.asarray(labels) == 1).any():
        return math.nan
    return operating_threshold(labels, probs, target)


def fold_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    rows: Sequence[ManifestRow],
    nema_probability: float | None = None,
) -> dict[str, float]:
    """Every :data:`CV_METRICS` value of one held-out fold (NaN where not defined)."""
    y = np.asarray(labels).astype(int)
    s = np.asarray(probs, dtype=np.float64)
    out: dict[str, float] = {
        "auc": roc_auc(y, s),
        "within_source_auc": pooled_within_source_auc(y, s, [source_name(r) for r in rows]),
    }
    thresholds = {}
    for target in (95, 98):
        t = point_at(y, s, target / 100)
        thresholds[target] = t
        spec = confusion_at(y, s, t).specificity if math.isfinite(t) else math.nan
        out[f"specificity_at_{target}"] = spec
    t98 = thresholds[98]
    normal = nih_no_finding(rows)
    out["nih_no_finding_called"] = (
        float((s[normal] >= t98).mean()) if normal.any() and math.isfinite(t98) else math.nan
    )
    nema = math.nan if nema_probability is None else float(nema_probability)
    out["nema_cr_probability"] = nema
    out["nema_cr_present"] = (
        float(nema >= t98) if math.isfinite(nema) and math.isfinite(t98) else math.nan
    )
    out["threshold_at_98"] = t98
    return out


def calls_at(
    threshold: float,
    probs: np.ndarray,
    rows: Sequence[ManifestRow],
    nema_probabilities: Sequence[float],
) -> dict[str, Any]:
    """What a pooled out-of-fold point calls COVID-19 beyond its sensitivity and specificity.

    ``nih_no_finding_called`` (with its count ``nih_no_finding_n``): the share of the NIH "No
    Finding" films among ``rows`` (with out-of-fold ``probs``) at or above ``threshold``;
    ``nema_cr_called`` of ``nema_cr_of``: how many fold models put the NEMA sample CR at or above
    it (one probability per fold model, NaN where none was scored). These are the issue's
    clinical goals read at the point a card would store, where :func:`fold_metrics` reads them at
    each fold's own 98 % point.
    """
    s = np.asarray(probs, dtype=np.float64)
    normal = nih_no_finding(rows)
    nema = np.array([p for p in nema_probabilities if p is not None and math.isfinite(p)])
    return {
        "nih_no_finding_called": float((s[normal] >= threshold).mean()) if normal.any() else None,
        "nih_no_finding_n": int(normal.sum()),
        "nema_cr_called": int((nema >= threshold).sum()),
        "nema_cr_of": int(nema.size),
    }


def mean_sd(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample sd (ddof 1) of the finite values, with their count and the total.

    ``mean`` is None when no value is finite (e.g. AUC on single-class folds), ``sd`` when fewer
    than two are.
    """
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    return {
        "mean": float(finite.mean()) if finite.size else None,
        "sd": float(finite.std(ddof=1)) if finite.size >= 2 else None,
        "n": int(finite.size),
        "of": len(values),
    }


def summarise(per_fold: Sequence[dict[str, float]]) -> dict[str, dict[str, Any]]:
    """:func:`mean_sd` of every :data:`CV_METRICS` key over the (fold, seed) results."""
    return {key: mean_sd([m.get(key, math.nan) for m in per_fold]) for key in CV_METRICS}


def format_mean_sd(entry: dict[str, Any] | None, key: str = "") -> str:
    """``0.812 ± 0.034`` (percent for :data:`PERCENT` keys); "not defined" without a value;
    the count when some folds could not define it; ``-`` for no entry."""
    if not entry:
        return "-"
    if entry.get("mean") is None:
        return NOT_DEFINED_ONE_CLASS if key in {"auc", "within_source_auc"} else "not defined"
    pct = key in PERCENT
    scale, unit, digits = (100.0, " %", 1) if pct else (1.0, "", 3)
    text = f"{entry['mean'] * scale:.{digits}f}"
    if entry.get("sd") is not None:
        text += f" ± {entry['sd'] * scale:.{digits}f}"
    text += unit
    if entry.get("n", 0) < entry.get("of", 0):
        text += f" ({entry['n']} of {entry['of']} folds)"
    return text


def read_summary(folder: Path) -> dict[str, Any]:
    """The summary a cross-validation wrote to ``folder`` (or the file itself)."""
    path = folder / SUMMARY_FILE if folder.is_dir() else folder
    if not path.is_file():
        raise FileNotFoundError(f"no cross-validation summary at {path}")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if "summary" not in data:
        raise ValueError(f"{path} is not a cross-validation summary (no 'summary')")
    return data
