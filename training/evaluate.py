"""Evaluate a model version on a manifest split: every number of the report, as one dict.

Scores come from the same path as serving (``resize_image`` -> ``normalise`` -> softmax). The
result dict is what ``metrics.json`` holds and what :mod:`training.report` renders: AUC with a
bootstrap interval, average precision, sensitivity/specificity at the card's operating point and
over thresholds with the paper's normal-approximation and Wilson intervals, the confusion matrix,
score summaries per finding group, metrics per source, and the numbers that expose the known
confound of the public COVID-19 sets (source and label go together): the within-source metrics
(AUC with bootstrap CI and sensitivity/specificity with Wilson CIs inside each source that holds
both classes, and their pooled AUC) and the source-only baseline of :mod:`training.baseline`. The
shortcut probes and the heatmap localisation need the model again and are added by
:mod:`training.shortcuts`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from models.card import ModelCard
from training.baseline import source_baseline, source_name
from training.dataset import SplitData
from training.intervals import bootstrap_auc_interval, rank_auc, wilson_interval
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
from training.sources import per_source_auc, pooled_within_source_auc

FINDING_GROUPS: dict[str, str] = {
    "covid": "COVID-19",
    "no_finding": "No Finding",
    "other_disease": "other disease",
}
SOURCE_CONFOUND_AUC = 0.9
"""Source-only AUC at or above which the report warns that source alone separates the classes."""
FEW_PER_CLASS = 5
"""A mixed source with fewer images than this in either class is flagged: its AUC and interval
rest on a handful of pairs (one non-COVID image gives an AUC of 0 or 1 and a zero-width CI)."""


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


def within_source(
    labels: np.ndarray,
    probs: np.ndarray,
    sources: Sequence[str],
    threshold: float,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Headline numbers the source cannot explain: metrics inside each source with both classes.

    Per such source: AUC (Mann-Whitney, :func:`training.sources.per_source_auc`) with a stratified
    bootstrap 95 % CI, sensitivity and specificity at ``threshold`` with Wilson CIs. ``pooled_auc``
    is :func:`training.sources.pooled_within_source_auc` (the AUC of the COVID-19/non-COVID pairs
    that never cross a source); its CI resamples positives and negatives inside each source.
    """
    y = np.asarray(labels).astype(int)
    s = np.asarray(probs, dtype=np.float64)
    src = np.asarray(list(sources))
    per: dict[str, dict[str, Any]] = {}
    for entry in per_source_auc(y, s, list(sources)):
        sel = src == entry.source
        conf = confusion_at(y[sel], s[sel], threshold)
        lo, hi = bootstrap_auc_interval(y[sel], s[sel], n_boot=n_boot, seed=seed)
        per[entry.source] = {
            "n_covid": entry.n_pos,
            "n_non_covid": entry.n_neg,
            "pairs": entry.pairs,
            "few": min(entry.n_pos, entry.n_neg) < FEW_PER_CLASS,
            "auc": entry.auc,
            "auc_ci_bootstrap": [lo, hi],
            "sensitivity": conf.sensitivity,
            "sensitivity_ci_wilson": list(wilson_interval(conf.tp, conf.n_pos)),
            "specificity": conf.specificity,
            "specificity_ci_wilson": list(wilson_interval(conf.tn, conf.n_neg)),
            "tp": conf.tp,
            "fn": conf.fn,
            "tn": conf.tn,
            "fp": conf.fp,
        }
    return {
        "sources": per,
        "pooled_auc": pooled_within_source_auc(y, s, list(sources)),
        "pooled_auc_ci_bootstrap": list(
            pooled_within_source_interval(y, s, src, n_boot=n_boot, seed=seed)
        ),
        "pairs": int(sum(d["pairs"] for d in per.values())),
        "auc_ci_method": f"stratified percentile bootstrap within each source, {n_boot} "
        f"resamples, seed {seed}",
    }


def pooled_within_source_interval(
    labels: np.ndarray,
    probs: np.ndarray,
    sources: np.ndarray,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile-bootstrap CI of the pooled within-source AUC; NaN if no source has both classes.

    Each replicate resamples the COVID-19 and the non-COVID images of every mixed source
    separately (so the pair weights stay fixed) and pools the per-source AUCs by pairs.
    """
    y = np.asarray(labels).astype(int)
    s = np.asarray(probs, dtype=np.float64)
    groups = []
    for name in sorted(set(np.asarray(sources).tolist())):
        sel = np.asarray(sources) == name
        pos, neg = s[sel & (y == 1)], s[sel & (y == 0)]
        if pos.size and neg.size:
            groups.append((pos, neg))
    if not groups or n_boot < 1:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    weights = np.array([pos.size * neg.size for pos, neg in groups], dtype=np.float64)
    aucs = np.empty((n_boot, len(groups)))
    for j, (pos, neg) in enumerate(groups):
        boot_y = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
        for i in range(n_boot):
            sample = np.concatenate(
                [pos[rng.integers(0, pos.size, pos.size)], neg[rng.integers(0, neg.size, neg.size)]]
            )
            aucs[i, j] = rank_auc(boot_y, sample)
    pooled = aucs @ weights / weights.sum()
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(pooled, [tail, 100.0 - tail])
    return (float(lo), float(hi))


def confound_note(per_src: dict[str, dict[str, Any]], source_auc: float | None) -> str:
    """A short warning when the source alone separates the classes, else an empty string."""
    single = [
        f"{name} ({'COVID-19' if d['n_non_covid'] == 0 else 'non-COVID'} only)"
        for name, d in per_src.items()
        if d["single_class"]
    ]
    if source_auc is None or not math.isfinite(source_auc) or source_auc < SOURCE_CONFOUND_AUC:
        return ""
    mixed = [n for n, d in per_src.items() if not d["single_class"]]
    return (
        f"Source alone separates the classes here: knowing only where an image came from "
        f"(its source's COVID-19 share in the train split) gives AUC {source_auc:.3f}. "
        f"Single-class sources: {', '.join(single) or 'none'}. The overall AUC therefore "
        f"partly measures source recognition; the per-source rows of the mixed sources "
        f"({', '.join(mixed) or 'none'}), the within-source AUC, the shortcut probes and the "
        f"heatmap localisation are the better evidence that the model looks at the lungs."
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
    sources = [source_name(r) for r in scored.rows]
    within = within_source(y, s, sources, threshold, n_boot=n_boot, seed=seed)
    baseline = source_baseline(y, sources, card, manifest, n_boot=n_boot, seed=seed)
    src_auc = baseline["auc"]
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
        # Each of the card's named points (paper, clinical) on this split: what either
        # threshold_policy would give here.
        "operating_points": {
            name: {"method": point.method, **confusion_at(y, s, point.threshold).summary()}
            for name, point in card.operating_points.items()
        },
        "auc": auc,
        "auc_ci_bootstrap": list(auc_ci),
        "auc_ci_method": f"stratified percentile bootstrap, {n_boot} resamples, seed {seed}",
        "average_precision": average_precision(y, s),
        "thresholds": threshold_table(y, s, table_thresholds),
        "roc": roc_points(y, s),
        "pr": pr_points(y, s),
        "finding_groups": finding_groups(scored, threshold),
        "per_source": per_src,
        "within_source": within,
        "source_baseline": baseline,
        "source_only_auc": src_auc,
        "source_confound_note": confound_note(per_src, src_auc),
        "labels": [LABELS[int(v)] for v in y],
        "scores": [round(float(v), 6) for v in s],
        "paths": [r.relpath for r in scored.rows],
        "finding_group_of": [r.finding_group for r in scored.rows],
        "source_of": [r.source for r in scored.rows],
    }
    return json_safe(result)
