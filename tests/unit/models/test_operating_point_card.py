"""The card's named operating points: round trip, validation, and cards written before them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.card import ModelCard
from models.operating_point import (
    CLINICAL,
    PAPER,
    UNNAMED,
    OperatingPoint,
    describe,
    name_from_method,
)

REGISTRY = Path(__file__).resolve().parents[3] / "models" / "registry"

PAPER_POINT = OperatingPoint(
    threshold=0.275,
    method="highest threshold with sensitivity >= 0.98 on hand data",
    sensitivity=1.0,
    specificity=0.6,
    n_pos=10,
    n_neg=10,
    threshold_ci=(0.1, 0.4),
    sensitivity_ci=(0.98, 1.0),
    specificity_ci=(0.3, 0.8),
    ci_method="stratified percentile bootstrap, 2000 resamples, seed 0",
)
CLINICAL_POINT = OperatingPoint(threshold=0.475, method="sensitivity >= 0.9", sensitivity=0.9)


def _card(**kw: object) -> ModelCard:
    return ModelCard(
        architecture="squeezenet1_1",
        threshold=0.275,
        threshold_method=PAPER_POINT.method,
        operating_points={PAPER: PAPER_POINT, CLINICAL: CLINICAL_POINT},
        **kw,  # type: ignore[arg-type]
    )


def test_card_with_points_round_trips() -> None:
    card = _card()
    data = json.loads(card.to_json())
    assert data["operating_points"]["paper"]["threshold_ci"] == [0.1, 0.4]
    assert data["operating_points"]["clinical"]["specificity"] is None
    again = ModelCard.from_json(card.to_json())
    assert again == card
    assert again.operating_points[PAPER].specificity_ci == (0.3, 0.8)
    assert again.operating_point(CLINICAL) == (CLINICAL, CLINICAL_POINT)
    assert again.operating_point(PAPER) == (PAPER, PAPER_POINT)


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ({"strict": {"threshold": 0.5, "method": "x"}}, "unknown operating point 'strict'"),
        ({CLINICAL: {"threshold": 1.2, "method": "x"}}, r"threshold must be in \[0, 1\]"),
        ({CLINICAL: {"threshold": 0.5, "method": "x", "colour": 1}}, "unknown operating point f"),
        ({PAPER: {"threshold": 0.3, "method": "x"}}, "is not the paper operating point"),
        (
            {CLINICAL: {"threshold": 0.5, "method": "x", "threshold_ci": [0.6, 0.4]}},
            "low <= high",
        ),
    ],
)
def test_card_refuses_invalid_points(points: dict[str, object], message: str) -> None:
    data = _card().to_dict()
    data["operating_points"] = points
    with pytest.raises(ValueError, match=message):
        ModelCard.from_dict(data)


def test_an_older_shipped_card_loads_unchanged_and_serves_its_one_threshold() -> None:
    text = (REGISTRY / "efficientnet_lite0-a16" / "model_card.json").read_text(encoding="utf-8")
    card = ModelCard.from_json(text)
    assert card.operating_points == {}
    assert "operating_points" not in json.loads(card.to_json())  # no new key in older cards
    assert ModelCard.from_json(card.to_json()) == card
    for policy in (PAPER, CLINICAL):
        name, point = card.operating_point(policy)
        assert name == PAPER  # their method says "sensitivity >= 0.98"
        assert point.threshold == card.threshold
        assert point.method == card.threshold_method


def test_the_default_card_serves_each_policy_its_own_point() -> None:
    """squeezenet1_1-c holds both points (chosen on val); the paper one is its threshold."""
    card = ModelCard.from_json(
        (REGISTRY / "squeezenet1_1-c" / "model_card.json").read_text(encoding="utf-8")
    )
    assert set(card.operating_points) == {PAPER, CLINICAL}
    assert card.operating_point(PAPER)[1].threshold == card.threshold
    name, clinical = card.operating_point(CLINICAL)
    assert name == CLINICAL and clinical.threshold > card.threshold
    assert ModelCard.from_json(card.to_json()) == card


def test_point_names_from_older_methods() -> None:
    assert name_from_method("highest threshold with sensitivity >= 0.98 on the val split") == PAPER
    assert name_from_method("highest threshold with sensitivity >= 0.9 on site films") == CLINICAL
    assert name_from_method("sensitivity >= 0.95 on val") == UNNAMED
    assert name_from_method("default 0.5 (not tuned)") == UNNAMED
    assert ModelCard(architecture="squeezenet1_1").operating_point(CLINICAL)[0] == UNNAMED
    assert describe(CLINICAL) == "clinical (sensitivity >= 90 %)"
    assert describe(PAPER) == "paper (sensitivity >= 98 %)"
