"""Classification metrics of the paper: sensitivity / specificity at thresholds, ROC, PR.

Scores are COVID-19 probabilities; an image is called COVID-19 when ``score >= threshold`` (the
same rule the worker applies with the card's threshold). ROC, AUC, PR and average precision come
from scikit-learn; the counting functions are small enough to check by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from training.intervals import normal_interval, wilson_interval

NOT_DEFINED_ONE_CLASS = "not defined (one class)"
"""What reports say for an AUC of images of one class only (e.g. a site's positive cases): it
has no ROC curve, while sensitivity (or specificity) still is defined."""

PAPER_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Thresholds of the sensitivity/specificity tables (the paper's Tables 2-5 use a similar range)."""


def _arrays(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (non-COVID) or 1 (COVID-19)")
    return y, s


@dataclass(frozen=True)
class Confusion:
    """Counts at one threshold (positive = COVID-19)."""

    threshold: float
    tp: int
    fn: int
    tn: int
    fp: int

    @property
    def n_pos(self) -> int:
        return self.tp + self.fn

    @property
    def n_neg(self) -> int:
        return self.tn + self.fp

    @property
    def sensitivity(self) -> float:
        """TP / (TP + FN); NaN without positives."""
        return self.tp / self.n_pos if self.n_pos else math.nan

    @property
    def specificity(self) -> float:
        """TN / (TN + FP); NaN without negatives."""
        return self.tn / self.n_neg if self.n_neg else math.nan

    @property
    def ppv(self) -> float:
        """Precision, TP / (TP + FP); NaN when nothing is called positive."""
        called = self.tp + self.fp
        return self.tp / called if called else math.nan

    @property
    def npv(self) -> float:
        """TN / (TN + FN); NaN when nothing is called negative."""
        called = self.tn + self.fn
        return self.tn / called if called else math.nan

    @property
    def accuracy(self) -> float:
        total = self.n_pos + self.n_neg
        return (self.tp + self.tn) / total if total else math.nan

    def summary(self) -> dict[str, float | int | list[float]]:
        """Counts, rates and both 95 % intervals for sensitivity and specificity (for JSON)."""
        return {
            **asdict(self),
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "ppv": self.ppv,
            "npv": self.npv,
            "accuracy": self.accuracy,
            "sensitivity_ci_normal": list(normal_interval(self.tp, self.n_pos)),
            "sensitivity_ci_wilson": list(wilson_interval(self.tp, self.n_pos)),
            "specificity_ci_normal": list(normal_interval(self.tn, self.n_neg)),
            "specificity_ci_wilson": list(wilson_interval(self.tn, self.n_neg)),
        }


def confusion_at(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float
) -> Confusion:
    """Confusion counts when ``score >= threshold`` is called COVID-19."""
    y, s = _arrays(labels, scores)
    called = s >= threshold
    pos = y == 1
    return Confusion(
        threshold=float(threshold),
        tp=int(np.sum(called & pos)),
        fn=int(np.sum(~called & pos)),
        tn=int(np.sum(~called & ~pos)),
        fp=int(np.sum(called & ~pos)),
    )


def threshold_for_sensitivity(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, target: float
) -> float:
    """The highest threshold whose sensitivity is at least ``target`` (the paper's 98 % point).

    With the positives' scores sorted high to low, it is the k-th of them, k = ceil(target · P):
    any higher threshold loses a positive, any lower one only adds false positives.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    y, s = _arrays(labels, scores)
    pos_scores = np.sort(s[y == 1])[::-1]
    if pos_scores.size == 0:
        raise ValueError("cannot choose a threshold for sensitivity without COVID-19 images")
    k = math.ceil(target * pos_scores.size - 1e-9)
    return float(pos_scores[max(k, 1) - 1])


def threshold_table(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    thresholds: Sequence[float] = PAPER_THRESHOLDS,
) -> list[dict[str, float | int | list[float]]]:
    """Sensitivity and specificity with both intervals at each threshold (Tables 2-5)."""
    return [confusion_at(labels, scores, t).summary() for t in thresholds]


def roc_auc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """ROC AUC (scikit-learn); NaN when only one class is present."""
    y, s = _arrays(labels, scores)
    if len(np.unique(y)) < 2:
        return math.nan
    return float(roc_auc_score(y, s))


def average_precision(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> float:
    """Average precision, the area under the PR curve (scikit-learn); NaN without positives."""
    y, s = _arrays(labels, scores)
    if not y.any():
        return math.nan
    return float(average_precision_score(y, s))


def roc_points(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> dict[str, list[float]]:
    """ROC curve points (fpr, tpr, thresholds) from scikit-learn, as lists for JSON and plots;
    empty with one class only (a curve of one class is not defined, as its AUC is not)."""
    y, s = _arrays(labels, scores)
    if len(np.unique(y)) < 2:
        return {"fpr": [], "tpr": [], "thresholds": []}
    fpr, tpr, thr = roc_curve(y, s)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": _finite(thr)}


def pr_points(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> dict[str, list[float]]:
    """Precision-recall curve points from scikit-learn; empty without positives (recall is not
    defined then, as average precision is not)."""
    y, s = _arrays(labels, scores)
    if not y.any():
        return {"precision": [], "recall": [], "thresholds": []}
    precision, recall, thr = precision_recall_curve(y, s)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "thresholds": _finite(thr)}


def _finite(values: np.ndarray) -> list[float]:
    """JSON has no infinity: scikit-learn's leading ``inf`` threshold becomes 1.0 + epsilon."""
    return [float(v) if np.isfinite(v) else 1.0 + 1e-9 for v in values]
