"""Occlusion heatmaps of test COVID-19 images for the report (the paper's Fig 14).

Uses :func:`models.occlusion.occlusion_map`, the same function serving uses for the Secondary
Capture and Parametric Map, on the model input of each image; the heatmap is resampled to the
input grid and drawn over the gray image the model saw.
"""

from __future__ import annotations

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
            try:
                heat = occlusion_map(
                    model, x, window=window, stride=stride, fill="gray", spec=card.preprocess
                )
            except ImportError:  # "fast" needs a newer models package: same map, slower
                heat = occlusion_map(
                    model,
                    x,
                    window=window,
                    stride=stride,
                    fill="gray",
                    method="reference",
                    spec=card.preprocess,
                )
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
    finally:
        model.cpu()
    if not examples.images:
        examples.note = "no COVID-19 images in this split"
    return examples
