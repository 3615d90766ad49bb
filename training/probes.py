"""Shortcut probes: does the COVID-19 probability come from the lungs or from the rest of the film?

Every evaluated image is scored twice more, through the same path scoring uses
(:func:`training.predict.predict_logits`: the ``resize_image`` output, ``normalise``, softmax):

- **lungs hidden**: the lung fields painted mid-gray (0.5 in [0, 1] image space, the occluder's
  ``gray`` fill of :mod:`models.occlusion`), the rest of the image unchanged;
- **lungs only**: everything except the lung fields painted mid-gray.

The masks come from :func:`models.lungs.lung_fields` (the learned segmenter of
:mod:`models.lungseg`) on the very gray image the model sees
(the scoring resolution), and the paint goes on before normalisation, so the probe differs from
the scored input only in the hidden pixels. A model that reads the lungs keeps its AUC on
"lungs only" and drops towards 0.5 with "lungs hidden"; a model that reads markers, borders or
text does the opposite. AUCs are given pooled and within source (the pooled one still rewards
source recognition), with the mean probability per class.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from models.lungs import lung_fields
from models.preprocessing import PreprocessSpec
from training.metrics import roc_auc
from training.predict import predict_logits, probabilities
from training.sources import per_source_auc, pooled_within_source_auc

PROBE_FILL = 0.5
"""Gray level painted over hidden pixels, in [0, 1] image space (the occluder's ``gray`` fill)."""

PROBES: dict[str, str] = {
    "original": "original image",
    "lungs_hidden": "lung fields hidden",
    "lungs_only": "only the lung fields shown",
}
"""Probe keys of :func:`summarise_probes`, with the words the report uses."""


@dataclass
class LungMasks:
    """Lung-field masks of a batch of gray images at the scoring resolution."""

    masks: torch.Tensor
    """``[N, 1, S, S]`` bool, True inside the lung fields."""
    methods: list[str]
    """:attr:`models.lungs.LungFields.method` per image."""
    fallback: list[bool]
    """:attr:`models.lungs.LungFields.fallback` per image (the finder fell back to a prior)."""


def lung_masks(gray: torch.Tensor) -> LungMasks:
    """Masks of gray images ``[N, 1, S, S]`` in [0, 1] (the ``SplitData.gray`` the model scores)."""
    if gray.dim() != 4 or gray.shape[1] != 1:
        raise ValueError(f"expected gray images [N, 1, S, S], got {tuple(gray.shape)}")
    masks, methods, fallback = [], [], []
    for image in gray[:, 0].detach().cpu().numpy().astype(np.float32):
        fields = lung_fields(image)
        mask = np.asarray(fields.mask, dtype=bool)
        if mask.shape != image.shape:
            raise ValueError(f"lung mask {mask.shape} does not match its image {image.shape}")
        masks.append(torch.from_numpy(mask))
        methods.append(fields.method)
        fallback.append(bool(fields.fallback))
    empty = torch.zeros((0, 1, *gray.shape[2:]), dtype=torch.bool)
    stacked = torch.stack(masks)[:, None] if masks else empty
    return LungMasks(stacked, methods, fallback)


def hide(gray: torch.Tensor, masks: torch.Tensor, fill: float = PROBE_FILL) -> torch.Tensor:
    """``gray`` with the pixels where ``masks`` is True painted ``fill`` (a new tensor)."""
    if gray.shape != masks.shape:
        raise ValueError(f"gray {tuple(gray.shape)} and masks {tuple(masks.shape)} differ")
    return torch.where(masks.to(gray.device), torch.full_like(gray, fill), gray)


@torch.no_grad()
def probe_probabilities(
    model: nn.Module,
    gray: torch.Tensor,
    masks: torch.Tensor,
    spec: PreprocessSpec,
    device: torch.device,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """COVID-19 probabilities with the lung fields hidden and with only the lung fields shown.

    Batched: each chunk of images is masked on the fly, so memory stays at one chunk per probe.
    """
    model.to(device)
    out: dict[str, list[np.ndarray]] = {"lungs_hidden": [], "lungs_only": []}
    try:
        for start in range(0, gray.shape[0], batch_size):
            g = gray[start : start + batch_size]
            m = masks[start : start + batch_size]
            for key, hidden in (("lungs_hidden", m), ("lungs_only", ~m)):
                logits = predict_logits(model, hide(g, hidden), spec, device, batch_size)
                out[key].append(probabilities(logits))
    finally:
        model.cpu()
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def summarise_probes(
    labels: np.ndarray,
    sources: Sequence[str],
    scores: dict[str, np.ndarray],
) -> dict[str, dict[str, Any]]:
    """Per probe (``original`` included): AUC pooled and within source, mean probability per class.

    ``scores`` maps probe keys of :data:`PROBES` to probabilities in the order of ``labels``.
    """
    y = np.asarray(labels).astype(int)
    out: dict[str, dict[str, Any]] = {}
    for key in PROBES:
        if key not in scores:
            continue
        p = np.asarray(scores[key], dtype=np.float64)
        out[key] = {
            "title": PROBES[key],
            "auc": roc_auc(y, p),
            "within_source_auc": pooled_within_source_auc(y, p, list(sources)),
            "per_source_auc": {e.source: e.auc for e in per_source_auc(y, p, list(sources))},
            "mean_covid": _mean(p[y == 1]),
            "mean_non_covid": _mean(p[y == 0]),
        }
    return out


def mask_summary(labels: np.ndarray, sources: Sequence[str], masks: LungMasks) -> dict[str, Any]:
    """How the lung fields were found: methods used, and the fallback rate per class and source.

    A localiser that falls back more often on COVID-19 films would make the probes (and any lung
    crop) a shortcut of their own, so the report shows it.
    """
    y = np.asarray(labels).astype(int)
    fb = np.asarray(masks.fallback, dtype=bool)
    area = masks.masks.float().mean(dim=(1, 2, 3)).numpy() if len(fb) else np.zeros(0)
    by_class = {
        name: {"n": int((y == v).sum()), "fallback": int(fb[y == v].sum())}
        for name, v in (("covid", 1), ("non_covid", 0))
    }
    src = np.asarray(list(sources))
    by_source = {
        s: {"n": int((src == s).sum()), "fallback": int(fb[src == s].sum())}
        for s in sorted(set(src.tolist()))
    }
    return {
        "methods": dict(Counter(masks.methods)),
        "fallback_by_class": by_class,
        "fallback_by_source": by_source,
        "mean_area": float(area.mean()) if area.size else float("nan"),
    }


def run_probes(
    model: nn.Module,
    gray: torch.Tensor,
    labels: np.ndarray,
    sources: Sequence[str],
    original: np.ndarray,
    spec: PreprocessSpec,
    device: torch.device,
    *,
    masks: LungMasks | None = None,
    batch_size: int = 64,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Masks, probe probabilities and their summary, ready for ``metrics.json``.

    Returns the summary (``probes``: per probe numbers; ``lung_fields``: how the masks were found;
    ``fill``) and the per-image probabilities (for predictions and tests).
    """
    masks = masks if masks is not None else lung_masks(gray)
    probs = probe_probabilities(model, gray, masks.masks, spec, device, batch_size)
    scores = {"original": np.asarray(original, dtype=np.float64), **probs}
    summary = {
        "fill": PROBE_FILL,
        "fill_note": "0.5 in [0, 1] image space, before normalisation, at the scoring resolution",
        "probes": summarise_probes(labels, sources, scores),
        "lung_fields": mask_summary(labels, sources, masks),
    }
    return summary, probs
