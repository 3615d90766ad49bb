"""The Markdown table of a cross-validation (``cv.md``): mean ± sd, every fold, the cost."""

from __future__ import annotations

import math
from typing import Any

from training.cv_metrics import CV_METRICS, PERCENT, format_mean_sd


def _cell(value: float | None, key: str) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.1f} %" if key in PERCENT else f"{value:.3f}"


def _point(point: dict[str, Any]) -> str:
    if "threshold" not in point:
        return "not defined"
    ci = point.get("specificity_ci")
    spread = f" (95 % CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f} %)" if ci else ""
    return (
        f"threshold {point['threshold']:.4f}: sensitivity {100 * point['sensitivity']:.1f} %, "
        f"specificity {100 * point['specificity']:.1f} %{spread}"
    )


def _calls(calls: dict[str, Any] | None) -> str:
    """What the point calls COVID-19: NIH "No Finding" films and fold models on the NEMA CR."""
    if not calls:
        return ""
    parts = []
    if calls.get("nih_no_finding_called") is not None:
        parts.append(
            f'NIH "No Finding" called {100 * calls["nih_no_finding_called"]:.1f} % '
            f"(of {calls['nih_no_finding_n']})"
        )
    if calls.get("nema_cr_of"):
        parts.append(
            f"NEMA CR called by {calls['nema_cr_called']} of {calls['nema_cr_of']} fold models"
        )
    return "; " + ", ".join(parts) if parts else ""


def markdown(report: dict[str, Any]) -> str:
    """``cv.md`` from the ``cv.json`` content."""
    per_fold = report["per_fold"]
    heads = [f"f{r['fold']} s{r['seed']}" for r in per_fold]
    lines = [
        f"# Cross-validation: {report['recipe']['arch']}, {report['folds']} folds "
        f"x {len(report['seeds'])} seed(s)",
        "",
        f"{report['n']} train + val films of {report['manifest']} "
        f"(sha256 {report['manifest_sha256'][:12]}); folds grouped by split_group and "
        f"stratified by source x label (fold seed {report['fold_seed']}); epoch selection "
        f"{report['epoch_selection']}. Mean ± sd over folds and seeds; sensitivity points "
        "chosen on each fold's own predictions."
        + ("" if report.get("complete", True) else " **Incomplete: some folds have not run.**"),
        "",
        "| metric | mean ± sd | " + " | ".join(heads) + " |",
        "| --- | --- |" + " --- |" * len(heads),
    ]
    for key, label in CV_METRICS.items():
        cells = " | ".join(_cell(r["metrics"].get(key), key) for r in per_fold)
        lines.append(f"| {label} | {format_mean_sd(report['summary'].get(key), key)} | {cells} |")
    seconds = " | ".join(f"{r['seconds']['total']:.0f}" for r in per_fold)
    lines.append(f"| wall time (s) | {report['cost']['seconds_per_fold_mean']:.0f} | {seconds} |")
    lines += ["", "## Operating points of the pooled out-of-fold predictions", ""]
    for seed, pooled in report["pooled_oof"].items():
        points = pooled["operating_points"]
        lines.append(
            f"- seed {seed}: AUC {_cell(pooled['auc'], 'auc')}, within-source AUC "
            f"{_cell(pooled['within_source_auc'], 'auc')}"
        )
        if "not_defined" in points:
            lines.append(f"  - not defined: {points['not_defined']}")
        for name, point in points.items():
            if name != "not_defined":
                lines.append(
                    f"  - {name}: {_point(point)}{_calls(pooled.get('calls', {}).get(name))}"
                )
    cost = report["cost"]
    lines += [
        "",
        f"Cost: {cost['seconds_total']:.0f} s in all on {cost['device']} "
        f"({cost['threads']} threads), images loaded in {cost['load_seconds']:.0f} s.",
        "",
    ]
    if report.get("versions"):
        lines.insert(-1, f"Fold models kept as versions: {', '.join(report['versions'])}.")
    return "\n".join(lines)
