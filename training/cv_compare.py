"""Recipes side by side on their out-of-fold figures, and each against a reference fold by fold.

``deepcovid cv-compare REFERENCE DIR ...`` reads the ``cv.json`` of several cross-validations
(:mod:`training.cv`) and never a test split: it is how recipes are compared under the selection
protocol of ``docs/training.md``.

Two tables:

- **every recipe**: mean ± sd over its (fold, seed) results of every :data:`CV_METRICS` value,
  with how many of its fold runs exist (an interrupted run, resumed later with ``--only-folds``,
  is shown as such);
- **paired by fold, against the reference**: the folds are the same for every recipe (same
  manifest, K and fold seed: checked, else nothing is compared), and the fold-to-fold spread is
  mostly *which* films a fold holds (12 ieee8023 non-COVID films per fold carry the
  within-source AUC), which is common to both recipes. So the per-fold difference (each recipe's
  mean over its seeds on that fold) is a sharper comparison than two means ± sd; its mean ± sd
  over the shared folds and on how many folds the candidate is better are given.

Beside that, the rule's bar for the default (``docs/training.md``, "The rule that picks the
default"): a candidate's mean within-source AUC must exceed the reference's by more than the
reference's sd, both taken over the folds both have run. It is stated for the figures at hand
and marked *screen* while the reference
has fewer than 3 training seeds or not all its folds; the rule decides on the 3-seed
confirmation. Pure numpy and json: no torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.cv_metrics import (
    CV_METRICS,
    HEADLINE,
    PERCENT,
    format_mean_sd,
    mean_sd,
    read_summary,
)

LOWER_IS_BETTER = frozenset({"nih_no_finding_called", "nema_cr_probability", "nema_cr_present"})
"""Metrics where the smaller value is the better recipe."""

PAIRED_METRICS = HEADLINE
"""The metrics compared fold by fold against the reference."""

CONFIRMATION_SEEDS = 3
"""Training seeds of the rule's confirmation step; fewer make a comparison a screen."""

COMPARE_FILES = ("cv-compare.md", "cv-compare.json")


class NotComparable(ValueError):
    """Cross-validations on different folds (manifest, K or fold seed)."""


@dataclass(frozen=True)
class CVRun:
    """One cross-validation's summary as read from its folder."""

    name: str
    report: dict[str, Any]

    @property
    def per_fold(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.report["per_fold"]
        return runs

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.report.get("seeds", [])]

    @property
    def complete(self) -> bool:
        return bool(self.report.get("complete", True))

    def by_fold(self, key: str) -> dict[int, list[float]]:
        """Per fold, the finite values of ``key`` of the seeds that ran it (folds without one
        are left out)."""
        values: dict[int, list[float]] = {}
        for run in self.per_fold:
            value = run["metrics"].get(key)
            if value is not None and math.isfinite(value):
                values.setdefault(int(run["fold"]), []).append(float(value))
        return values

    def fold_means(self, key: str) -> dict[int, float]:
        """Per fold, the mean of ``key`` over the seeds that ran it."""
        return {fold: float(np.mean(v)) for fold, v in self.by_fold(key).items()}


def read_run(folder: Path, name: str | None = None) -> CVRun:
    """The cross-validation in ``folder`` (its ``cv.json``), named after the folder."""
    return CVRun(name or folder.name, read_summary(folder))


def folds_identity(report: dict[str, Any]) -> tuple[str, int, int]:
    """What two cross-validations must share to be compared: manifest, K, fold seed."""
    return (str(report["manifest_sha256"]), int(report["folds"]), int(report["fold_seed"]))


def check_comparable(runs: Sequence[CVRun]) -> None:
    """Raise :class:`NotComparable` unless every run used the same folds."""
    first = folds_identity(runs[0].report)
    for run in runs[1:]:
        other = folds_identity(run.report)
        if other != first:
            raise NotComparable(
                f"{run.name} used other folds than {runs[0].name} (manifest sha256 "
                f"{other[0][:12]}, K {other[1]}, fold seed {other[2]} against "
                f"{first[0][:12]}, K {first[1]}, fold seed {first[2]}): recipes are compared "
                "only on the same folds"
            )


def paired(candidate: CVRun, reference: CVRun, key: str) -> dict[str, Any]:
    """``key`` of ``candidate`` minus the reference's, fold by fold over the folds both have:
    the differences, their mean ± sd and on how many folds the candidate is better."""
    mine, theirs = candidate.fold_means(key), reference.fold_means(key)
    folds = sorted(set(mine) & set(theirs))
    diffs = [mine[f] - theirs[f] for f in folds]
    sign = -1.0 if key in LOWER_IS_BETTER else 1.0
    return {
        "folds": folds,
        "differences": diffs,
        **mean_sd(diffs),
        "better": int(sum(1 for d in diffs if sign * d > 0)),
    }


def _results_on(run: CVRun, key: str, folds: set[int]) -> list[float]:
    """``key`` of every (fold, seed) result of ``run`` on ``folds`` (finite ones)."""
    return [v for fold, values in run.by_fold(key).items() if fold in folds for v in values]


def rule_bar(candidate: CVRun, reference: CVRun) -> dict[str, Any]:
    """The rule's bar on within-source AUC: does the candidate's mean exceed the reference's
    mean plus the reference's sd? Both over the folds both have run (an interrupted reference
    is not compared with a candidate's other folds). ``screen`` while the reference is not the
    confirmation (3 seeds on every fold)."""
    key = "within_source_auc"
    shared = set(candidate.fold_means(key)) & set(reference.fold_means(key))
    ref = mean_sd(_results_on(reference, key, shared))
    cand = mean_sd(_results_on(candidate, key, shared))
    screen = not reference.complete or len(reference.seeds) < CONFIRMATION_SEEDS
    if ref["sd"] is None or cand["mean"] is None:
        return {"bar": None, "clears": None, "screen": screen, "folds": len(shared)}
    bar = float(ref["mean"]) + float(ref["sd"])
    return {
        "bar": bar,
        "clears": bool(cand["mean"] > bar),
        "screen": screen,
        "folds": len(shared),
        "candidate_mean": cand["mean"],
    }


def compare_runs(reference: CVRun, candidates: Sequence[CVRun]) -> dict[str, Any]:
    """Everything ``cv-compare`` writes, as data."""
    runs = [reference, *candidates]
    check_comparable(runs)
    manifest, k, fold_seed = folds_identity(reference.report)
    return {
        "manifest_sha256": manifest,
        "folds": k,
        "fold_seed": fold_seed,
        "reference": reference.name,
        "recipes": [
            {
                "name": run.name,
                "arch": run.report.get("recipe", {}).get("arch"),
                "seeds": run.seeds,
                "complete": run.complete,
                "fold_runs": len(run.per_fold),
                "command": run.report.get("command"),
                "summary": {key: run.report["summary"].get(key) for key in CV_METRICS},
            }
            for run in runs
        ],
        "paired": {
            cand.name: {
                **{key: paired(cand, reference, key) for key in PAIRED_METRICS},
                "rule": rule_bar(cand, reference),
            }
            for cand in candidates
        },
    }


def _difference(entry: dict[str, Any], key: str) -> str:
    if entry.get("mean") is None:
        return "no shared fold"
    scale, unit, digits = (100.0, " pt", 1) if key in PERCENT else (1.0, "", 3)
    text = f"{entry['mean'] * scale:+.{digits}f}"
    if entry.get("sd") is not None:
        text += f" ± {entry['sd'] * scale:.{digits}f}"
    return f"{text}{unit} (better on {entry['better']} of {entry['n']})"


def _rule_cell(rule: dict[str, Any]) -> str:
    if rule["bar"] is None:
        return "not defined (2 shared fold runs needed)"
    verdict = "clears" if rule["clears"] else "does not clear"
    return (
        f"{rule['candidate_mean']:.3f} {verdict} {rule['bar']:.3f} "
        f"({rule['folds']} shared folds{', screen' if rule['screen'] else ''})"
    )


def markdown(result: dict[str, Any]) -> str:
    """``cv-compare.md`` from :func:`compare_runs`' result."""
    heads = list(CV_METRICS.values())
    lines = [
        f"# Recipes on the same {result['folds']} folds (fold seed {result['fold_seed']}, "
        f"manifest sha256 {result['manifest_sha256'][:12]})",
        "",
        "Out-of-fold figures only (no test film is read). Mean ± sd over each recipe's "
        "(fold, seed) results.",
        "",
        "| recipe | architecture | fold runs | " + " | ".join(heads) + " |",
        "| --- | --- | --- |" + " --- |" * len(heads),
    ]
    for recipe in result["recipes"]:
        runs = f"{recipe['fold_runs']} ({len(recipe['seeds'])} seed(s))" + (
            "" if recipe["complete"] else ", incomplete"
        )
        cells = " | ".join(format_mean_sd(recipe["summary"].get(k), k) for k in CV_METRICS)
        name = recipe["name"] + (" (reference)" if recipe["name"] == result["reference"] else "")
        lines.append(f"| {name} | {recipe['arch']} | {runs} | {cells} |")
    if result["paired"]:
        lines += [
            "",
            f"## Against {result['reference']}, fold by fold",
            "",
            "Per fold, the recipe's value minus the reference's (each the mean over its seeds "
            "on that fold), over the folds both have run: mean ± sd of the differences, and on "
            "how many folds the recipe is better (higher, or lower for the NIH and NEMA "
            "columns). The rule's bar: the recipe's mean within-source AUC against the "
            "reference's mean + one sd, both over the folds both have run; *screen* until the "
            "reference has 3 seeds on all folds.",
            "",
            "| recipe | "
            + " | ".join(CV_METRICS[k] for k in PAIRED_METRICS)
            + " | rule's bar (within-source AUC) |",
            "| --- |" + " --- |" * (len(PAIRED_METRICS) + 1),
        ]
        for name, entry in result["paired"].items():
            cells = " | ".join(_difference(entry[k], k) for k in PAIRED_METRICS)
            lines.append(f"| {name} | {cells} | {_rule_cell(entry['rule'])} |")
    return "\n".join(lines) + "\n"


def write(out_dir: Path, result: dict[str, Any]) -> list[Path]:
    """Write ``cv-compare.md`` and ``cv-compare.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = (out_dir / name for name in COMPARE_FILES)
    md.write_text(markdown(result), encoding="utf-8")
    js.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return [md, js]
