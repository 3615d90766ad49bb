"""Occlusion heatmaps of test COVID-19 images for the report (the paper's Fig 14).

Uses :func:`models.occlusion.occlusion_map`, the same function serving uses for the Secondary
Capture and Parametric Map, on the model input of each image (through
:func:`training.localisation.image_heatmap`); the heatmap is resampled to the input grid and drawn
over the gray image the model saw, with the lung-field outline, and each title gives the share of
the positive evidence inside the lung fields.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.card import ModelCard
from training.dataset import SplitData
from training.localisation import image_heatmap, positive_share_inside
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
    masks: torch.Tensor | None = None,
    cache: dict[int, np.ndarray] | None = None,
) -> OcclusionExamples:
    """Heatmaps of up to ``count`` COVID-19 images; an empty result with a note if unavailable.

    ``masks`` (``[N, 1, S, S]`` bool lung fields of ``data.gray``) adds the outline and the in-lung
    share to each panel; ``cache`` holds maps already computed with the same window and stride
    (the localisation sample), keyed by image index, so no image is occluded twice.
    """
    examples = OcclusionExamples(window=window, stride=stride)
    if count <= 0:
        examples.note = "disabled (--occlusion-images 0)"
        return examples
    try:
        from models.occlusion import occlusion_map, resample_to_image  # noqa: F401
    except ImportError as exc:  # the models package may be older than this report
        examples.note = f"models.occlusion unavailable ({exc})"
        return examples
    device = device or torch.device("cpu")
    model.to(device).eval()
    cache = cache if cache is not None else {}
    try:
        for i in pick_covid_images(data, count):
            gray = data.gray[i].to(device, torch.float32)
            heat = cache.get(i)
            if heat is None:
                heat = image_heatmap(model, gray, card.preprocess, window=window, stride=stride)
            image = gray[0].cpu().numpy()
            examples.images.append(image)
            examples.heatmaps.append(heat)
            row = data.rows[i]
            title = f"{row.source or '?'} p={probs[i]:.2f}"
            if masks is not None:
                mask = masks[i, 0].cpu().numpy()
                examples.masks.append(mask)
                share = positive_share_inside(heat, mask)
                title += " lungs n/a" if not np.isfinite(share) else f" lungs {100 * share:.0f}%"
            examples.titles.append(title)
    except Exception as exc:  # a broken heatmap must not cost the rest of the report
        examples.images.clear()
        examples.heatmaps.clear()
        examples.masks.clear()
        examples.titles.clear()
        examples.note = f"occlusion failed: {type(exc).__name__}: {exc}"
        return examples
    finally:
        model.cpu()
    if not examples.images:
        examples.note = "no COVID-19 images in this split"
    return examples
