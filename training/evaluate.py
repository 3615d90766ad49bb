"""Evaluate a model version on a manifest split: every number of the report, as one dict.

Scores come from the same path as serving (``resize_image`` -> ``normalise`` -> softmax). The
result dict is what ``metrics.json`` holds and what :mod:`training.report` renders: AUC with a
bootstrap interval, average precision, sensitivity/specificity at the card's operating point and
over thresholds with the paper's normal-approximation and Wilson intervals, the confusion matrix,
score summaries per finding group, metrics per source, and how well the source alone would
separate the classes (the known confound of the public COVID-19 sets).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from models.card import ModelCard
from training.dataset import SplitData
from training.intervals import bootstrap_auc_interval, wilson_interval
from training.manifest import LABELS, Manifest, ManifestRow
from training.metrics import (
    PAPER_THRESHOLDS,
    average_precision,
    confusion_at,
    pr_points,
    roc_auc,
    roc_points,
    threshold_table,
)
from training.predict import predict_logits, probabilities

FINDING_GROUPS: dict[str, str] = {
    "covid": "COVID-19",
    "no_finding": "No Finding",
    "other_disease": "other disease",
}
SOURCE_CONFOUND_AUC = 0.9
"""Source-only AUC at or above which the report warns that source alone separates the classes."""


@dataclass
class Scored:
    """A split scored by a model: labels, probabilities and the rows they belong to."""

    labels: np.ndarray
    probs: np.ndarray
    rows: list[ManifestRow]


def score_split(
    model: nn.Module, card: ModelCard, data: SplitData, device: torch.device, batch_size: int = 64
) -> Scored:
    """COVID-19 probabilities of a loaded split (model moved to ``device`` for the call)."""
    model.to(device)
    try:
        logits = predict_logits(model, data.gray, card.preprocess, device, batch_size)
    finally:
        model.cpu()
    return Scored(data.labels.cpu().numpy().astype(int), probabilities(logits), list(data.rows))


def json_safe(value: Any) -> Any:
    """JSON has no NaN: replace it by null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def per_source(scored: Scored, threshold: float) -> dict[str, dict[str, Any]]:
    """Counts, AUC (when both classes occur) and sensitivity/specificity per ``source``."""
    out: dict[str, dict[str, Any]] = {}
    sources = sorted({r.source or "unknown" for r in scored.rows})
    src = np.array([r.source or "unknown" for r in scored.rows])
    for name in sources:
        sel = src == name
        y, s = scored.labels[sel], scored.probs[sel]
        conf = confusion_at(y, s, threshold)
        summary = conf.summary()
        out[name] = {
            "n": int(sel.sum()),
            "n_covid": conf.n_pos,
            "n_non_covid": conf.n_neg,
            "auc": roc_auc(y, s),
            "sensitivity": summary["sensitivity"],
            "sensitivity_ci_wilson": summary["sensitivity_ci_wilson"],
            "specificity": summary["specificity"],
            "specificity_ci_wilson": summary["specificity_ci_wilson"],
            "single_class": conf.n_pos == 0 or conf.n_neg == 0,
        }
    return out


def source_only_auc(manifest: Manifest, scored: Scored) -> float:
    """AUC of a 'classifier' that sees only the source: its COVID-19 share in the train split.

    High values mean the source alone separates the classes, so a model's AUC on this split says
    little about whether it looks at the lungs.
    """
    train = [r for r in manifest.rows if r.split == "train"]
    total = Counter(r.source or "unknown" for r in train)
    covid = Counter(r.source or "unknown" for r in train if r.label == 1)
    overall = (sum(covid.values()) + 1) / (len(train) + 2)
    share = {s: (covid[s] + 1) / (total[s] + 2) for s in total}
    scores = np.array([share.get(r.source or "unknown", overall) for r in scored.rows])
    return roc_auc(scored.labels, scores)


def confound_note(per_src: dict[str, dict[str, Any]], source_auc: float) -> str:
    """A short warning when the source alone separates the classes, else an empty string."""
    single = [
        f"{name} ({'COVID-19' if d['n_non_covid'] == 0 else 'non-COVID'} only)"
        for name, d in per_src.items()
        if d["single_class"]
    ]
    if not math.isfinite(source_auc) or source_auc < SOURCE_CONFOUND_AUC:
        return ""
    mixed = [n for n, d in per_src.items() if not d["single_class"]]
    return (
        f"Source alone separates the classes here: knowing only where an image came from "
        f"(its source's COVID-19 share in the train split) gives AUC {source_auc:.3f}. "
        f"Single-class sources: {', '.join(single) or 'none'}. The overall AUC therefore "
        f"partly measures source recognition; the per-source rows of the mixed sources "
        f"({', '.join(mixed) or 'none'}) and the heatmaps are the better evidence that the "
        f"model looks at the lungs."
    )


def finding_groups(scored: Scored, threshold: float) -> dict[str, dict[str, Any]]:
    """Per group (COVID-19, No Finding, other disease): n, score quartiles, share called COVID."""
    groups = np.array([r.finding_group for r in scored.rows])
    out: dict[str, dict[str, Any]] = {}
    for key, title in FINDING_GROUPS.items():
        s = scored.probs[groups == key]
        if not s.size:
            continue
        called = int((s >= threshold).sum())
        q1, med, q3 = np.percentile(s, [25, 50, 75])
        out[key] = {
            "title": title,
            "n": int(s.size),
            "median": float(med),
            "q1": float(q1),
            "q3": float(q3),
            "called_covid": called,
            "called_covid_rate": called / s.size,
            "called_covid_ci_wilson": list(wilson_interval(called, int(s.size))),
        }
    return out


def compute_metrics(
    scored: Scored,
    card: ModelCard,
    manifest: Manifest,
    split: str,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    thresholds: Sequence[float] = PAPER_THRESHOLDS,
) -> dict[str, Any]:
    """Everything ``metrics.json`` holds (NaN written as null)."""
    y, s = scored.labels, scored.probs
    threshold = card.threshold
    auc = roc_auc(y, s)
    auc_ci = bootstrap_auc_interval(y, s, n_boot=n_boot, seed=seed)
    table_thresholds = sorted({*thresholds, threshold})
    per_src = per_source(scored, threshold)
    src_auc = source_only_auc(manifest, scored)
    result: dict[str, Any] = {
        "version": card.version,
        "architecture": card.architecture,
        "init": card.init,
        "input_size": card.input_size,
        "split": split,
        "manifest": str(manifest.path),
        "manifest_sha256": manifest.sha256,
        "trained_on_manifest_sha256": card.training_manifest_sha256,
        "n": int(y.size),
        "n_covid": int((y == 1).sum()),
        "n_non_covid": int((y == 0).sum()),
        "threshold": threshold,
        "threshold_method": card.threshold_method,
        "operating_point": confusion_at(y, s, threshold).summary(),
        "auc": auc,
        "auc_ci_bootstrap": list(auc_ci),
        "auc_ci_method": f"stratified percentile bootstrap, {n_boot} resamples, seed {seed}",
        "average_precision": average_precision(y, s),
        "thresholds": threshold_table(y, s, table_thresholds),
        "roc": roc_points(y, s),
        "pr": pr_points(y, s),
        "finding_groups": finding_groups(scored, threshold),
        "per_source": per_src,
        "source_only_auc": src_auc,
        "source_confound_note": confound_note(per_src, src_auc),
        "labels": [LABELS[int(v)] for v in y],
        "scores": [round(float(v), 6) for v in s],
        "paths": [r.relpath for r in scored.rows],
        "finding_group_of": [r.finding_group for r in scored.rows],
        "source_of": [r.source for r in scored.rows],
    }
    return json_safe(result)
