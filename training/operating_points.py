"""Both operating points of a model, with bootstrap intervals, from labelled predictions.

Given labels (1 = COVID-19) and COVID-19 probabilities, e.g. the out-of-fold predictions of a
cross-validation or a site's own labelled films, :func:`operating_points` returns the named points
of :mod:`models.operating_point`:

* ``paper``: the highest threshold with sensitivity >= 98 % (the paper's point);
* ``clinical``: the highest specificity with sensitivity >= 90 %, which is the highest threshold
  with sensitivity >= 90 % (specificity never falls as the threshold rises).

Both use one rule, :func:`operating_threshold`: :func:`training.metrics.threshold_for_sensitivity`
lowered halfway to the next lower score (robust to 1e-7 jitter between engines, same calls on the
data). Sensitivity and specificity are counted with :func:`training.metrics.confusion_at`.

The intervals come from a stratified bootstrap: positives and negatives are resampled separately
(every resample keeps both classes and their counts) and the threshold is chosen again on each
resample by the same rule. The threshold's interval is the percentile interval of those
thresholds: how far the point itself moves with other films of the same kind. The sensitivity and
specificity intervals count each re-chosen threshold's calls on the films its resample left out
(out of bag, about a third of each class): what films that did not choose the threshold would see.
Counted on the resample itself, the sensitivity could never fall below the target and its
interval would say nothing; out of bag, a threshold set by the lowest few positive scores shows
how often new positives fall below it. The seed is fixed: the same input gives the same card.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.card import ModelCard
from models.operating_point import N_BOOT, PAPER, TARGET_SENSITIVITY, OperatingPoint
from training.metrics import confusion_at, threshold_for_sensitivity

LEVEL = 0.95
"""Two-sided level of the intervals."""


def operating_threshold(
    labels: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray, target: float
) -> float:
    """Threshold at ``target`` sensitivity on these scores, with a safety margin.

    :func:`threshold_for_sensitivity` returns the score of the last COVID-19 image that must be
    called positive; a threshold exactly on it flips that image when another engine (ONNX, TF32,
    bf16) computes its probability 1e-7 lower. The threshold is therefore moved halfway down to
    the next lower score: the same calls on these images, robust to jitter.
    """
    t = threshold_for_sensitivity(labels, probs, target)
    scores = np.asarray(probs, dtype=np.float64)
    below = scores[scores < t]
    return float((t + below.max()) / 2.0) if below.size else t


def operating_points(
    labels: Sequence[int] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    data: str = "the given predictions",
) -> dict[str, OperatingPoint]:
    """The ``paper`` and ``clinical`` points of these predictions, each with 95 % intervals.

    ``data`` names the predictions in each point's method text (e.g. "out-of-fold predictions of
    train + val"). ``n_boot`` = 0 skips the intervals. Raises :class:`ValueError` unless both
    COVID-19 and non-COVID images are present (a specificity needs negatives).
    """
    y = np.asarray(labels).astype(int).ravel()
    s = np.asarray(probabilities, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and probabilities ({s.size}) differ in length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (non-COVID) or 1 (COVID-19)")
    if not np.isfinite(s).all():
        raise ValueError("probabilities must be finite")
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            "operating points need both COVID-19 and non-COVID images "
            f"(got {n_pos} COVID-19 and {n_neg} non-COVID): sensitivity needs positives, "
            "specificity needs negatives"
        )
    if n_boot < 0:
        raise ValueError(f"n_boot must not be negative, got {n_boot}")

    names = tuple(TARGET_SENSITIVITY)
    boot = _bootstrap(y, s, n_boot, seed) if n_boot else None
    ci_method = (
        f"stratified bootstrap, {n_boot} resamples, seed {seed}: threshold chosen again on "
        "each resample (percentile interval); sensitivity and specificity of that threshold "
        "on the films the resample left out (out-of-bag percentile interval)"
        if n_boot
        else ""
    )
    points: dict[str, OperatingPoint] = {}
    for i, name in enumerate(names):
        target = TARGET_SENSITIVITY[name]
        threshold = operating_threshold(y, s, target)
        conf = confusion_at(y, s, threshold)
        cis: dict[str, tuple[float, float] | None] = {
            "threshold_ci": None,
            "sensitivity_ci": None,
            "specificity_ci": None,
        }
        if boot is not None:
            for j, key in enumerate(cis):
                cis[key] = _percentile_interval(boot[:, i, j])
        points[name] = OperatingPoint(
            threshold=threshold,
            method=(
                f"highest threshold with sensitivity >= {target:g} on {data} "
                f"({n_pos} COVID-19 / {n_neg} non-COVID images), lowered halfway to the next "
                "score; COVID-19 when probability >= threshold"
            ),
            sensitivity=conf.sensitivity,
            specificity=conf.specificity,
            n_pos=n_pos,
            n_neg=n_neg,
            ci_method=ci_method,
            **cis,
        )
    return points


def card_with_points(card: ModelCard, points: dict[str, OperatingPoint]) -> ModelCard:
    """``card`` holding ``points``; its ``threshold`` and ``threshold_method`` become the paper
    point's (the card's threshold is the paper point, for every reader that predates the points).
    """
    if PAPER not in points:
        raise ValueError(f"the points must include {PAPER!r}: it is the card's threshold")
    paper = points[PAPER]
    return card.replace(
        threshold=paper.threshold,
        threshold_method=paper.method,
        operating_points={name: point.to_dict() for name, point in points.items()},
    )


def _bootstrap(y: np.ndarray, s: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Array (n_boot, points, 3): the threshold chosen on each stratified resample, and its
    sensitivity and specificity on the films that resample left out (NaN where none of a class
    was left out)."""
    rng = np.random.default_rng(seed)
    pos, neg = s[y == 1], s[y == 0]
    boot_y = np.concatenate([np.ones(pos.size, int), np.zeros(neg.size, int)])
    targets = list(TARGET_SENSITIVITY.values())
    out = np.empty((n_boot, len(targets), 3))
    for b in range(n_boot):
        drawn_pos = rng.integers(0, pos.size, pos.size)
        drawn_neg = rng.integers(0, neg.size, neg.size)
        sample = np.concatenate([pos[drawn_pos], neg[drawn_neg]])
        left_pos, left_neg = _left_out(drawn_pos, pos.size), _left_out(drawn_neg, neg.size)
        oob_y = np.concatenate([np.ones(left_pos.size, int), np.zeros(left_neg.size, int)])
        oob_s = np.concatenate([pos[left_pos], neg[left_neg]])
        for i, target in enumerate(targets):
            t = operating_threshold(boot_y, sample, target)
            conf = confusion_at(oob_y, oob_s, t)
            out[b, i] = (t, conf.sensitivity, conf.specificity)
    return out


def _left_out(drawn: np.ndarray, size: int) -> np.ndarray:
    """Indices in ``range(size)`` that ``drawn`` does not contain."""
    kept = np.ones(size, dtype=bool)
    kept[drawn] = False
    return np.flatnonzero(kept)


def _percentile_interval(values: np.ndarray) -> tuple[float, float] | None:
    """Percentile interval of the finite ``values``; None when there are none."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    tail = (1.0 - LEVEL) / 2.0 * 100.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return (float(lo), float(hi))
