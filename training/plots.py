"""The report's figures (matplotlib, Agg backend, small PNGs).

Each function takes plain arrays and a path and writes one figure: the paper's Figs 6-9 (score
histograms), 10-11 (ROC and PR), 12-13 (confusion matrix), 14 (occlusion heatmaps), the
sensitivity/specificity-over-threshold curves behind Tables 2-5, the training curves, and the
overlaid curves of ``compare``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from training.intervals import normal_interval, wilson_interval
from training.metrics import confusion_at

DPI = 100
SMALL = (4.2, 3.4)


def _save(fig: plt.Figure, path: Path, dpi: int = DPI) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    shrink_png(path)
    return path


def shrink_png(path: Path) -> None:
    """Re-save a PNG with a 256-colour palette: a third of the size, plenty for plots."""
    from PIL import Image

    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=256)
    small.save(path, optimize=True)


def sens_spec_curve(labels: np.ndarray, scores: np.ndarray, threshold: float, path: Path) -> Path:
    """Sensitivity and specificity over thresholds with Wilson bands and normal-approx. bounds."""
    grid = np.linspace(0.0, 1.0, 101)
    rows = [confusion_at(labels, scores, t) for t in grid]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for name, color, k, n in (
        ("sensitivity", "tab:red", lambda c: c.tp, lambda c: c.n_pos),
        ("specificity", "tab:blue", lambda c: c.tn, lambda c: c.n_neg),
    ):
        if not n(rows[0]):
            continue
        rate = np.array([k(c) / n(c) for c in rows])
        wil = np.array([wilson_interval(k(c), n(c)) for c in rows])
        nor = np.array([normal_interval(k(c), n(c)) for c in rows])
        ax.plot(grid, rate, color=color, label=name)
        ax.fill_between(grid, wil[:, 0], wil[:, 1], color=color, alpha=0.2, lw=0)
        ax.plot(grid, nor[:, 0], color=color, ls=":", lw=0.8)
        ax.plot(grid, nor[:, 1], color=color, ls=":", lw=0.8)
    ax.axvline(threshold, color="k", ls="--", lw=0.8, label=f"operating point {threshold:.3f}")
    ax.set_xlabel("threshold on COVID-19 probability")
    ax.set_ylabel("rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("95 % CI: shaded Wilson, dotted normal approx.", fontsize=8)
    ax.legend(fontsize=7, loc="lower center")
    return _save(fig, path)


def roc_figure(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    points: Mapping[str, tuple[float, float]] | None = None,
) -> Path:
    """ROC curves ``{label: (fpr, tpr)}``; ``points`` marks operating points ``(fpr, tpr)``."""
    fig, ax = plt.subplots(figsize=SMALL)
    for label, (fpr, tpr) in curves.items():
        (line,) = ax.plot(fpr, tpr, lw=1.4, label=label)
        if points and label in points:
            ax.plot(*points[label], "o", color=line.get_color(), ms=5)
    ax.plot([0, 1], [0, 1], color="0.7", ls="--", lw=0.8)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(-0.01, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def pr_figure(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    prevalence: float | None = None,
) -> Path:
    """Precision-recall curves ``{label: (recall, precision)}``; chance level at the prevalence."""
    fig, ax = plt.subplots(figsize=SMALL)
    for label, (recall, precision) in curves.items():
        ax.step(recall, precision, where="post", lw=1.4, label=label)
    if prevalence is not None:
        ax.axhline(prevalence, color="0.7", ls="--", lw=0.8, label=f"chance {prevalence:.2f}")
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision")
    ax.set_ylim(0.0, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def confusion_figure(tp: int, fn: int, tn: int, fp: int, threshold: float, path: Path) -> Path:
    """2x2 confusion matrix at the operating point (rows: truth, columns: prediction)."""
    matrix = np.array([[tn, fp], [fn, tp]])
    fig, ax = plt.subplots(figsize=(3.4, 3.0))
    ax.imshow(matrix, cmap="Blues")
    names = ["non-COVID", "COVID-19"]
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "k"
        )
    ax.set_title(f"threshold {threshold:.3f}", fontsize=8)
    return _save(fig, path)


def score_histograms(
    groups: Mapping[str, np.ndarray], threshold: float, path: Path, bins: int = 20
) -> Path:
    """Histograms of the COVID-19 probability per group (COVID-19, No Finding, other disease)."""
    present = {k: v for k, v in groups.items() if len(v)}
    fig, axes = plt.subplots(1, max(len(present), 1), figsize=(3.0 * max(len(present), 1), 2.6))
    axes = np.atleast_1d(axes)
    edges = np.linspace(0, 1, bins + 1)
    for ax, (name, scores) in zip(axes, present.items(), strict=False):
        ax.hist(scores, bins=edges, color="tab:red" if name.startswith("COVID") else "tab:blue")
        ax.axvline(threshold, color="k", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{name} (n={len(scores)})", fontsize=8)
        ax.set_xlabel("COVID-19 probability", fontsize=8)
    axes[0].set_ylabel("images (log)")
    return _save(fig, path)


def training_curves(history: Sequence[Sequence[float]], path: Path) -> Path:
    """Loss and validation AUC per epoch from the card's ``[epoch, train, val, auc]`` rows."""
    h = np.asarray(history, dtype=float)
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    ax.plot(h[:, 0], h[:, 1], label="train loss", lw=1)
    ax.plot(h[:, 0], h[:, 2], label="val loss", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax2 = ax.twinx()
    ax2.plot(h[:, 0], h[:, 3], color="tab:green", label="val AUC", lw=1)
    ax2.set_ylabel("val AUC")
    ax2.set_ylim(max(0.0, float(np.nanmin(h[:, 3])) - 0.05), 1.0)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [str(line.get_label()) for line in lines], fontsize=7, loc="center right")
    return _save(fig, path)


def occlusion_grid(
    images: Sequence[np.ndarray],
    heatmaps: Sequence[np.ndarray],
    titles: Sequence[str],
    path: Path,
    columns: int = 4,
) -> Path:
    """Heatmaps (drop of the COVID-19 probability when occluded) over their images (Fig 14)."""
    n = len(images)
    rows = max(1, -(-n // columns))
    cols = min(columns, max(n, 1))
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.95 * rows), squeeze=False)
    vmax = max([float(np.abs(h).max()) for h in heatmaps] + [1e-6])
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, heat, title in zip(axes.ravel(), images, heatmaps, titles, strict=False):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=6)
    fig.suptitle("occlusion: drop of COVID-19 probability (red = important)", fontsize=8)
    return _save(fig, path, dpi=80)
