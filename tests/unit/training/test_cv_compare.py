"""``cv-compare``: recipes compared on the same folds, fold by fold against a reference."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from deepcovid.cli import main as deepcovid_main
from training.__main__ import main as training_main
from training.cv_compare import (
    NotComparable,
    check_comparable,
    compare_runs,
    markdown,
    paired,
    read_run,
    rule_bar,
)
from training.cv_metrics import CV_METRICS, summarise


def _report(
    wsa: dict[tuple[int, int], float],
    *,
    nih: float = 0.2,
    folds: int = 5,
    fold_seed: int = 0,
    manifest: str = "ab" * 32,
    complete: bool = True,
) -> dict[str, Any]:
    """A cv.json with the given within-source AUC per (fold, seed); other metrics constant."""
    per_fold: list[dict[str, Any]] = []
    for (fold, seed), value in sorted(wsa.items()):
        metrics = {key: 0.5 for key in CV_METRICS}
        metrics.update(within_source_auc=value, nih_no_finding_called=nih + 0.01 * fold)
        per_fold.append({"fold": fold, "seed": seed, "metrics": metrics})
    return {
        "recipe": {"arch": "squeezenet1_1"},
        "command": "deepcovid cv ...",
        "manifest_sha256": manifest,
        "folds": folds,
        "fold_seed": fold_seed,
        "seeds": sorted({s for _, s in wsa}),
        "complete": complete,
        "per_fold": per_fold,
        "summary": summarise([r["metrics"] for r in per_fold]),
    }


def _write(root: Path, name: str, report: dict[str, Any]) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "cv.json").write_text(json.dumps(report), encoding="utf-8")
    return folder


REFERENCE = {(0, 0): 0.60, (1, 0): 0.70, (2, 0): 0.50, (3, 0): 0.80, (4, 0): 0.60}


def test_paired_difference_averages_seeds_per_fold_and_counts_better_folds(
    tmp_path: Path,
) -> None:
    ref = read_run(_write(tmp_path, "ref", _report(REFERENCE)))
    # Two seeds on folds 0-2 only (an interrupted run): fold means 0.65, 0.70, 0.60.
    cand = read_run(
        _write(
            tmp_path,
            "cand",
            _report(
                {(0, 0): 0.6, (0, 1): 0.7, (1, 0): 0.7, (1, 1): 0.7, (2, 0): 0.5, (2, 1): 0.7},
                nih=0.1,
                complete=False,
            ),
        )
    )
    entry = paired(cand, ref, "within_source_auc")
    assert entry["folds"] == [0, 1, 2]
    assert entry["differences"] == pytest.approx([0.05, 0.0, 0.10])
    assert entry["mean"] == pytest.approx(0.05)
    assert entry["n"] == 3 and entry["better"] == 2  # a tie is not better
    # Lower is better for the NIH share: 0.1 against 0.2 on every shared fold.
    nih = paired(cand, ref, "nih_no_finding_called")
    assert nih["mean"] == pytest.approx(-0.1) and nih["better"] == 3


def test_rule_bar_is_reference_mean_plus_sd_and_a_screen_until_three_seeds(
    tmp_path: Path,
) -> None:
    ref = read_run(_write(tmp_path, "ref", _report(REFERENCE)))
    values = list(REFERENCE.values())
    mean = sum(values) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    high = read_run(_write(tmp_path, "high", _report({(f, 0): 0.8 for f in range(5)})))
    low = read_run(_write(tmp_path, "low", _report({(f, 0): 0.7 for f in range(5)})))
    assert rule_bar(high, ref) == {
        "bar": pytest.approx(mean + sd),
        "clears": True,
        "screen": True,
        "folds": 5,
        "candidate_mean": pytest.approx(0.8),
    }
    assert rule_bar(low, ref)["clears"] is False  # 0.70 < 0.64 + 0.114
    confirmed = read_run(
        _write(
            tmp_path,
            "ref3",
            _report({(f, s): REFERENCE[(f, 0)] for f in range(5) for s in range(3)}),
        )
    )
    assert rule_bar(high, confirmed)["screen"] is False


def test_recipes_on_other_folds_are_not_compared(tmp_path: Path) -> None:
    ref = read_run(_write(tmp_path, "ref", _report(REFERENCE)))
    other_seed = read_run(_write(tmp_path, "seed1", _report(REFERENCE, fold_seed=1)))
    other_k = read_run(_write(tmp_path, "k10", _report(REFERENCE, folds=10)))
    other_data = read_run(_write(tmp_path, "data", _report(REFERENCE, manifest="cd" * 32)))
    for other in (other_seed, other_k, other_data):
        with pytest.raises(NotComparable, match="other folds"):
            check_comparable([ref, other])
    check_comparable([ref, ref])


def test_markdown_names_the_reference_an_incomplete_run_and_the_bar(tmp_path: Path) -> None:
    ref = read_run(_write(tmp_path, "ref", _report(REFERENCE, complete=False)))
    cand = read_run(_write(tmp_path, "cand", _report({(f, 0): 0.9 for f in range(5)})))
    text = markdown(compare_runs(ref, [cand]))
    assert "| ref (reference) | squeezenet1_1 | 5 (1 seed(s)), incomplete |" in text
    assert "+0.260 ± 0.114 (better on 5 of 5)" in text
    assert "0.900 clears 0.754 (5 shared folds, screen)" in text


def test_an_interrupted_reference_is_judged_on_the_folds_it_has(tmp_path: Path) -> None:
    """Folds 0-1 of the reference (0.6, 0.7) against a candidate's five: the bar and the
    candidate's mean are both taken over folds 0-1, not over the candidate's other folds."""
    ref = read_run(_write(tmp_path, "ref", _report({(0, 0): 0.6, (1, 0): 0.7}, complete=False)))
    cand = read_run(
        _write(tmp_path, "cand", _report({(f, 0): v for f, v in enumerate([0.6, 0.7, 1, 1, 1])}))
    )
    rule = rule_bar(cand, ref)
    assert rule["folds"] == 2 and rule["clears"] is False
    assert rule["candidate_mean"] == pytest.approx(0.65)
    assert rule["bar"] == pytest.approx(0.65 + math.sqrt(0.005))


@pytest.mark.parametrize("main", [deepcovid_main, training_main], ids=["deepcovid", "training"])
def test_command_prints_and_writes_the_comparison(
    main: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = _write(tmp_path, "ref", _report(REFERENCE))
    cand = _write(tmp_path, "cand", _report({(f, 0): 0.5 for f in range(5)}))
    out = tmp_path / "out"
    assert main(["cv-compare", str(ref), str(cand), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "## Against ref, fold by fold" in printed
    assert "does not clear" in printed
    saved = json.loads((out / "cv-compare.json").read_text(encoding="utf-8"))
    assert saved["paired"]["cand"]["within_source_auc"]["better"] == 0  # 0.5 is never above
    assert (out / "cv-compare.md").read_text(encoding="utf-8") in printed


@pytest.mark.parametrize("bad", ["other-folds", "no-summary", "twice"])
def test_command_refuses_what_it_cannot_compare_in_one_line(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = _write(tmp_path, "ref", _report(REFERENCE))
    other = {
        "other-folds": _write(tmp_path, "x", _report(REFERENCE, fold_seed=3)),
        "no-summary": tmp_path,
        "twice": ref,
    }[bad]
    assert training_main(["cv-compare", str(ref), str(other)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert {
        "other-folds": "other folds",
        "no-summary": "no cross-validation summary",
        "twice": "named twice",
    }[bad] in err
