"""Occlusion maps: the fast incremental method equals the batched reference on every
architecture (random weights) and on a hand-checkable model; resampling onto the image grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models.architectures import ARCHITECTURES, build_model, head_prefix
from models.occlusion import (
    OcclusionGrid,
    fill_value,
    occlusion_flops,
    occlusion_map,
    resample_to_image,
)
from models.occlusion.incremental import supports
from models.preprocessing import DEFAULT_SPEC

ATOL = 1e-4


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


def _sensitive_model(arch: str, x: torch.Tensor, window: int) -> nn.Module:
    """A random-weight model whose COVID-19 probability moves when ``x`` is occluded: the head is
    scaled so that occluding changes the logit difference by a few units, and (linear heads)
    shifted so that ``x`` itself scores about 0.5. Without this, random models saturate or stay
    flat and any two maps would agree. EfficientNet-Lite0 starts from its ImageNet weights (the
    ``train`` extra ships them): with random weights its ReLU6 clamps flatten every map."""
    torch.manual_seed(0)
    init = "imagenet" if arch == "efficientnet_lite0" else "none"
    model = build_model(arch, init).to(memory_format=torch.channels_last)
    if arch.startswith("squeezenet"):
        # Its head ends conv -> ReLU: make it linear so it can be centred (the head runs on full
        # maps in both methods; the incremental part is the feature extractor).
        model.classifier[2] = nn.Identity()
    size = x.shape[-1]
    batch = x.unsqueeze(0).repeat(9, 1, 1, 1)
    for i, r in enumerate(range(0, size - window + 1, max(1, (size - window) // 7))):
        if i + 1 < 9:
            batch[i + 1, :, r : r + window, r : r + window] = 0.0
    prefix = head_prefix(arch)
    head = [p for n, p in model.named_parameters() if n.startswith(prefix)]
    with torch.no_grad():
        logits = model(batch)
        diff = logits[:, 1] - logits[:, 0]
        scale = 3.0 / max(float(diff.std()), 1e-6)
        for param in head:
            param.mul_(scale)
        head[-1][1] -= scale * float(diff[0])  # centre: x itself scores p = 0.5
    return model


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_fast_equals_reference_on_each_architecture(arch: str) -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 64, 64)
    model = _sensitive_model(arch, x, 16)
    assert supports(model)
    ref = occlusion_map(model, x, window=16, stride=8, method="reference")
    fast = occlusion_map(model, x, window=16, stride=8, method="fast")
    assert ref.shape == fast.shape == (7, 7) and fast.dtype == np.float32
    assert float(np.abs(ref).max()) > 1e-3  # the comparison below means something
    assert float(np.abs(fast - ref).max()) <= ATOL


@pytest.mark.parametrize("arch", ["resnet18", "squeezenet1_1", "efficientnet_lite0"])
@pytest.mark.parametrize("fill", ["zero", "mean"])
def test_fast_equals_reference_odd_sizes_and_fills(arch: str, fill: str) -> None:
    """Sizes and strides that do not divide evenly hit the border and ceil-mode pooling paths
    (and, for EfficientNet, TensorFlow ``SAME`` padding that is symmetric on odd maps and
    one-sided on even ones: 61 -> 31 -> 16 -> 8)."""
    torch.manual_seed(2)
    x = torch.randn(3, 61, 61)
    model = _sensitive_model(arch, x, 13)
    ref = occlusion_map(model, x, window=13, stride=7, fill=fill, method="reference")
    fast = occlusion_map(model, x, window=13, stride=7, fill=fill, method="fast", batch_size=5)
    assert ref.shape == (7, 7)
    assert float(np.abs(ref).max()) > 1e-3
    assert float(np.abs(fast - ref).max()) <= ATOL


def _region_model(size: int, region: tuple[slice, slice], gain: float) -> nn.Sequential:
    """logit(covid) - logit(non-covid) = gain * sum over ``region`` of the channel sum."""
    conv = nn.Conv2d(3, 1, kernel_size=1)
    linear = nn.Linear(size * size, 2)
    weights = torch.zeros(size, size)
    weights[region] = gain
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[1] = weights.flatten()
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), linear).eval()


def test_hand_checkable_model_depends_on_one_region_only() -> None:
    size, window, stride = 32, 8, 4
    region = (slice(12, 20), slice(4, 10))
    model = _region_model(size, region, gain=0.05)
    assert supports(model)
    torch.manual_seed(3)
    x = torch.rand(3, size, size)  # non-negative: the ReLU is the identity here
    gray = fill_value(x, "gray", DEFAULT_SPEC)
    assert float(gray.min()) >= 0

    inside = torch.zeros(size, size, dtype=torch.bool)
    inside[region] = True
    d0 = 0.05 * float(x.sum(0)[inside].sum())
    grid = OcclusionGrid(size, window, stride)
    expected = np.zeros((grid.steps, grid.steps))
    for i, r in enumerate(grid.offsets):
        for j, c in enumerate(grid.offsets):
            occluded = x.clone()
            occluded[:, r : r + window, c : c + window] = gray
            d = 0.05 * float(occluded.sum(0)[inside].sum())
            expected[i, j] = 1 / (1 + np.exp(-d0)) - 1 / (1 + np.exp(-d))

    for method in ("reference", "fast"):
        heat = occlusion_map(model, x, window=window, stride=stride, method=method)  # type: ignore[arg-type]
        assert np.allclose(heat, expected, atol=1e-6), method
    # Occluders that miss the region change nothing; one that covers it does.
    assert heat[0, 0] == 0.0 and heat[-1, -1] == 0.0
    assert abs(heat[3, 1]) > 1e-3


def test_unsupported_model_falls_back_to_reference() -> None:
    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.mean(dim=(2, 3)))

    model = Pooled().eval()
    assert not supports(model)
    x = torch.randn(3, 16, 16)
    fast = occlusion_map(model, x, window=4, stride=4, method="fast")
    ref = occlusion_map(model, x, window=4, stride=4, method="reference")
    assert np.array_equal(fast, ref)


def test_invalid_arguments() -> None:
    model = build_model("squeezenet1_1")
    x = torch.randn(3, 32, 32)
    with pytest.raises(ValueError, match="fill"):
        occlusion_map(model, x, window=8, stride=8, fill="pink")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        occlusion_map(model, x, window=64, stride=8)
    with pytest.raises(ValueError, match="square"):
        occlusion_map(model, torch.randn(3, 32, 30), window=8, stride=8)
    with pytest.raises(ValueError, match="eval mode"):
        occlusion_map(model.train(), x, window=8, stride=8)


def test_flop_ratio_of_the_default_grid() -> None:
    """N=32, S=8 on 224: the theoretical limit of incremental inference per architecture."""
    grid = OcclusionGrid(224, 32, 8)
    assert grid.steps == 25
    flops = occlusion_flops(build_model("resnet18"), grid)
    assert flops["positions"] == 625
    assert flops["macs_full"] == pytest.approx(625 * 1.81e9, rel=0.02)  # ResNet18: 1.8 GMACs
    assert flops["ratio_theoretical"] >= flops["ratio_implemented"] > 1.5
    squeeze = occlusion_flops(build_model("squeezenet1_1"), grid)
    assert squeeze["ratio_theoretical"] > flops["ratio_theoretical"]


def test_resample_to_image_places_values_at_window_centres() -> None:
    assert np.allclose(resample_to_image(np.full((25, 25), 0.3), (512, 400)), 0.3)
    heat = np.zeros((25, 25), np.float32)
    heat[12, 3] = 1.0  # occluder at top 96, left 24: centre (112, 40) on the 224 grid
    image = resample_to_image(heat, (448, 224))  # rows scale x2, columns x1
    assert image.shape == (448, 224) and image.dtype == np.float32
    row, col = np.unravel_index(int(np.argmax(image)), image.shape)
    assert abs(row - 224) <= 1 and abs(col - 40) <= 1
    assert float(image.max()) <= 1.0 and image[0, 0] == 0.0
    single = resample_to_image(np.array([[0.7]]), (10, 20), window=224, stride=8)
    assert np.allclose(single, 0.7)


def test_fast_map_follows_weight_changes() -> None:
    """The BatchNorm fold is cached per model; changing weights in place must invalidate it."""
    torch.manual_seed(4)
    x = torch.randn(3, 48, 48)
    model = _sensitive_model("resnet18", x, 16)
    before = occlusion_map(model, x, window=16, stride=16, method="fast")
    with torch.no_grad():
        model.layer1[0].conv1.weight.mul_(-1.0)
    after = occlusion_map(model, x, window=16, stride=16, method="fast")
    reference = occlusion_map(model, x, window=16, stride=16, method="reference")
    assert float(np.abs(after - before).max()) > 1e-4
    assert float(np.abs(after - reference).max()) <= ATOL


def test_border_batch_order_gives_the_same_scores() -> None:
    from models.occlusion import reference_scores
    from models.occlusion.incremental import batch_order, incremental_scores

    torch.manual_seed(5)
    x = torch.randn(3, 64, 64)
    model = _sensitive_model("squeezenet1_1", x, 16)
    grid = OcclusionGrid(64, 16, 8)
    order = batch_order(grid, "border")
    assert sorted(order) == list(range(49)) and order != list(range(49))
    value = fill_value(x, "gray")
    ref = reference_scores(model, x, grid, value)
    fast = incremental_scores(model, x, grid, value, batch_size=6, order="border")
    assert float((fast - ref).abs().max()) <= ATOL
