"""Share of positive occlusion evidence inside the lung fields: by hand, and on a tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.preprocessing import PreprocessSpec
from training.localisation import (
    localise,
    occlusion_grid_with_lungs,
    positive_share_inside,
    stratified_sample,
    summarise_shares,
)


def test_positive_share_by_hand() -> None:
    heat = np.array(
        [
            [0.2, 0.0, -5.0, 0.1],
            [0.2, 0.0, 0.3, 0.1],
        ]
    )
    mask = np.array(
        [
            [True, True, True, False],
            [True, False, False, False],
        ]
    )
    # Positive mass 0.9; inside 0.2 + 0.2 (the -5 inside is evidence against and is ignored).
    assert positive_share_inside(heat, mask) == pytest.approx(0.4 / 0.9)
    assert positive_share_inside(heat, ~mask) == pytest.approx(0.5 / 0.9)
    assert math.isnan(positive_share_inside(-np.abs(heat), mask))
    with pytest.raises(ValueError, match="shape"):
        positive_share_inside(heat, mask[:, :2])


def test_stratified_sample_takes_turns_over_class_and_source() -> None:
    labels = [1] * 10 + [0] * 10 + [1, 0]
    sources = ["big"] * 20 + ["small", "small"]
    picked = stratified_sample(labels, sources, 4, seed=3)
    groups = {(labels[i], sources[i]) for i in picked}
    assert groups == {(1, "big"), (0, "big"), (1, "small"), (0, "small")}
    assert picked == stratified_sample(labels, sources, 4, seed=3)
    assert len(stratified_sample(labels, sources, 100)) == 22
    assert stratified_sample(labels, sources, 0) == []


def test_summary_per_class_source_and_calls() -> None:
    shares = np.array([0.9, 0.5, 0.1, np.nan, 0.3])
    labels = np.array([1, 1, 0, 0, 0])
    sources = ["a", "b", "a", "b", "b"]
    called = np.array([True, False, True, False, False])
    s = summarise_shares(shares, labels, sources, called)
    assert s["by_class"]["covid"] == {"n": 2, "mean": pytest.approx(0.7), "median": 0.7}
    assert s["by_class"]["non_covid"]["n"] == 2  # the NaN (no positive evidence) is left out
    assert s["by_class"]["non_covid"]["mean"] == pytest.approx(0.2)
    assert s["covid_calls"]["mean"] == pytest.approx(0.5)
    assert s["covid_calls_true_positive"]["mean"] == pytest.approx(0.9)
    assert s["covid_calls_false_positive"]["mean"] == pytest.approx(0.1)
    assert s["by_source"]["b"]["all"]["median"] == pytest.approx(0.4)


class Corner(nn.Module):
    """COVID-19 logit = 3 * mean of channel 0 over the top-left 8 x 8 corner of a 16 px input."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        covid = self.scale * x[:, 0, :8, :8].mean(dim=(1, 2))
        return torch.stack([torch.zeros_like(covid), covid], dim=1)


def test_localise_finds_the_evidence_where_the_model_looks(tmp_path: Path) -> None:
    spec = PreprocessSpec(input_size=16)
    gray = torch.full((4, 1, 16, 16), 0.95)  # bright: hiding the corner lowers p(COVID-19)
    corner = torch.zeros(4, 1, 16, 16, dtype=torch.bool)
    corner[..., :8, :8] = True
    masks = corner.clone()
    masks[2:] = ~corner[2:]  # images 2 and 3: "lungs" everywhere except where the model looks
    labels = np.array([1, 0, 1, 0])
    probs = np.array([0.9, 0.8, 0.2, 0.1])
    summary, maps = localise(
        Corner().eval(),
        gray,
        masks,
        labels,
        ["s"] * 4,
        probs,
        0.5,
        spec,
        sample_size=10,
        window=4,
        stride=4,
    )
    assert summary["sample_size"] == 4 and set(maps) == {0, 1, 2, 3}
    shares = [img["share"] for img in summary["images"]]
    # Occluders at 0, 4 (inside the corner) and 8, 12 (outside); resampled maps bleed a little
    # past the corner's edge, so the share is high, not exactly 1.
    assert shares[0] > 0.8 and shares[1] > 0.8
    assert shares[2] < 0.2 and shares[3] < 0.2
    assert summary["covid_calls"]["n"] == 2  # p >= 0.5: images 0 and 1
    assert summary["uniform_share"] == pytest.approx(0.5)
    path = occlusion_grid_with_lungs(
        [g[0].numpy() for g in gray],
        [maps[i] for i in range(4)],
        [m[0].numpy() for m in masks],
        ["a", "b", "c", "d"],
        tmp_path / "occ.png",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
