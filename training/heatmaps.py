"""Occlusion heatmaps of test COVID-19 images for the report (the paper's Fig 14).

Uses :func:`models.occlusion.occlusion_map`, the same function serving uses for the Secondary
Capture and Parametric Map, on the model input of each image; the heatmap is resampled to the
input grid and drawn over the gray image the model saw.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from models.card import ModelCard
from models.preprocessing import normalise
from training.dataset import SplitData
from training.report import OcclusionExamples


def pick_covid_images(data: SplitData, count: int) -> list[int]:
    """Up to ``count`` COVID-19 indices in manifest order, alternating between sources."""
    by_source: dict[str, list[int]] = {}
    for i, row in enumerate(data.rows):
        if row.label == 1:
            by_source.setdefault(row.source or "unknown", []).append(i)
    queues = [by_source[s] for s in sorted(by_source)]
    picked: list[int] = []
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return picked


def occlusion_examples(
    model: nn.Module,
    card: ModelCard,
    data: SplitData,
    probs: np.ndarray,
    *,
    count: int = 12,
    window: int = 32,
    stride: int = 8,
    device: torch.device | None = None,
) -> OcclusionExamples:
    """Heatmaps of up to ``count`` COVID-19 images; an empty result with a note if unavailable."""
    examples = OcclusionExamples(window=window, stride=stride)
    if count <= 0:
        examples.note = "disabled (--occlusion-images 0)"
        return examples
    try:
        from models.occlusion import occlusion_map, resample_to_image
    except ImportError as exc:  # the models package may be older than this report
        examples.note = f"models.occlusion unavailable ({exc})"
        return examples
    device = device or torch.device("cpu")
    model.to(device).eval()
    try:
        for i in pick_covid_images(data, count):
            gray = data.gray[i : i + 1].to(device, torch.float32)
            x = normalise(gray, card.preprocess)[0]
            heat = _heatmap(occlusion_map, model, x, window, stride, card)
            image = gray[0, 0].cpu().numpy()
            examples.images.append(image)
            examples.heatmaps.append(
                resample_to_image(
                    np.asarray(heat),
                    (int(image.shape[0]), int(image.shape[1])),
                    window=window,
                    stride=stride,
                    input_size=card.input_size,
                )
            )
            row = data.rows[i]
            examples.titles.append(f"{row.source or '?'} p={probs[i]:.2f}")
    except Exception as exc:  # a broken heatmap must not cost the rest of the report
        examples.images.clear()
        examples.heatmaps.clear()
        examples.titles.clear()
        examples.note = f"occlusion failed: {type(exc).__name__}: {exc}"
        return examples
    finally:
        model.cpu()
    if not examples.images:
        examples.note = "no COVID-19 images in this split"
    return examples


def _heatmap(
    occlusion_map: Callable[..., np.ndarray],
    model: nn.Module,
    x: torch.Tensor,
    window: int,
    stride: int,
    card: ModelCard,
) -> np.ndarray:
    """The fast occlusion map, or the reference one where the fast path is unavailable."""
    kwargs = {"window": window, "stride": stride, "fill": "gray", "spec": card.preprocess}
    try:
        return occlusion_map(model, x, method="fast", **kwargs)
    except Exception:  # the reference method gives the same map, only slower
        return occlusion_map(model, x, method="reference", **kwargs)
