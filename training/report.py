"""Write an evaluation report folder: ``metrics.json``, ``report.md`` and its figures.

The Markdown follows the paper's presentation: headline metrics with both intervals, the
threshold table (Tables 2-5), ROC and PR (Figs 10-11), confusion matrix (Figs 12-13), score
histograms (Figs 6-9), per-source metrics with the confound note, and occlusion heatmaps (Fig 14).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.card import ModelCard
from training import plots
from training.evaluate import FINDING_GROUPS

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
REPORT_FILE = "report.md"
FIGURES = {
    "roc": "roc.png",
    "pr": "pr.png",
    "sens_spec": "sens_spec.png",
    "confusion": "confusion.png",
    "histograms": "score_histograms.png",
    "occlusion": "occlusion.png",
    "training": "training_curves.png",
}


@dataclass
class OcclusionExamples:
    """Images (gray, model-input size) with their heatmaps, for the Fig 14 grid."""

    images: list[np.ndarray] = field(default_factory=list)
    heatmaps: list[np.ndarray] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    window: int = 0
    stride: int = 0
    note: str = ""


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f} %"


def _ci(ci: Sequence[float | None] | None, digits: int = 1) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "n/a"
    return f"{100 * ci[0]:.{digits}f}-{100 * ci[1]:.{digits}f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _figures(
    metrics: dict[str, Any], card: ModelCard, out: Path, occ: OcclusionExamples | None
) -> list[str]:
    y = np.array([1 if v == "covid" else 0 for v in metrics["labels"]])
    s = np.array(metrics["scores"], dtype=float)
    thr = metrics["threshold"]
    op = metrics["operating_point"]
    written: list[str] = []
    label = f"{card.version or card.architecture} AUC {_num(metrics['auc'])}"
    if metrics["auc"] is not None:
        spec = op["specificity"]
        points = {label: (1 - spec, op["sensitivity"])} if spec is not None else None
        plots.roc_figure(
            {label: (metrics["roc"]["fpr"], metrics["roc"]["tpr"])}, out / FIGURES["roc"], points
        )
        written.append(FIGURES["roc"])
    if metrics["average_precision"] is not None:
        plots.pr_figure(
            {
                f"AP {_num(metrics['average_precision'])}": (
                    metrics["pr"]["recall"],
                    metrics["pr"]["precision"],
                )
            },
            out / FIGURES["pr"],
            prevalence=metrics["n_covid"] / max(metrics["n"], 1),
        )
        written.append(FIGURES["pr"])
    plots.sens_spec_curve(y, s, thr, out / FIGURES["sens_spec"])
    plots.confusion_figure(op["tp"], op["fn"], op["tn"], op["fp"], thr, out / FIGURES["confusion"])
    hist = {
        FINDING_GROUPS[k]: s[np.array(metrics["finding_group_of"]) == k] for k in FINDING_GROUPS
    }
    plots.score_histograms(hist, thr, out / FIGURES["histograms"])
    written += [FIGURES["sens_spec"], FIGURES["confusion"], FIGURES["histograms"]]
    history = card.training_parameters.get("history")
    if history:
        plots.training_curves(history, out / FIGURES["training"])
        written.append(FIGURES["training"])
    if occ is not None and occ.images:
        plots.occlusion_grid(occ.images, occ.heatmaps, occ.titles, out / FIGURES["occlusion"])
        written.append(FIGURES["occlusion"])
    return written


def _markdown(
    metrics: dict[str, Any], card: ModelCard, figures: list[str], occ: OcclusionExamples | None
) -> str:
    op = metrics["operating_point"]
    params = card.training_parameters
    lines = [
        f"# Evaluation of model {card.version or '(unsaved)'} on the {metrics['split']} split",
        "",
        f"- Architecture: `{card.architecture}`, input {card.input_size} px, init `{card.init}`",
        f"- Trained: {params.get('epochs_run', '?')} epochs "
        f"(best {params.get('best_epoch', '?')}), "
        f"{params.get('training_seconds', '?')} s; command: `{card.training_command or 'n/a'}`",
        f"- Data: `{metrics['manifest']}` (sha256 `{metrics['manifest_sha256'][:16]}`), "
        f"{metrics['n']} images: {metrics['n_covid']} COVID-19, {metrics['n_non_covid']} non-COVID",
        f"- Operating threshold {metrics['threshold']:.4f}: {metrics['threshold_method']}",
        "",
        "## Headline",
        "",
        "| metric | value | 95 % CI (paper: normal approx.) | 95 % CI (Wilson / bootstrap) |",
        "| --- | --- | --- | --- |",
        f"| ROC AUC | {_num(metrics['auc'])} | - | {_num(metrics['auc_ci_bootstrap'][0])}-"
        f"{_num(metrics['auc_ci_bootstrap'][1])} (bootstrap) |",
        f"| average precision | {_num(metrics['average_precision'])} | - | - |",
        f"| sensitivity at threshold | {_pct(op['sensitivity'])} "
        f"({op['tp']}/{op['tp'] + op['fn']}) "
        f"| {_ci(op['sensitivity_ci_normal'])} | {_ci(op['sensitivity_ci_wilson'])} (Wilson) |",
        f"| specificity at threshold | {_pct(op['specificity'])} "
        f"({op['tn']}/{op['tn'] + op['fp']}) "
        f"| {_ci(op['specificity_ci_normal'])} | {_ci(op['specificity_ci_wilson'])} (Wilson) |",
        "",
        f"AUC interval: {metrics['auc_ci_method']}.",
        "",
        "## Sensitivity and specificity over thresholds (Tables 2-5)",
        "",
        "| threshold | sensitivity | normal CI | Wilson CI | specificity | normal CI | Wilson CI |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in metrics["thresholds"]:
        mark = " (operating point)" if row["threshold"] == metrics["threshold"] else ""
        lines.append(
            f"| {row['threshold']:.4f}{mark} | {_pct(row['sensitivity'])} | "
            f"{_ci(row['sensitivity_ci_normal'])} | {_ci(row['sensitivity_ci_wilson'])} | "
            f"{_pct(row['specificity'])} | {_ci(row['specificity_ci_normal'])} | "
            f"{_ci(row['specificity_ci_wilson'])} |"
        )
    lines += ["", "![sensitivity and specificity over thresholds](sens_spec.png)", ""]
    lines += ["## ROC and precision-recall (Figs 10-11)", ""]
    lines += [f"![{f}]({f})" for f in (FIGURES["roc"], FIGURES["pr"]) if f in figures]
    lines += [
        "",
        "## Confusion matrix at the operating point (Figs 12-13)",
        "",
        "![confusion matrix](confusion.png)",
        "",
        "## Predicted scores by finding (Figs 6-9)",
        "",
        "| group | n | median score | IQR | called COVID-19 | 95 % CI (Wilson) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for group in metrics["finding_groups"].values():
        lines.append(
            f"| {group['title']} | {group['n']} | {group['median']:.3f} | "
            f"{group['q1']:.3f}-{group['q3']:.3f} | {group['called_covid']} "
            f"({_pct(group['called_covid_rate'])}) | {_ci(group['called_covid_ci_wilson'])} |"
        )
    lines += ["", "![score histograms](score_histograms.png)", "", "## Per source", ""]
    lines += [
        "| source | COVID-19 | non-COVID | AUC | sensitivity (Wilson CI) "
        "| specificity (Wilson CI) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, d in metrics["per_source"].items():
        lines.append(
            f"| {name} | {d['n_covid']} | {d['n_non_covid']} | {_num(d['auc'])} | "
            f"{_pct(d['sensitivity'])} ({_ci(d['sensitivity_ci_wilson'])}) | "
            f"{_pct(d['specificity'])} ({_ci(d['specificity_ci_wilson'])}) |"
        )
    lines += [
        "",
        f"Source-only AUC (source's COVID-19 share in train as the score): "
        f"{_num(metrics['source_only_auc'])}.",
        "",
    ]
    if metrics["source_confound_note"]:
        lines += [f"> **Note.** {metrics['source_confound_note']}", ""]
    lines += ["## Occlusion heatmaps of test COVID-19 images (Fig 14)", ""]
    if FIGURES["occlusion"] in figures and occ is not None:
        lines += [
            f"Window {occ.window} px, stride {occ.stride} px (model-input pixels); colour is the "
            "drop of the COVID-19 probability when that area is covered. Images are chosen in "
            "manifest order, alternating sources.",
            "",
            "![occlusion heatmaps](occlusion.png)",
            "",
        ]
    else:
        lines += [f"Not computed: {occ.note if occ is not None else 'disabled'}.", ""]
    if FIGURES["training"] in figures:
        lines += ["## Training curves", "", "![training curves](training_curves.png)", ""]
    return "\n".join(lines)


def write_report(
    out_dir: Path, metrics: dict[str, Any], card: ModelCard, occ: OcclusionExamples | None = None
) -> list[Path]:
    """Write metrics.json, the figures and report.md into ``out_dir``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = _figures(metrics, card, out_dir, occ)
    if occ is not None:
        metrics = {
            **metrics,
            "occlusion": {
                "window": occ.window,
                "stride": occ.stride,
                "images": occ.titles,
                "note": occ.note,
            },
        }
    (out_dir / METRICS_FILE).write_text(
        json.dumps(metrics, indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    (out_dir / REPORT_FILE).write_text(_markdown(metrics, card, figures, occ), encoding="utf-8")
    return [out_dir / METRICS_FILE, out_dir / REPORT_FILE, *(out_dir / f for f in figures)]


def write_predictions(out_dir: Path, scored: Any, threshold: float) -> Path:
    """``predictions.csv``: one row per image with its probability and finding at ``threshold``.

    The same finding the node writes into its SR for the same pixels, so a site can check the
    service against the offline evaluation image by image.
    """
    import csv

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PREDICTIONS_FILE
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "source", "probability", "finding"])
        for row, prob in zip(scored.rows, scored.probs, strict=True):
            finding = "present" if float(prob) >= threshold else "absent"
            label = "covid" if row.label == 1 else "non_covid"
            writer.writerow([row.relpath, label, row.source, f"{float(prob):.6f}", finding])
    return path
