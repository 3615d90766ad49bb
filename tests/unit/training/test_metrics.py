"""Metric functions against hand-computed cases and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import (
    average_precision,
    confusion_at,
    pr_points,
    roc_auc,
    roc_points,
    threshold_for_sensitivity,
    threshold_table,
)
from training.operating_points import operating_threshold
from training.sources import pair_auc

Y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
S = [0.9, 0.8, 0.4, 0.3, 0.7, 0.35, 0.2, 0.1, 0.05, 0.3]


def test_confusion_by_hand() -> None:
    c = confusion_at(Y, S, 0.35)
    # positives >= 0.35: 0.9, 0.8, 0.4 -> TP 3, FN 1; negatives >= 0.35: 0.7, 0.35 -> FP 2.
    assert (c.tp, c.fn, c.tn, c.fp) == (3, 1, 4, 2)
    assert c.sensitivity == 0.75
    assert c.specificity == pytest.approx(4 / 6)
    assert c.ppv == pytest.approx(3 / 5)
    assert c.npv == pytest.approx(4 / 5)
    assert c.accuracy == pytest.approx(0.7)
    summary = c.summary()
    lo, hi = summary["sensitivity_ci_wilson"]
    assert lo < 0.75 < hi


def test_threshold_is_inclusive() -> None:
    c = confusion_at([1, 0], [0.5, 0.5], 0.5)
    assert (c.tp, c.fp) == (1, 1)


def test_threshold_for_sensitivity_by_hand() -> None:
    pos = [0.9, 0.8, 0.7, 0.6, 0.5]
    y = [1] * 5 + [0, 0]
    s = [*pos, 0.55, 0.1]
    assert threshold_for_sensitivity(y, s, 0.8) == 0.6  # 4 of 5 positives
    assert threshold_for_sensitivity(y, s, 0.98) == 0.5  # ceil(4.9) = 5: all positives
    assert threshold_for_sensitivity(y, s, 0.2) == 0.9
    t = threshold_for_sensitivity(y, s, 0.6)
    assert confusion_at(y, s, t).sensitivity >= 0.6
    assert confusion_at(y, s, t + 1e-9).sensitivity < 0.6  # the highest such threshold
    with pytest.raises(ValueError):
        threshold_for_sensitivity([0, 0], [0.1, 0.2], 0.98)
    with pytest.raises(ValueError):
        threshold_for_sensitivity(y, s, 0.0)


def test_threshold_reaches_98_percent_on_many_positives() -> None:
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(89), np.zeros(125)].astype(int)
    s = rng.random(214)
    t = threshold_for_sensitivity(y, s, 0.98)
    assert confusion_at(y, s, t).tp == 88  # ceil(0.98 * 89) = 88


def test_auc_and_ap_by_hand() -> None:
    # Pairs (pos, neg): 0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1 -> AUC 3/4. Ranked: pos (P=1, R=1/2),
    # neg, pos (P=2/3, R=1) -> AP = 1/2 * 1 + 1/2 * 2/3.
    y, s = [1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1]
    assert roc_auc(y, s) == pytest.approx(0.75)
    assert average_precision(y, s) == pytest.approx(0.5 + 1 / 3)
    assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts one half
    assert roc_auc([1, 0], [0.2, 0.7]) == pytest.approx(0.0)
    assert math.isnan(roc_auc([1, 1], [0.1, 0.2]))


def test_auc_matches_the_pair_count_on_random_scores() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.5 * y, 2)  # rounded: ties occur
    assert roc_auc(y, s) == pytest.approx(pair_auc(y, s))


def test_threshold_table_and_curves() -> None:
    rows = threshold_table(Y, S, (0.1, 0.5))
    assert [r["threshold"] for r in rows] == [0.1, 0.5]
    assert rows[0]["sensitivity"] == 1.0 and rows[1]["sensitivity"] == 0.5
    pts = roc_points(Y, S)
    assert pts["fpr"][0] == 0.0 and pts["tpr"][-1] == 1.0
    assert all(math.isfinite(t) for t in pts["thresholds"])
    with pytest.raises(ValueError):
        confusion_at([0, 2], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError):
        confusion_at([0, 1], [0.1], 0.5)


def test_operating_point_keeps_val_calls_with_a_margin() -> None:
    y = np.array([1, 1, 1, 1, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.55, 0.1])
    t = operating_threshold(y, s, 0.8)  # exact point 0.6, next lower score 0.55
    assert t == pytest.approx(0.575)
    a, b = confusion_at(y, s, t), confusion_at(y, s, 0.6)
    assert (a.tp, a.fn, a.tn, a.fp) == (b.tp, b.fn, b.tn, b.fp)
    assert operating_threshold(np.array([1, 0]), np.array([0.1, 0.5]), 1.0) == 0.1  # nothing below


def test_curves_of_one_class_are_empty_not_made_up() -> None:
    """scikit-learn draws a 'curve' of one class with a warning; a report shows none."""
    assert roc_points([1, 1, 1], [0.2, 0.5, 0.9]) == {"fpr": [], "tpr": [], "thresholds": []}
    assert roc_points([0, 0], [0.2, 0.5]) == {"fpr": [], "tpr": [], "thresholds": []}
    assert pr_points([0, 0], [0.2, 0.5]) == {"precision": [], "recall": [], "thresholds": []}
    assert len(pr_points([1, 1], [0.2, 0.5])["recall"]) > 0  # positives only: recall is defined
    assert len(roc_points(Y, S)["fpr"]) > 0
