"""Heatmap localisation: how much of the occlusion evidence for COVID-19 lies inside the lungs.

For an image, the occlusion map (:func:`models.occlusion.occlusion_map`, the serving heatmap) holds
the drop of the COVID-19 probability when a patch is hidden; its positive part is the evidence *for*
COVID-19. Resampled onto the model-input grid (:func:`models.occlusion.resample_to_image`), the
share of that positive mass inside the lung fields (:func:`models.lungs.lung_fields`, the same
masks as the probes) says whether the model's evidence lies on the lungs or on markers, borders and
text. The lung fields cover about a third of a frontal film, so shares near that are what evidence
spread evenly over the image would give.

Occlusion costs hundreds of forward passes per image, so it runs on a seeded sample stratified by
class and source (every class-source group gets its turn, round-robin) and the report says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.preprocessing import PreprocessSpec, normalise

Summary = dict[str, Any]


def positive_share_inside(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heatmap's positive mass that lies where ``mask`` is True; NaN if none is > 0.

    ``heatmap`` and ``mask`` are on the same grid. Negative values (hiding the patch *raised* the
    COVID-19 probability) are evidence against and are left out.
    """
    heat = np.asarray(heatmap, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if heat.shape != m.shape:
        raise ValueError(f"heatmap {heat.shape} and mask {m.shape} differ in shape")
    positive = np.clip(heat, 0.0, None)
    total = positive.sum()
    if total <= 0.0:
        return float("nan")
    return float(positive[m].sum() / total)


def stratified_sample(
    labels: Sequence[int] | np.ndarray, sources: Sequence[str], size: int, seed: int = 0
) -> list[int]:
    """Up to ``size`` indices, round-robin over (class, source) groups, each group shuffled.

    Equal turns rather than proportional shares, so that small mixed sources (the ones whose
    within-source numbers matter) are in the sample at all. Sorted; the same for the same seed.
    """
    if size <= 0:
        return []
    y = np.asarray(labels).astype(int)
    rng = np.random.default_rng(seed)
    groups: dict[tuple[int, str], list[int]] = {}
    for i, (label, source) in enumerate(zip(y.tolist(), sources, strict=True)):
        groups.setdefault((label, source), []).append(i)
    queues = []
    for key in sorted(groups):
        members = np.array(groups[key])
        queues.append(list(members[rng.permutation(members.size)]))
    picked: list[int] = []
    while len(picked) < size and any(queues):
        for queue in queues:
            if queue and len(picked) < size:
                picked.append(int(queue.pop(0)))
    return sorted(picked)


def image_heatmap(
    model: nn.Module,
    gray: torch.Tensor,
    spec: PreprocessSpec,
    *,
    window: int,
    stride: int,
) -> np.ndarray:
    """The occlusion heatmap of one gray image ``[1, S, S]`` on its own S x S grid (float32).

    The model input is ``normalise(gray)``, as in scoring; the occluder paints mid-gray. The fast
    (incremental) method is tried first; the reference gives the same map, only slower.
    """
    from models.occlusion import occlusion_map, resample_to_image

    x = normalise(gray.float(), spec)
    kwargs: dict[str, Any] = {"window": window, "stride": stride, "fill": "gray", "spec": spec}
    try:
        heat = occlusion_map(model, x, method="fast", **kwargs)
    except Exception:  # the reference method gives the same map
        heat = occlusion_map(model, x, method="reference", **kwargs)
    size = int(gray.shape[-1])
    return resample_to_image(
        np.asarray(heat), (size, size), window=window, stride=stride, input_size=spec.input_size
    )


def _stats(values: np.ndarray) -> Summary:
    v = values[np.isfinite(values)]
    return {
        "n": int(v.size),
        "mean": float(v.mean()) if v.size else float("nan"),
        "median": float(np.median(v)) if v.size else float("nan"),
    }


def summarise_shares(
    shares: np.ndarray,
    labels: np.ndarray,
    sources: Sequence[str],
    called: np.ndarray,
) -> Summary:
    """Mean and median share per class, per source, per class within source, and for COVID calls.

    ``n`` counts images with a defined share (an image whose map has no positive value has none).
    """
    s = np.asarray(shares, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    src = np.asarray(list(sources))
    c = np.asarray(called, dtype=bool)
    by_class = {name: _stats(s[y == v]) for name, v in (("covid", 1), ("non_covid", 0))}
    by_source: Summary = {}
    for name in sorted(set(src.tolist())):
        sel = src == name
        by_source[name] = {
            "all": _stats(s[sel]),
            "covid": _stats(s[sel & (y == 1)]),
            "non_covid": _stats(s[sel & (y == 0)]),
        }
    return {
        "all": _stats(s),
        "by_class": by_class,
        "by_source": by_source,
        "covid_calls": _stats(s[c]),
        "covid_calls_true_positive": _stats(s[c & (y == 1)]),
        "covid_calls_false_positive": _stats(s[c & (y == 0)]),
    }


def localise(
    model: nn.Module,
    gray: torch.Tensor,
    masks: torch.Tensor,
    labels: np.ndarray,
    sources: Sequence[str],
    probs: np.ndarray,
    threshold: float,
    spec: PreprocessSpec,
    *,
    sample_size: int = 40,
    seed: int = 0,
    window: int = 32,
    stride: int = 8,
    device: torch.device | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Summary, dict[int, np.ndarray]]:
    """Localisation shares on a stratified sample; returns the summary and the maps by index.

    ``gray`` ``[N, 1, S, S]`` and ``masks`` (same shape, bool) are the scored images and their lung
    fields; ``probs`` the scored probabilities (an image is a COVID-19 call when
    ``prob >= threshold``). The maps are returned so the report's figure can reuse them.
    """
    idx = stratified_sample(labels, sources, sample_size, seed)
    device = device or torch.device("cpu")
    model.to(device).eval()
    maps: dict[int, np.ndarray] = {}
    shares = np.full(len(idx), np.nan)
    try:
        for k, i in enumerate(idx):
            heat = image_heatmap(model, gray[i].to(device), spec, window=window, stride=stride)
            maps[i] = heat
            shares[k] = positive_share_inside(heat, masks[i, 0].cpu().numpy())
            if progress is not None:
                progress(k + 1, len(idx))
    finally:
        model.cpu()
    y = np.asarray(labels).astype(int)[idx]
    src = [sources[i] for i in idx]
    called = np.asarray(probs, dtype=np.float64)[idx] >= threshold
    # Evidence spread evenly over the image would put about this share inside the lungs.
    lung_area = float(masks[idx].float().mean()) if idx else float("nan")
    summary: Summary = {
        "sample_size": len(idx),
        "requested": sample_size,
        "population": len(labels),
        "seed": seed,
        "window": window,
        "stride": stride,
        "sampling": "stratified by class and source, round-robin over the groups",
        "uniform_share": lung_area,
        **summarise_shares(shares, y, src, called),
        "images": [
            {
                "index": int(i),
                "source": sources[i],
                "label": int(labels[i]),
                "prob": float(probs[i]),
                "share": None if not np.isfinite(v) else float(v),
            }
            for i, v in zip(idx, shares, strict=True)
        ],
    }
    return summary, maps


def occlusion_grid_with_lungs(
    images: Sequence[np.ndarray],
    heatmaps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    titles: Sequence[str],
    path: Path,
    columns: int = 4,
) -> Path:
    """Fig 14 with the lung-field outline: heatmap (drop of COVID-19 probability) over the image.

    Like :func:`training.plots.occlusion_grid`, plus a white contour of each mask, so a reader
    sees at once whether the red areas lie on the lungs.
    """
    from training import plots  # selects the Agg backend before pyplot is used

    plt = plots.plt

    n = len(images)
    rows = max(1, -(-n // columns))
    cols = min(columns, max(n, 1))
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.95 * rows), squeeze=False)
    vmax = max([float(np.abs(h).max()) for h in heatmaps] + [1e-6])
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, heat, mask, title in zip(
        axes.ravel(), images, heatmaps, masks, titles, strict=False
    ):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0, vmax=vmax)
        if mask is not None and np.asarray(mask).any():
            ax.contour(np.asarray(mask, dtype=float), levels=[0.5], colors="white", linewidths=0.6)
        ax.set_title(title, fontsize=6)
    fig.suptitle(
        "occlusion: drop of COVID-19 probability (red = important); white: lung fields",
        fontsize=7,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    plots.shrink_png(path)
    return path
