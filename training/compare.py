"""Compare model versions on one split: the paper's Table 6 and overlaid ROC / PR curves.

Each version is scored on the same images; the table gives, per version, the architecture, AUC with
its bootstrap interval, the within-source AUC beside it (pooled over the sources that hold both
classes, and per such source: the numbers the source cannot explain), average precision, and
sensitivity / specificity at the version's own operating threshold with Wilson intervals. When a
version's training data lacked some sources of the split (a leave-one-source-out model, see
:mod:`training.loso`; known from the card's ``source_prevalence``), a column gives its AUC on the
images of those unseen sources. Two more columns come from the shortcut checks (``compare`` runs
them as ``evaluate`` does): the within-source AUC with the lung fields hidden and with only the
lung fields shown (:mod:`training.probes`), and the share of the positive occlusion evidence inside
the lung fields for the COVID-19 calls of a stratified sample, beside the lungs' share of the
image (:mod:`training.localisation`). Where a cross-validation summary of a version's recipe is
given (``compare --cv``), its out-of-fold figures stand beside the split's as mean ± sd.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from models.card import ALL_SOURCES
from training import plots
from training.baseline import source_name
from training.cv_metrics import CV_METRICS, HEADLINE, format_mean_sd
from training.evaluate import Scored, json_safe, within_source
from training.intervals import bootstrap_auc_interval
from training.metrics import (
    NOT_DEFINED_ONE_CLASS,
    average_precision,
    confusion_at,
    pr_points,
    roc_auc,
    roc_points,
)
from training.sources import pooled_within_source_auc

COMPARE_FILES = ("compare.json", "compare.md", "roc_compare.png", "pr_compare.png")

CV_COLUMNS = HEADLINE
"""The cross-validation figures ``compare`` shows beside a version (:mod:`training.cv_metrics`)."""


def cv_columns(report: dict[str, Any], folder: str) -> dict[str, Any]:
    """The mean ± sd entries of a cross-validation summary (``cv.json``) that ``compare`` shows,
    and where they come from."""
    summary = report["summary"]
    return {
        "from": folder,
        "folds": report.get("folds"),
        "seeds": report.get("seeds"),
        **{key: summary.get(key) for key in CV_COLUMNS},
    }


def unseen_sources(
    scored: Scored, trained_sources: Collection[str] | None
) -> dict[str, Any] | None:
    """AUC on the images whose source the version never trained on; None if there are none.

    ``trained_sources`` are the keys of the card's ``source_prevalence`` (None or empty: unknown,
    nothing reported). ``auc`` pools the unseen images; ``within_source_auc`` keeps to pairs of one
    source (for a single held-out source both are the same number).
    """
    if not trained_sources:
        return None
    known = set(trained_sources) - {ALL_SOURCES}
    sources = np.array([source_name(r) for r in scored.rows])
    sel = ~np.isin(sources, sorted(known))
    if not sel.any():
        return None
    y, s = scored.labels[sel], scored.probs[sel]
    return {
        "sources": sorted(set(sources[sel].tolist())),
        "n": int(sel.sum()),
        "n_covid": int((y == 1).sum()),
        "auc": roc_auc(y, s),
        "within_source_auc": pooled_within_source_auc(y, s, sources[sel].tolist()),
    }


def compare_row(
    version: str,
    arch: str,
    threshold: float,
    scored: Scored,
    n_boot: int,
    trained_sources: Collection[str] | None = None,
    probes: dict[str, Any] | None = None,
    localisation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One line of Table 6, with the within-source AUC and the unseen-source AUC beside it, and
    the shortcut checks' headline figures where ``probes`` / ``localisation`` (the summaries
    ``evaluate`` writes to metrics.json) are given."""
    y, s = scored.labels, scored.probs
    summary = confusion_at(y, s, threshold).summary()
    sources = [source_name(r) for r in scored.rows]
    within = within_source(y, s, sources, threshold, n_boot=n_boot)
    return {
        "version": version,
        "architecture": arch,
        "threshold": threshold,
        "auc": roc_auc(y, s),
        "auc_ci_bootstrap": list(bootstrap_auc_interval(y, s, n_boot=n_boot)),
        "within_source_auc": within["pooled_auc"],
        "within_source_auc_ci_bootstrap": within["pooled_auc_ci_bootstrap"],
        "within_source": {k: v["auc"] for k, v in within["sources"].items()},
        "unseen_sources": unseen_sources(scored, trained_sources),
        "probes": probe_columns(probes),
        "localisation": localisation_columns(localisation),
        "average_precision": average_precision(y, s),
        **{
            k: summary[k]
            for k in (
                "sensitivity",
                "sensitivity_ci_wilson",
                "sensitivity_ci_normal",
                "specificity",
                "specificity_ci_wilson",
                "specificity_ci_normal",
                "tp",
                "fn",
                "tn",
                "fp",
            )
        },
        "roc": roc_points(y, s),
        "pr": pr_points(y, s),
    }


def probe_columns(probes: dict[str, Any] | None) -> dict[str, Any] | None:
    """Pooled and within-source AUC of each probe (lungs hidden, lungs only); None when the
    probes did not run."""
    if not probes or "skipped" in probes:
        return None
    return {
        key: {"auc": p["auc"], "within_source_auc": p["within_source_auc"]}
        for key, p in probes["probes"].items()
        if key != "original"
    }


def localisation_columns(localisation: dict[str, Any] | None) -> dict[str, Any] | None:
    """Mean share of the positive evidence inside the lung fields: the COVID-19 calls' and every
    sampled image's, with the lungs' share of the image (what evenly spread evidence would give);
    None when the sample was not taken."""
    if not localisation or "skipped" in localisation:
        return None
    return {
        "covid_calls": localisation["covid_calls"],
        "all": localisation["all"],
        "uniform_share": localisation["uniform_share"],
        "sample_size": localisation["sample_size"],
    }


def _probe_cell(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    hidden, only = entry.get("lungs_hidden", {}), entry.get("lungs_only", {})
    return f"{_f(hidden.get('within_source_auc'))} / {_f(only.get('within_source_auc'))}"


def _localisation_cell(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    calls = entry["covid_calls"]
    return (
        f"{_f(calls['mean'], True)} of {calls['n']} calls "
        f"(lungs {_f(entry['uniform_share'], True)} of the image)"
    )


def _auc_cell(row: dict[str, Any]) -> str:
    """Pooled AUC with its interval; on a split of one class it is not defined."""
    if row["auc"] is None or not math.isfinite(row["auc"]):
        return NOT_DEFINED_ONE_CLASS
    return f"{_f(row['auc'])} ({_ci(row['auc_ci_bootstrap'])})"


def _cv_cell(entry: dict[str, Any] | None, key: str) -> str:
    return format_mean_sd(entry.get(key), key) if entry else "-"


def _f(value: float | None, pct: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.1f} %" if pct else f"{value:.3f}"


def _ci(ci: list[float], pct: bool = False) -> str:
    return f"{_f(ci[0], pct)}-{_f(ci[1], pct)}".replace(" %", "") + (" %" if pct else "")


def _unseen(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    return (
        f"{_f(entry['auc'])} on {', '.join(entry['sources'])} "
        f"({entry['n']} images; within source {_f(entry['within_source_auc'])})"
    )


def write_comparison(
    out_dir: Path, split: str, rows: list[dict[str, Any]], n_images: int
) -> list[Path]:
    """Write compare.json, compare.md and the overlaid ROC and PR figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    roc = {
        f"{r['version']} ({r['architecture']})": (r["roc"]["fpr"], r["roc"]["tpr"]) for r in rows
    }
    pr = {
        f"{r['version']} ({r['architecture']})": (r["pr"]["recall"], r["pr"]["precision"])
        for r in rows
    }
    points = {
        f"{r['version']} ({r['architecture']})": (1 - r["specificity"], r["sensitivity"])
        for r in rows
        if r["specificity"] is not None and math.isfinite(r["specificity"])
    }
    plots.roc_figure(roc, out_dir / "roc_compare.png", points)
    plots.pr_figure(pr, out_dir / "pr_compare.png")
    mixed = sorted({name for r in rows for name in r.get("within_source", {})})
    show_unseen = any(r.get("unseen_sources") for r in rows)
    show_probes = any(r.get("probes") for r in rows)
    show_loc = any(r.get("localisation") for r in rows)
    show_cv = any(r.get("cv") for r in rows)
    lines = [
        f"# Model comparison on the {split} split ({n_images} images)",
        "",
        "Sensitivity and specificity at each version's own operating threshold (chosen on val); "
        "95 % intervals: AUC stratified bootstrap, rates Wilson (paper's normal approx. in "
        "compare.json). The pooled AUC rewards recognising the image collection; the "
        "within-source AUC (pairs of one source, over the sources with both classes: "
        f"{', '.join(mixed) or 'none'}) does not."
        + (
            " Probes: the within-source AUC with the lung fields hidden / with only the lung "
            "fields shown (a model that reads the lungs keeps it on lungs only and drops towards "
            "0.5 with them hidden)."
            if show_probes
            else ""
        )
        + (
            " Evidence in lungs: the mean share of the positive occlusion evidence inside the "
            "lung fields for the COVID-19 calls of a stratified sample, beside the lungs' share "
            "of the image (evidence spread evenly would give that)."
            if show_loc
            else ""
        )
        + (
            " CV: mean ± sd over the folds (and seeds) of the version's recipe's cross-validation "
            "on train + val (`deepcovid cv`; sensitivity points on each fold's own predictions); "
            "- where none was given."
            if show_cv
            else ""
        ),
        "",
        "| version | architecture | AUC pooled (95 % CI) | AUC within source (95 % CI) | "
        + "".join(f"AUC {m} | " for m in mixed)
        + ("AUC on sources unseen in training | " if show_unseen else "")
        + ("within-source AUC, lungs hidden / lungs only | " if show_probes else "")
        + ("evidence in lungs, COVID-19 calls | " if show_loc else "")
        + "".join(f"CV {CV_METRICS[k]} | " for k in CV_COLUMNS if show_cv)
        + "AP | threshold | sensitivity (95 % CI) | specificity (95 % CI) |",
        "| --- | --- | --- | --- | "
        + "--- | " * (len(mixed) + int(show_unseen) + int(show_probes) + int(show_loc))
        + "--- | " * (len(CV_COLUMNS) if show_cv else 0)
        + "--- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['version']} | {r['architecture']} "
            f"| {_auc_cell(r)} "
            f"| {_f(r.get('within_source_auc'))} "
            f"({_ci(r.get('within_source_auc_ci_bootstrap') or [math.nan, math.nan])}) | "
            + "".join(f"{_f(r.get('within_source', {}).get(m))} | " for m in mixed)
            + (f"{_unseen(r.get('unseen_sources'))} | " if show_unseen else "")
            + (f"{_probe_cell(r.get('probes'))} | " if show_probes else "")
            + (f"{_localisation_cell(r.get('localisation'))} | " if show_loc else "")
            + "".join(f"{_cv_cell(r.get('cv'), k)} | " for k in CV_COLUMNS if show_cv)
            + f"{_f(r['average_precision'])} | {r['threshold']:.4f} "
            f"| {_f(r['sensitivity'], True)} ({_ci(r['sensitivity_ci_wilson'], True)}) "
            f"| {_f(r['specificity'], True)} ({_ci(r['specificity_ci_wilson'], True)}) |"
        )
    lines += ["", "![ROC](roc_compare.png) ![PR](pr_compare.png)", ""]
    (out_dir / "compare.md").write_text("\n".join(lines), encoding="utf-8")
    slim = [{k: v for k, v in r.items() if k not in {"roc", "pr"}} for r in rows]
    clean = json_safe(slim)
    (out_dir / "compare.json").write_text(
        json.dumps({"split": split, "n": n_images, "models": clean}, indent=1) + "\n"
    )
    return [out_dir / f for f in COMPARE_FILES]
