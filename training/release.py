"""From a finished run to a registry version: operating point, model card, save.

The threshold is chosen on the validation split at the target sensitivity (the paper's 98 %) with
:func:`training.metrics.threshold_for_sensitivity`; the card records it, how it was chosen, the
validation metrics with their intervals, the manifest and its sha256, the command, every
training parameter, and each source's COVID-19 share of the train split (for the source-only
baseline of :mod:`training.baseline`). The version is saved unactivated unless asked.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.card import Metric, ModelCard
from models.operating_point import PAPER, TARGET_SENSITIVITY
from models.registry import Registry
from training.baseline import source_prevalence
from training.config import TrainConfig
from training.evaluate import Scored
from training.intervals import bootstrap_auc_interval, wilson_interval
from training.manifest import Manifest
from training.metrics import confusion_at, roc_auc
from training.operating_points import card_with_points, operating_points, operating_threshold
from training.trainer import TrainResult

WILSON = "Wilson score, 95 %"
BOOTSTRAP = "stratified percentile bootstrap, {n} resamples"


def split_metrics(
    split: str, labels: np.ndarray, probs: np.ndarray, threshold: float, n_boot: int = 2000
) -> dict[str, Metric]:
    """Card metrics of one split: AUC (bootstrap CI) and sensitivity/specificity (Wilson CI)."""
    conf = confusion_at(labels, probs, threshold)
    metrics: dict[str, Metric] = {}
    auc = roc_auc(labels, probs)
    if np.isfinite(auc):
        lo, hi = bootstrap_auc_interval(labels, probs, n_boot=n_boot)
        metrics[f"{split}/auc"] = Metric(
            auc, lo, hi, method=BOOTSTRAP.format(n=n_boot), n=int(labels.size)
        )
    if conf.n_pos:
        lo, hi = wilson_interval(conf.tp, conf.n_pos)
        metrics[f"{split}/sensitivity"] = Metric(
            conf.sensitivity, lo, hi, method=WILSON, n=conf.n_pos
        )
    if conf.n_neg:
        lo, hi = wilson_interval(conf.tn, conf.n_neg)
        metrics[f"{split}/specificity"] = Metric(
            conf.specificity, lo, hi, method=WILSON, n=conf.n_neg
        )
    return metrics


def environment() -> dict[str, Any]:
    """Where the model was trained (recorded in the card for reproducibility)."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "host_cpu_count": os.cpu_count(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def make_card(
    cfg: TrainConfig,
    result: TrainResult,
    manifest: Manifest,
    val_labels: np.ndarray,
    val_probs: np.ndarray,
    *,
    command: str,
    version: str = "",
    notes: str = "",
) -> ModelCard:
    """The card of a trained model (registry fills version, weights sha256 and Device UID)."""
    threshold = operating_threshold(val_labels, val_probs, cfg.target_sensitivity)
    init = cfg.init if cfg.init in {"none", "imagenet"} else Path(cfg.init).name
    params = cfg.to_dict()
    params.update(
        best_epoch=result.best_epoch,
        epochs_run=len(result.history),
        stopped_because=result.stopped_because,
        training_seconds=round(result.training_seconds, 1),
        environment=environment(),
        history=[
            [h.epoch, round(h.train_loss, 5), round(h.val_loss, 5), round(h.val_auc, 5)]
            for h in result.history
        ],
        history_columns=["epoch", "train_loss", "val_loss", "val_auc"],
    )
    card = ModelCard(
        architecture=cfg.arch,
        version=version,
        input_size=cfg.input_size,
        preprocessing=ModelCard.preprocessing_of(cfg.preprocess_spec()),
        threshold=float(threshold),
        threshold_method=(
            f"highest threshold with sensitivity >= {cfg.target_sensitivity:g} on the val split "
            f"({int(val_labels.sum())} COVID-19 images), lowered halfway to the next score; "
            "COVID-19 when probability >= threshold"
        ),
        init=init,
        weights_dtype=cfg.weights_dtype,
        training_manifest=str(cfg.manifest),
        training_manifest_sha256=manifest.sha256,
        training_command=command,
        training_parameters=params,
        metrics=split_metrics("val", val_labels, val_probs, threshold),
        notes=notes,
        # Lets every later evaluation score the source-only baseline from the data this model saw.
        source_prevalence=source_prevalence(r for r in manifest.rows if r.split == "train"),
    )
    return _with_val_points(card, cfg, val_labels, val_probs)


def _with_val_points(
    card: ModelCard, cfg: TrainConfig, val_labels: np.ndarray, val_probs: np.ndarray
) -> ModelCard:
    """``card`` with both named points chosen on val, so that either ``threshold_policy`` (the
    service's default is ``clinical``) serves a new version at a point of its own films.

    Only when training targets the paper's 98 % (the default): the card's threshold is the
    ``paper`` point's, which another ``--target-sensitivity`` is not. Not when val lacks a class
    (a specificity needs negatives): the card then keeps its single threshold, which serving
    uses and ``doctor`` warns about. ``deepcovid threshold`` chooses both again on more films.
    """
    if cfg.target_sensitivity != TARGET_SENSITIVITY[PAPER]:
        return card
    try:
        points = operating_points(val_labels, val_probs, data="the val split")
    except ValueError:
        return card
    return card_with_points(card, points)


def save_version(
    registry_root: Path,
    model: torch.nn.Module,
    card: ModelCard,
    *,
    activate: bool = False,
    extra_files: dict[str, bytes] | None = None,
) -> str:
    """Save to the registry (with ``extra_files``, e.g. the domain check); activate if asked."""
    registry = Registry(registry_root)
    version = registry.save_version(model, card, extra_files)
    if activate:
        registry.activate(version)
    return version


def record_metrics(
    registry: Registry, card: ModelCard, scored: Scored, split: str, n_boot: int = 2000
) -> ModelCard:
    """Store ``<split>/...`` and ``<split>/<source>/...`` metrics in the version's card."""
    metrics = dict(card.metrics)
    metrics.update(split_metrics(split, scored.labels, scored.probs, card.threshold, n_boot))
    sources = np.array([r.source or "unknown" for r in scored.rows])
    for source in sorted(set(sources)):
        sel = sources == source
        metrics.update(
            split_metrics(
                f"{split}/{source}", scored.labels[sel], scored.probs[sel], card.threshold, n_boot
            )
        )
    updated = card.replace(metrics={k: vars(v) for k, v in metrics.items()})
    registry.replace_card(updated)
    return updated


def rechoose_threshold(
    card: ModelCard, scored: Scored, split: str, data_note: str, n_boot: int = 2000
) -> ModelCard:
    """The card with both operating points chosen again on ``scored``
    (:func:`training.operating_points.operating_points`); its threshold is the paper point's and
    the split's metrics are replaced by those at that threshold."""
    points = operating_points(
        scored.labels,
        scored.probs,
        n_boot=n_boot,
        data=f"the {split} split of {data_note}",
    )
    updated = card_with_points(card, points)
    metrics = {k: v for k, v in card.metrics.items() if not k.startswith(f"{split}/")}
    metrics.update(split_metrics(split, scored.labels, scored.probs, updated.threshold, n_boot))
    return updated.replace(metrics={k: vars(v) for k, v in metrics.items()})
