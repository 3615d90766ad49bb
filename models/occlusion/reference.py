"""Occlusion sensitivity maps (Zeiler & Fergus 2014; Deep-COVID §4.7): the public entry points.

An N x N occluder slides with stride S over the model input; each occluded copy is scored and the
map holds the drop of the COVID-19 probability, ``p(image) - p(occluded image)``, one value per
occluder position (25 x 25 for N = 32, S = 8 on 224 x 224). Positive values mark regions the model
relies on for "COVID-19".

Two methods give the same map (max abs difference <= 1e-4 in fp32; in practice ~1e-6):

- ``reference``: every occluded copy goes through the whole network, in batches.
- ``fast``: incremental inference as in Krypton (Nakandala et al., SIGMOD 2019): the occluded
  image differs from the original only inside the occluder, so each layer recomputes only the part
  of its output that the changed input can reach, reading unchanged values from one full pass over
  the original image (see :mod:`models.occlusion.incremental`). Exact, because every recomputed
  value is computed from exactly the inputs the full pass would use. ResNet, SqueezeNet and
  DenseNet are supported; other modules fall back to the reference.

An ensemble (:class:`models.ensemble.Ensemble`) is mapped by its probability, the mean of its
members': the occluded ensemble probability is the mean of the members' occluded probabilities, so
its map is the mean of the members' maps, and ``fast`` computes each member's map incrementally
and averages them (``reference`` runs the whole ensemble on every occluded copy).

:func:`resample_to_image` puts the window-grid map onto the original image's pixel grid.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from torch import nn

from models.architectures import covid_probability
from models.ensemble import Ensemble
from models.occlusion.grid import OcclusionGrid
from models.occlusion.incremental import count_flops, incremental_scores, supports
from models.preprocessing import DEFAULT_SPEC, PreprocessSpec

log = logging.getLogger(__name__)

Fill = Literal["zero", "mean", "gray"]
Method = Literal["fast", "reference"]


def fill_value(x: torch.Tensor, fill: str, spec: PreprocessSpec = DEFAULT_SPEC) -> torch.Tensor:
    """Per-channel value [3, 1, 1] the occluder paints over a normalised input ``x`` [3, S, S].

    ``zero``: 0 in the normalised input (the ImageNet mean colour); ``mean``: the image's own
    per-channel mean; ``gray``: mid-gray (0.5) normalised with the spec's mean and std.
    """
    if fill == "zero":
        return torch.zeros(x.shape[0], 1, 1, dtype=x.dtype, device=x.device)
    if fill == "mean":
        return x.mean(dim=(1, 2), keepdim=True)
    if fill == "gray":
        return spec.gray_value().to(dtype=x.dtype, device=x.device)
    raise ValueError(f"unknown fill {fill!r}; expected zero, mean or gray")


def _check_input(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"expected one square input [3, S, S] (or [1, 3, S, S]), got {x.shape}")
    return x


def _chunks(items: list[tuple[int, int]], size: int) -> Iterator[list[tuple[int, int]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def reference_scores(
    model: nn.Module,
    x: torch.Tensor,
    grid: OcclusionGrid,
    value: torch.Tensor,
    batch_size: int = 64,
) -> torch.Tensor:
    """COVID-19 probability of every occluded copy, full forward passes (channels-last fp32)."""
    device = next(model.parameters()).device
    x = x.to(device)
    value = value.to(device)
    n = grid.window
    scores = []
    with torch.inference_mode():
        for chunk in _chunks(grid.positions(), batch_size):
            batch = x.unsqueeze(0).repeat(len(chunk), 1, 1, 1)
            for i, (r, c) in enumerate(chunk):
                batch[i, :, r : r + n, c : c + n] = value
            batch = batch.contiguous(memory_format=torch.channels_last)
            scores.append(covid_probability(model(batch)).cpu())
    return torch.cat(scores)


def base_probability(model: nn.Module, x: torch.Tensor) -> float:
    """COVID-19 probability of the unoccluded input."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        batch = x.unsqueeze(0).to(device).contiguous(memory_format=torch.channels_last)
        return float(covid_probability(model(batch))[0])


def occlusion_map(
    model: nn.Module,
    x: torch.Tensor,
    window: int = 32,
    stride: int = 8,
    fill: Fill = "gray",
    method: Method = "fast",
    *,
    spec: PreprocessSpec = DEFAULT_SPEC,
    batch_size: int = 64,
) -> np.ndarray:
    """Drop of the COVID-19 probability per occluder position, float32 [steps, steps].

    ``model``: an eval-mode classifier with the 2-class head (any device; channels-last is best).
    ``x``: the normalised model input [3, S, S] (from :func:`models.preprocessing.to_model_input`).
    ``method="fast"`` uses incremental inference where the architecture is supported and falls back
    to ``"reference"`` otherwise; both give the same map.
    """
    if method not in ("fast", "reference"):
        raise ValueError(f"unknown method {method!r}; expected fast or reference")
    if model.training:
        raise ValueError("model must be in eval mode (BatchNorm and Dropout change otherwise)")
    x = _check_input(x).float()
    if method == "fast" and isinstance(model, Ensemble):
        maps = [
            occlusion_map(m, x, window, stride, fill, method, spec=spec, batch_size=batch_size)
            for m in model.members
        ]
        return np.mean(np.stack(maps).astype(np.float64), axis=0).astype(np.float32)
    grid = OcclusionGrid(size=int(x.shape[-1]), window=window, stride=stride)
    value = fill_value(x, fill, spec)
    p0 = base_probability(model, x)
    scores: torch.Tensor | None = None
    if method == "fast":
        if supports(model):
            scores = incremental_scores(model, x, grid, value, batch_size=batch_size)
        else:
            log.info("no incremental occlusion for %s; using the reference", type(model).__name__)
    if scores is None:
        scores = reference_scores(model, x, grid, value, batch_size=batch_size)
    drop = p0 - scores.double().numpy()
    return drop.reshape(grid.steps, grid.steps).astype(np.float32)


def _interp_matrix(out_len: int, grid_len: int, centres: np.ndarray) -> np.ndarray:
    """[out_len, grid_len] weights of 1-D linear interpolation at output pixel centres.

    ``centres`` holds the output-pixel coordinates of the grid points; outside the first and last
    centre the edge value is kept.
    """
    pos = np.arange(out_len, dtype=np.float64) + 0.5
    weights = np.zeros((out_len, grid_len), dtype=np.float64)
    if grid_len == 1:
        weights[:, 0] = 1.0
        return weights
    g = np.interp(pos, centres, np.arange(grid_len, dtype=np.float64))
    lo = np.clip(np.floor(g).astype(int), 0, grid_len - 2)
    frac = g - lo
    rows = np.arange(out_len)
    weights[rows, lo] = 1.0 - frac
    weights[rows, lo + 1] += frac
    return weights


def resample_to_image(
    heatmap: np.ndarray,
    shape: tuple[int, int],
    *,
    window: int = 32,
    stride: int = 8,
    input_size: int = 224,
) -> np.ndarray:
    """Put a window-grid map onto an image grid of ``shape`` (rows, columns), float32.

    Each map value belongs to the centre of its occluder in the model input; the model input is
    the whole image resized to ``input_size`` squared (aspect not kept), so the centres scale
    independently per axis. Between centres the map is interpolated linearly (bilinear); beyond the
    outermost centres the edge value is kept.
    """
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {heatmap.shape}")
    rows, cols = (int(v) for v in shape)
    if rows < 1 or cols < 1:
        raise ValueError(f"shape must be positive, got {shape}")
    grid_rows, grid_cols = heatmap.shape
    centre = np.arange(max(grid_rows, grid_cols), dtype=np.float64) * stride + window / 2.0
    wy = _interp_matrix(rows, grid_rows, centre[:grid_rows] * rows / input_size)
    wx = _interp_matrix(cols, grid_cols, centre[:grid_cols] * cols / input_size)
    return (wy @ heatmap.astype(np.float64) @ wx.T).astype(np.float32)


def occlusion_flops(
    model: nn.Module, grid: OcclusionGrid, channels: int = 3, batch_size: int = 64
) -> dict[str, float]:
    """Multiply-accumulates of the occlusion map: full passes vs exact incremental inference.

    Returns ``full`` (every occluded copy through the whole network), ``incremental`` (only the
    outputs each occluder can reach, per layer: the theoretical limit), ``implemented`` (what
    :mod:`models.occlusion.incremental` computes in batches of ``batch_size``, with one rectangle
    size per batch) and the ratios.
    """
    return count_flops(model, grid, channels, batch_size=batch_size)
