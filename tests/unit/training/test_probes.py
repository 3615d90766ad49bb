"""Shortcut probes on tiny models whose answer is known.

The "lungs" are a fixed region (the left half here, given explicitly); one model reads only the
mean gray level inside it, another only outside it. COVID-19 images are bright inside the region,
non-COVID dark, and the outside carries a source-like marker that also separates the classes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models.preprocessing import DEFAULT_SPEC
from training.probes import (
    PROBE_FILL,
    LungMasks,
    hide,
    lung_masks,
    probe_probabilities,
    run_probes,
    summarise_probes,
)

S = 16
MASK = torch.zeros(1, 1, S, S, dtype=torch.bool)
MASK[..., : S // 2] = True
GAIN = 4.0


class RegionReader(nn.Module):
    """COVID-19 logit = GAIN * (mean of normalised channel 0 over a region); the other logit 0."""

    def __init__(self, region: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("region", region[0, 0].float())
        self.anchor = nn.Parameter(torch.zeros(1))  # a parameter, so .to(device) has something

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = (x[:, 0] * self.region).sum(dim=(1, 2)) / self.region.sum()
        covid = GAIN * value + 0 * self.anchor
        return torch.stack([torch.zeros_like(covid), covid], dim=1)


def _images() -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """4 COVID (region 0.9, outside 0.8) and 4 non-COVID (region 0.1, outside 0.2), 2 sources."""
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    gray = torch.empty(8, 1, S, S)
    for i, y in enumerate(labels):
        gray[i] = 0.8 if y else 0.2
        gray[i][:, :, : S // 2] = 0.9 - 0.02 * i if y else 0.1 + 0.02 * i
    return gray, labels, ["x", "y", "x", "y", "x", "y", "x", "y"]


def _given(masks: torch.Tensor) -> LungMasks:
    """Masks as if a localiser had found them; the first image marked as a fallback."""
    n = masks.shape[0]
    return LungMasks(masks, ["given"] * n, [True] + [False] * (n - 1))


def _prob(gray_level: float) -> float:
    """The RegionReader probability of a region uniformly at ``gray_level`` (by hand)."""
    v = (gray_level - DEFAULT_SPEC.mean[0]) / DEFAULT_SPEC.std[0]
    return float(1.0 / (1.0 + np.exp(-GAIN * v)))


def test_hide_paints_mid_gray_only_where_asked() -> None:
    gray = torch.rand(2, 1, S, S)
    masks = MASK.expand(2, -1, -1, -1)
    out = hide(gray, masks)
    assert torch.all(out[masks] == PROBE_FILL)
    assert torch.equal(out[~masks], gray[~masks])
    assert not torch.equal(gray, out)  # a new tensor; the input is untouched


def test_a_model_that_reads_the_lungs() -> None:
    gray, labels, sources = _images()
    masks = MASK.expand(8, -1, -1, -1)
    model = RegionReader(MASK).eval()
    probs = probe_probabilities(model, gray, masks, DEFAULT_SPEC, torch.device("cpu"), 3)
    # Lungs hidden: every image's region is mid-gray, so every probability is the same known one.
    assert probs["lungs_hidden"] == pytest.approx([_prob(0.5)] * 8, abs=1e-6)
    # Lungs only: the model never looked outside, so nothing changes.
    assert probs["lungs_only"][0] == pytest.approx(_prob(0.9), abs=1e-6)
    original = np.array([_prob(float(gray[i, 0, 0, 0])) for i in range(8)])
    assert probs["lungs_only"] == pytest.approx(original, abs=1e-6)
    summary = summarise_probes(labels, sources, {"original": original, **probs})
    assert summary["original"]["auc"] == 1.0
    assert summary["lungs_only"]["auc"] == 1.0
    assert summary["lungs_only"]["within_source_auc"] == 1.0
    assert summary["lungs_hidden"]["auc"] == 0.5
    assert summary["lungs_hidden"]["within_source_auc"] == 0.5
    assert summary["lungs_hidden"]["per_source_auc"] == {"x": 0.5, "y": 0.5}
    hidden = summary["lungs_hidden"]
    assert hidden["mean_covid"] == pytest.approx(hidden["mean_non_covid"])


def test_a_model_that_reads_outside_the_lungs() -> None:
    gray, labels, sources = _images()
    masks = MASK.expand(8, -1, -1, -1)
    model = RegionReader(~MASK).eval()
    original = labels.astype(float)  # only summarised here
    summary, probs = run_probes(
        model,
        gray,
        labels,
        sources,
        original,
        DEFAULT_SPEC,
        torch.device("cpu"),
        masks=_given(masks),
    )
    p = summary["probes"]
    assert p["original"]["auc"] == 1.0
    assert p["lungs_hidden"]["auc"] == 1.0  # the shortcut survives hiding the lungs
    assert p["lungs_only"]["auc"] == 0.5
    assert probs["lungs_only"] == pytest.approx([_prob(0.5)] * 8, abs=1e-6)
    assert p["lungs_hidden"]["mean_covid"] == pytest.approx(_prob(0.8), abs=1e-6)
    assert summary["lung_fields"]["methods"] == {"given": 8}
    assert summary["lung_fields"]["fallback_by_class"]["covid"] == {"n": 4, "fallback": 1}


def test_lung_masks_are_at_the_scoring_resolution() -> None:
    gray = torch.rand(3, 1, 40, 40)
    masks = lung_masks(gray)
    assert masks.masks.shape == (3, 1, 40, 40) and masks.masks.dtype == torch.bool
    assert masks.masks.any() and not masks.masks.all()
    assert len(masks.methods) == len(masks.fallback) == 3
    with pytest.raises(ValueError, match="N, 1, S, S"):
        lung_masks(torch.rand(3, 40, 40))
