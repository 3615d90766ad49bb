"""95 % confidence intervals for the reported rates.

The paper (Minaee et al., 2020, Section 4.3) gives sensitivity and specificity with the normal
approximation ``r ± z·sqrt(r(1 − r)/N)``; it is shown for comparability, but it collapses to a
zero-width interval at r = 0 or 1 and undercovers for small N, so the Wilson score interval is shown
beside it. The AUC gets a stratified percentile bootstrap (positives and negatives resampled
separately, so every replicate keeps both classes).
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054
"""Two-sided 95 % standard-normal quantile."""


def _check_counts(successes: int, n: int) -> None:
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")


def normal_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The paper's normal-approximation (Wald) interval, clipped to [0, 1]; NaN when n = 0."""
    _check_counts(successes, n)
    if n == 0:
        return (math.nan, math.nan)
    rate = successes / n
    half = z * math.sqrt(rate * (1.0 - rate) / n)
    return (max(0.0, rate - half), min(1.0, rate + half))


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (Wilson, 1927); NaN when n = 0."""
    _check_counts(successes, n)
    if n == 0:
        return (math.nan, math.nan)
    rate = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (rate + z2 / (2 * n)) / denom
    half = z * math.sqrt(rate * (1.0 - rate) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half); equals sklearn's value.

    Vectorised and dependency-free so the bootstrap can call it thousands of times.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty_like(sorted_s)
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks_sorted = np.repeat(avg, counts)
    ranks[order] = ranks_sorted
    rank_sum = ranks[y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def bootstrap_auc_interval(
    labels: np.ndarray,
    scores: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Stratified percentile-bootstrap interval of the ROC AUC; NaN if a class is missing."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0 or n_boot < 1:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    boot_y = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
    aucs = np.empty(n_boot)
    for i in range(n_boot):
        sample = np.concatenate(
            [pos[rng.integers(0, pos.size, pos.size)], neg[rng.integers(0, neg.size, neg.size)]]
        )
        aucs[i] = rank_auc(boot_y, sample)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(aucs, [tail, 100.0 - tail])
    return (float(lo), float(hi))
