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
from models.operating_point import describe
from training import plots
from training.evaluate import FEW_PER_CLASS, FINDING_GROUPS
from training.localisation import occlusion_grid_with_lungs
from training.metrics import NOT_DEFINED_ONE_CLASS

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
    masks: list[np.ndarray] = field(default_factory=list)
    """Lung-field masks of the images (drawn as an outline); empty when not computed."""
    window: int = 0
    stride: int = 0
    note: str = ""


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f} %"


def _ci(ci: Sequence[float | None] | None, digits: int = 1) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "n/a"
    return f"{100 * ci[0]:.{digits}f}-{100 * ci[1]:.{digits}f}"


def _num(value: float | None, digits: int = 3, *, one_class: bool = False) -> str:
    """``value`` to ``digits``; a missing one ``n/a``, or (``one_class``: an AUC that only a
    split of one class lacks) "not defined (one class)"."""
    if value is None or not math.isfinite(value):
        return NOT_DEFINED_ONE_CLASS if one_class else "n/a"
    return f"{value:.{digits}f}"


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
        if len(occ.masks) == len(occ.images):
            occlusion_grid_with_lungs(
                occ.images, occ.heatmaps, occ.masks, occ.titles, out / FIGURES["occlusion"]
            )
        else:
            plots.occlusion_grid(occ.images, occ.heatmaps, occ.titles, out / FIGURES["occlusion"])
        written.append(FIGURES["occlusion"])
    return written


def _operating_point_rows(metrics: dict[str, Any]) -> list[str]:
    """Headline rows for the card's named operating points (none for older cards)."""
    rows = []
    for name, p in metrics.get("operating_points", {}).items():
        rows.append(
            f"| sensitivity / specificity at the {describe(name)} point, threshold "
            f"{p['threshold']:.4f} | {_pct(p['sensitivity'])} / {_pct(p['specificity'])} | "
            f"{_ci(p['sensitivity_ci_normal'])} / {_ci(p['specificity_ci_normal'])} | "
            f"{_ci(p['sensitivity_ci_wilson'])} / {_ci(p['specificity_ci_wilson'])} (Wilson) |"
        )
    return rows


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
        f"| ROC AUC, pooled over sources | {_num(metrics['auc'], one_class=True)} | - | "
        f"{_auc_ci(metrics['auc_ci_bootstrap'])} (bootstrap) |",
        *_within_headline_rows(metrics),
        f"| average precision | {_num(metrics['average_precision'])} | - | - |",
        f"| sensitivity at threshold | {_pct(op['sensitivity'])} "
        f"({op['tp']}/{op['tp'] + op['fn']}) "
        f"| {_ci(op['sensitivity_ci_normal'])} | {_ci(op['sensitivity_ci_wilson'])} (Wilson) |",
        f"| specificity at threshold | {_pct(op['specificity'])} "
        f"({op['tn']}/{op['tn'] + op['fp']}) "
        f"| {_ci(op['specificity_ci_normal'])} | {_ci(op['specificity_ci_wilson'])} (Wilson) |",
        *_operating_point_rows(metrics),
        "",
        f"AUC interval: {metrics['auc_ci_method']}.",
        "",
        *_within_section(metrics),
        *_probe_section(metrics),
        *_localisation_section(metrics),
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
    baseline = metrics.get("source_baseline") or {}
    lines += [
        "",
        f"Source-only AUC (source's COVID-19 share in train as the score, shares from the "
        f"{baseline.get('origin', 'train split')}): {_num(metrics['source_only_auc'])}.",
        "",
    ]
    if metrics["source_confound_note"]:
        lines += [f"> **Note.** {metrics['source_confound_note']}", ""]
    lines += ["## Occlusion heatmaps of test COVID-19 images (Fig 14)", ""]
    if FIGURES["occlusion"] in figures and occ is not None:
        outline = (
            " The white line is the lung-field outline (`models.lungs.lung_fields`); each "
            "title gives the share of the positive evidence inside it."
            if occ.masks
            else ""
        )
        lines += [
            f"Window {occ.window} px, stride {occ.stride} px (model-input pixels); colour is the "
            "drop of the COVID-19 probability when that area is covered. Images are chosen in "
            f"manifest order, alternating sources.{outline}",
            "",
            "![occlusion heatmaps](occlusion.png)",
            "",
        ]
    else:
        lines += [f"Not computed: {occ.note if occ is not None else 'disabled'}.", ""]
    if FIGURES["training"] in figures:
        lines += ["## Training curves", "", "![training curves](training_curves.png)", ""]
    return "\n".join(lines)


def _auc_ci(ci: Sequence[float | None] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "n/a"
    return f"{_num(ci[0])}-{_num(ci[1])}"


def _within_headline_rows(metrics: dict[str, Any]) -> list[str]:
    """Headline rows beside the pooled AUC: within-source AUC and the source-only baseline."""
    rows: list[str] = []
    within = metrics.get("within_source")
    if within:
        names = ", ".join(within["sources"]) or "none"
        rows.append(
            f"| **ROC AUC within source** (pairs of one source; {within['pairs']} pairs from "
            f"{names}) | **{_num(within['pooled_auc'])}** | - | "
            f"{_auc_ci(within['pooled_auc_ci_bootstrap'])} (bootstrap within sources) |"
        )
        for name, d in within["sources"].items():
            rows.append(
                f"| ROC AUC within {name} ({d['n_covid']} COVID-19, {d['n_non_covid']} non-COVID) "
                f"| {_num(d['auc'])} | - | {_auc_ci(d['auc_ci_bootstrap'])} (bootstrap) |"
            )
    baseline = metrics.get("source_baseline")
    if baseline:
        rows.append(
            f"| source-only baseline AUC (score = source's COVID-19 share in train) "
            f"| {_num(baseline['auc'])} | - | {_auc_ci(baseline['auc_ci_bootstrap'])} "
            "(bootstrap) |"
        )
    return rows


def _within_section(metrics: dict[str, Any]) -> list[str]:
    """Sensitivity and specificity inside each mixed source, and what the baseline means."""
    within = metrics.get("within_source")
    if not within:
        return []
    lines = [
        "## Within source: the numbers the source cannot explain",
        "",
        "The pooled AUC rewards telling the collections apart (COVID-19 images are mostly "
        "publication figures and Hannover films, non-COVID mostly NIH). Inside one source that "
        "holds both classes the source cannot help, so these are the headline numbers for "
        "disease signal.",
        "",
        "| source | COVID-19 | non-COVID | AUC (95 % CI, bootstrap) | sensitivity at threshold "
        "(Wilson CI) | specificity at threshold (Wilson CI) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, d in within["sources"].items():
        mark = " (few)" if d.get("few") else ""
        lines.append(
            f"| {name}{mark} | {d['n_covid']} | {d['n_non_covid']} | {_num(d['auc'])} "
            f"({_auc_ci(d['auc_ci_bootstrap'])}) | {_pct(d['sensitivity'])} "
            f"({d['tp']}/{d['tp'] + d['fn']}; {_ci(d['sensitivity_ci_wilson'])}) | "
            f"{_pct(d['specificity'])} ({d['tn']}/{d['tn'] + d['fp']}; "
            f"{_ci(d['specificity_ci_wilson'])}) |"
        )
    lines.append(
        f"| **pooled within source** | {sum(d['n_covid'] for d in within['sources'].values())} "
        f"| {sum(d['n_non_covid'] for d in within['sources'].values())} "
        f"| **{_num(within['pooled_auc'])}** ({_auc_ci(within['pooled_auc_ci_bootstrap'])}) "
        "| - | - |"
    )
    few = [name for name, d in within["sources"].items() if d.get("few")]
    lines += ["", f"AUC intervals: {within['auc_ci_method']}."]
    if few:
        lines.append(
            f"(few): {', '.join(few)} has fewer than {FEW_PER_CLASS} images of one class; its "
            "AUC and interval rest on a handful of pairs and say little on their own (the pooled "
            "value weights each source by its pairs)."
        )
    lines.append("")
    baseline = metrics.get("source_baseline")
    if baseline:
        shares = ", ".join(
            f"{k if k != '*' else 'all (unseen sources)'} {_pct(v)}"
            for k, v in baseline["shares"].items()
        )
        unseen = ", ".join(baseline["unseen_sources"])
        if unseen:
            unseen = f"; sources unseen in training, scored by the overall share: {unseen}"
        lines += [
            f"**Source-only baseline.** Every image scored by its source's COVID-19 share in the "
            f"train split ({shares or 'n/a'}; from the {baseline['origin']}"
            f"{unseen}"
            f"): AUC {_num(baseline['auc'])} ({_auc_ci(baseline['auc_ci_bootstrap'])}). "
            f"Within a source every image gets the same score, so its within-source AUC is 0.5 "
            f"by construction (computed: {_num(baseline['within_source_auc'])}): a pooled AUC "
            f"near {_num(baseline['auc'])} needs no look at the lungs, a within-source AUC above "
            "0.5 does.",
            "",
        ]
    return lines


def _probe_section(metrics: dict[str, Any]) -> list[str]:
    """The lungs-hidden / lungs-only probes: AUC pooled and within source, mean probability."""
    probes = metrics.get("probes")
    if probes is None:
        return []
    lines = ["## Shortcut probes: lungs hidden, lungs only", ""]
    if "skipped" in probes:
        return [*lines, f"Not computed: {probes['skipped']}.", ""]
    sources = sorted({name for p in probes["probes"].values() for name in p["per_source_auc"]})
    lines += [
        "Every image scored again with the lung fields painted mid-gray (lungs hidden) and with "
        "everything but the lung fields painted mid-gray (lungs only), through the scoring path "
        f"({probes['fill_note']}). A model that reads the lungs keeps its AUC on lungs only and "
        "drops towards 0.5 with the lungs hidden; the within-source columns are the ones the "
        "source cannot explain.",
        "",
        "| input | AUC pooled | AUC within source (pooled) | "
        + "".join(f"AUC within {s} | " for s in sources)
        + "mean p(COVID-19), COVID-19 images | mean p(COVID-19), non-COVID images |",
        "| --- | --- | --- | " + "--- | " * len(sources) + "--- | --- |",
    ]
    for p in probes["probes"].values():
        lines.append(
            f"| {p['title']} | {_num(p['auc'])} | {_num(p['within_source_auc'])} | "
            + "".join(f"{_num(p['per_source_auc'].get(s))} | " for s in sources)
            + f"{_num(p['mean_covid'])} | {_num(p['mean_non_covid'])} |"
        )
    fields = probes["lung_fields"]
    methods = ", ".join(f"{k} {v}" for k, v in fields["methods"].items())
    fb = fields["fallback_by_class"]
    lines += [
        "",
        f"Lung fields: `models.lungs.lung_fields` on the scored {metrics['input_size']} px "
        f"image (method: {methods}; mean area {_pct(fields['mean_area'])} of the image); fell "
        f"back to the prior on {fb['covid']['fallback']}/{fb['covid']['n']} COVID-19 and "
        f"{fb['non_covid']['fallback']}/{fb['non_covid']['n']} non-COVID images.",
        "",
    ]
    return lines


def _localisation_section(metrics: dict[str, Any]) -> list[str]:
    """Share of the positive occlusion evidence inside the lung fields, on the sample."""
    loc = metrics.get("localisation")
    if loc is None:
        return []
    lines = ["## Heatmap localisation: evidence inside the lung fields (sample)", ""]
    if "skipped" in loc:
        return [*lines, f"Not computed: {loc['skipped']}.", ""]
    lines += [
        f"On a **sample** of {loc['sample_size']} of {loc['population']} images ({loc['sampling']}"
        f", seed {loc['seed']}): the occlusion map (window {loc['window']} px, stride "
        f"{loc['stride']} px, mid-gray fill) resampled to the model input, and the share of its "
        "positive part (drop of the COVID-19 probability when a patch is hidden) that lies inside "
        f"the lung fields. The lung fields cover {_pct(loc['uniform_share'])} of these images: "
        "evidence spread evenly would give about that share. n counts images whose map has any "
        "positive value.",
        "",
        "| images | n | mean share in lungs | median share in lungs |",
        "| --- | --- | --- | --- |",
    ]

    def row(title: str, st: dict[str, Any]) -> str:
        return f"| {title} | {st['n']} | {_pct(st['mean'])} | {_pct(st['median'])} |"

    lines.append(row("all sampled", loc["all"]))
    lines.append(row("COVID-19", loc["by_class"]["covid"]))
    lines.append(row("non-COVID", loc["by_class"]["non_covid"]))
    lines.append(row(f"**COVID-19 calls** (p >= {metrics['threshold']:.4f})", loc["covid_calls"]))
    lines.append(row("&nbsp;&nbsp;true positives", loc["covid_calls_true_positive"]))
    lines.append(row("&nbsp;&nbsp;false positives", loc["covid_calls_false_positive"]))
    for name, d in loc["by_source"].items():
        lines.append(row(f"{name}", d["all"]))
        for key, title in (("covid", "COVID-19"), ("non_covid", "non-COVID")):
            if d[key]["n"] and d[key]["n"] != d["all"]["n"]:
                lines.append(row(f"&nbsp;&nbsp;{name}, {title}", d[key]))
    lines.append("")
    return lines


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
