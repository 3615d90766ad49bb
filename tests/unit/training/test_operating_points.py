"""Both operating points against a hand-computed case, their intervals, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from models.operating_point import CLINICAL, PAPER
from training.metrics import confusion_at
from training.operating_points import operating_points

# Ten COVID-19 and ten non-COVID scores, all distinct.
POS = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.5, 0.3]
NEG = [0.55, 0.45, 0.4, 0.35, 0.25, 0.2, 0.15, 0.1, 0.05, 0.0]
Y = [1] * len(POS) + [0] * len(NEG)
S = POS + NEG


def test_known_answer() -> None:
    points = operating_points(Y, S, n_boot=0, data="hand data")
    paper, clinical = points[PAPER], points[CLINICAL]
    # 98 % of 10 positives: all 10 -> the lowest positive 0.3, halfway to the next score 0.25.
    assert paper.threshold == pytest.approx(0.275)
    # Negatives >= 0.275: 0.55, 0.45, 0.4, 0.35 -> specificity 6/10.
    assert (paper.sensitivity, paper.specificity) == (pytest.approx(1.0), pytest.approx(0.6))
    # 90 %: 9 positives -> 0.5, halfway to 0.45; only the negative 0.55 is above -> 9/10.
    assert clinical.threshold == pytest.approx(0.475)
    assert (clinical.sensitivity, clinical.specificity) == (pytest.approx(0.9), pytest.approx(0.9))
    assert (paper.n_pos, paper.n_neg) == (10, 10)
    assert paper.threshold_ci is None and paper.ci_method == ""
    assert "sensitivity >= 0.98 on hand data (10 COVID-19 / 10 non-COVID" in paper.method
    assert "sensitivity >= 0.9 on hand data" in clinical.method


def test_point_rates_are_the_metrics_module_counts() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    for point in operating_points(y, s, n_boot=0).values():
        conf = confusion_at(y, s, point.threshold)
        assert point.sensitivity == conf.sensitivity
        assert point.specificity == conf.specificity


def test_intervals_contain_the_point_and_are_reproducible() -> None:
    rng = np.random.default_rng(7)
    y = np.r_[np.ones(120, int), np.zeros(240, int)]
    s = np.clip(np.r_[rng.normal(0.7, 0.15, 120), rng.normal(0.35, 0.15, 240)], 0, 1)
    points = operating_points(y, s, n_boot=400, seed=1)
    for point in points.values():
        for value, ci in (
            (point.threshold, point.threshold_ci),
            (point.sensitivity, point.sensitivity_ci),
            (point.specificity, point.specificity_ci),
        ):
            assert ci is not None and value is not None
            assert ci[0] <= value <= ci[1]
            assert ci[0] < ci[1]  # the resamples do move the point
        assert "400 resamples, seed 1" in point.ci_method
    # Out of bag, new positives can fall below a threshold that kept 98 % of those it was
    # chosen on: the interval reaches below the target (on the resample itself it never would).
    paper_sens_ci = points[PAPER].sensitivity_ci
    assert paper_sens_ci is not None and paper_sens_ci[0] < 0.98
    assert points[CLINICAL].threshold > points[PAPER].threshold
    assert points[CLINICAL].specificity >= points[PAPER].specificity  # type: ignore[operator]
    assert operating_points(y, s, n_boot=400, seed=1) == points
    assert operating_points(y, s, n_boot=400, seed=2) != points


def test_tiny_input_gives_intervals_or_none_but_no_error() -> None:
    """One film per class: a resample often leaves none of a class out; no crash, no NaN."""
    points = operating_points([1, 0], [0.8, 0.2], n_boot=50)
    for point in points.values():
        assert point.threshold == pytest.approx(0.5)  # halfway between 0.8 and 0.2
        for ci in (point.sensitivity_ci, point.specificity_ci):
            assert ci is None or (0.0 <= ci[0] <= ci[1] <= 1.0)


@pytest.mark.parametrize(
    ("labels", "probs"),
    [([1, 1, 1], [0.2, 0.5, 0.9]), ([0, 0], [0.2, 0.5])],
)
def test_one_class_is_a_clear_error(labels: list[int], probs: list[float]) -> None:
    with pytest.raises(ValueError, match="both COVID-19 and non-COVID"):
        operating_points(labels, probs)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        operating_points([0, 1], [0.5])
    with pytest.raises(ValueError, match=r"0 \(non-COVID\) or 1"):
        operating_points([0, 2], [0.1, 0.5])
    with pytest.raises(ValueError, match="finite"):
        operating_points([0, 1], [0.1, float("nan")])
