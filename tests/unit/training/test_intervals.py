"""Confidence intervals against published values and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.intervals import (
    bootstrap_auc_interval,
    normal_interval,
    rank_auc,
    wilson_interval,
)


# Newcombe (1998), Stat Med 17:857, Table I: Wald ("simple asymptotic") and Wilson intervals.
@pytest.mark.parametrize(
    ("k", "n", "wald", "wilson"),
    [
        (81, 263, (0.2522, 0.3638), (0.2553, 0.3662)),
        (15, 148, (0.0527, 0.1500), (0.0624, 0.1605)),
        (0, 20, (0.0, 0.0), (0.0, 0.1611)),
        (1, 29, (0.0, 0.1009), (0.0061, 0.1718)),
    ],
)
def test_intervals_match_newcombe(
    k: int, n: int, wald: tuple[float, float], wilson: tuple[float, float]
) -> None:
    assert normal_interval(k, n) == pytest.approx(wald, abs=1e-4)
    assert wilson_interval(k, n) == pytest.approx(wilson, abs=1e-4)


def test_normal_interval_is_the_papers_formula() -> None:
    # r ± 1.96 sqrt(r(1-r)/N) for r = 0.9, N = 100.
    lo, hi = normal_interval(90, 100, z=1.96)
    half = 1.96 * math.sqrt(0.9 * 0.1 / 100)
    assert (lo, hi) == pytest.approx((0.9 - half, 0.9 + half))
    assert normal_interval(98, 100)[1] == 1.0  # clipped to [0, 1]


def test_intervals_reject_bad_counts_and_handle_empty() -> None:
    with pytest.raises(ValueError):
        wilson_interval(5, 4)
    with pytest.raises(ValueError):
        normal_interval(-1, 4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_rank_auc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.3 * y, 1)  # many ties
    assert rank_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert rank_auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert rank_auc([1, 0], [0.5, 0.5]) == 0.5
    assert math.isnan(rank_auc([1, 1], [0.2, 0.3]))


def test_bootstrap_interval_brackets_auc_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(60), np.zeros(90)].astype(int)
    s = np.r_[rng.normal(1.0, 1.0, 60), rng.normal(0.0, 1.0, 90)]
    auc = roc_auc_score(y, s)
    lo, hi = bootstrap_auc_interval(y, s, n_boot=500, seed=1)
    assert lo < auc < hi
    assert 0.05 < hi - lo < 0.3
    assert bootstrap_auc_interval(y, s, n_boot=500, seed=1) == (lo, hi)
    assert all(math.isnan(v) for v in bootstrap_auc_interval(np.ones(5), np.ones(5)))
