"""Compare model versions on one split: the paper's Table 6 and overlaid ROC / PR curves.

Each version is scored on the same images; the table gives, per version, the architecture, AUC with
its bootstrap interval, average precision, and sensitivity / specificity at the version's own
operating threshold with Wilson intervals.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from training import plots
from training.evaluate import Scored, json_safe
from training.intervals import bootstrap_auc_interval
from training.metrics import average_precision, confusion_at, pr_points, roc_auc, roc_points

COMPARE_FILES = ("compare.json", "compare.md", "roc_compare.png", "pr_compare.png")


def compare_row(
    version: str, arch: str, threshold: float, scored: Scored, n_boot: int
) -> dict[str, Any]:
    """One line of Table 6."""
    y, s = scored.labels, scored.probs
    summary = confusion_at(y, s, threshold).summary()
    return {
        "version": version,
        "architecture": arch,
        "threshold": threshold,
        "auc": roc_auc(y, s),
        "auc_ci_bootstrap": list(bootstrap_auc_interval(y, s, n_boot=n_boot)),
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


def _f(value: float | None, pct: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.1f} %" if pct else f"{value:.3f}"


def _ci(ci: list[float], pct: bool = False) -> str:
    return f"{_f(ci[0], pct)}-{_f(ci[1], pct)}".replace(" %", "") + (" %" if pct else "")


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
    lines = [
        f"# Model comparison on the {split} split ({n_images} images)",
        "",
        "Sensitivity and specificity at each version's own operating threshold (chosen on val); "
        "95 % intervals: AUC stratified bootstrap, rates Wilson (paper's normal approx. in "
        "compare.json).",
        "",
        "| version | architecture | AUC (95 % CI) | AP | threshold | sensitivity (95 % CI) "
        "| specificity (95 % CI) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['version']} | {r['architecture']} "
            f"| {_f(r['auc'])} ({_ci(r['auc_ci_bootstrap'])}) "
            f"| {_f(r['average_precision'])} | {r['threshold']:.4f} "
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
