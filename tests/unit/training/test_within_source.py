"""Within-source headline numbers and the compare columns (with the shortcut checks'), on a
hand-checkable example.

Source A: COVID-19 scores 0.9, 0.4; non-COVID 0.6, 0.1 -> 3 of 4 pairs ordered, AUC 0.75.
Source B: COVID-19 0.2; non-COVID 0.3, 0.1 -> 1 of 2 pairs, AUC 0.5.
Source C: one non-COVID image (single class: no within-source AUC).
Pooled within source: (0.75 * 4 + 0.5 * 2) / 6 = 2/3; the pooled AUC over all pairs differs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from training.compare import compare_row, unseen_sources, write_comparison
from training.evaluate import Scored, pooled_within_source_interval, within_source
from training.localisation import summarise_shares
from training.manifest import ManifestRow
from training.probes import summarise_probes

LABELS = np.array([1, 1, 0, 0, 1, 0, 0, 0])
SCORES = np.array([0.9, 0.4, 0.6, 0.1, 0.2, 0.3, 0.1, 0.05])
SOURCES = ["A", "A", "A", "A", "B", "B", "B", "C"]


def _scored() -> Scored:
    rows = [
        ManifestRow(Path(f"/x/{i}.jpg"), f"{i}.jpg", int(y), "test", source=s)
        for i, (y, s) in enumerate(zip(LABELS, SOURCES, strict=True))
    ]
    return Scored(LABELS, SCORES, rows)


def test_within_source_numbers_by_hand() -> None:
    w = within_source(LABELS, SCORES, SOURCES, threshold=0.5, n_boot=200)
    assert list(w["sources"]) == ["A", "B"]  # C has one class only
    a, b = w["sources"]["A"], w["sources"]["B"]
    assert a["auc"] == pytest.approx(0.75)
    assert b["auc"] == pytest.approx(0.5)
    assert (a["pairs"], b["pairs"], w["pairs"]) == (4, 2, 6)
    assert w["pooled_auc"] == pytest.approx(2 / 3)
    # At 0.5: A calls 0.9 (TP) and 0.6 (FP); B calls nothing.
    assert (a["tp"], a["fn"], a["tn"], a["fp"]) == (1, 1, 1, 1)
    assert (b["tp"], b["fn"], b["tn"], b["fp"]) == (0, 1, 2, 0)
    assert a["sensitivity"] == 0.5 and a["specificity"] == 0.5
    assert b["sensitivity"] == 0.0 and b["specificity"] == 1.0
    # Wilson 95 % for 1/2, by hand: centre 0.5, half-width 1.96*sqrt(0.125 + z²/16)/(1 + z²/2).
    assert a["sensitivity_ci_wilson"] == pytest.approx([0.0945, 0.9055], abs=1e-4)
    # Wilson for 2/2: upper bound 1, lower 2/(2 + z²) = 0.3424.
    assert b["specificity_ci_wilson"] == pytest.approx([0.3424, 1.0], abs=1e-4)
    assert a["few"] and b["few"]


def test_within_source_intervals_bracket_the_values() -> None:
    w = within_source(LABELS, SCORES, SOURCES, threshold=0.5, n_boot=300, seed=1)
    lo, hi = w["pooled_auc_ci_bootstrap"]
    assert 0.0 <= lo <= w["pooled_auc"] <= hi <= 1.0
    assert lo < hi
    for d in w["sources"].values():
        assert d["auc_ci_bootstrap"][0] <= d["auc"] <= d["auc_ci_bootstrap"][1]


def test_pooled_interval_is_fixed_when_every_source_is_perfect() -> None:
    y = np.array([1, 0, 1, 1, 0])
    s = np.array([0.9, 0.1, 0.8, 0.7, 0.2])
    src = np.array(["A", "A", "B", "B", "B"])
    assert pooled_within_source_interval(y, s, src, n_boot=100) == (1.0, 1.0)
    nan = pooled_within_source_interval(np.array([1, 0]), s[:2], np.array(["A", "B"]))
    assert all(math.isnan(v) for v in nan)


def test_compare_row_has_within_source_and_unseen_columns(tmp_path: Path) -> None:
    scored = _scored()
    row = compare_row("v1", "resnet18", 0.5, scored, 100, trained_sources={"A", "C", "*"})
    assert row["within_source_auc"] == pytest.approx(2 / 3)
    assert row["within_source"] == {"A": pytest.approx(0.75), "B": pytest.approx(0.5)}
    unseen = row["unseen_sources"]
    assert unseen["sources"] == ["B"] and unseen["n"] == 3
    assert unseen["auc"] == pytest.approx(0.5) == unseen["within_source_auc"]
    plain = compare_row("v2", "resnet18", 0.5, scored, 100)
    assert plain["unseen_sources"] is None
    write_comparison(tmp_path, "test", [row, plain], len(LABELS))
    table = (tmp_path / "compare.md").read_text()
    assert "AUC within source (95 % CI)" in table and "| AUC A | AUC B |" in table
    assert "0.500 on B (3 images; within source 0.500)" in table
    v1 = next(line for line in table.splitlines() if line.startswith("| v1 |"))
    assert "| 0.667 (" in v1 and "| 0.750 | 0.500 |" in v1


def test_unseen_sources_none_when_training_saw_everything() -> None:
    assert unseen_sources(_scored(), {"A", "B", "C"}) is None
    assert unseen_sources(_scored(), None) is None


def test_compare_row_carries_the_shortcut_columns(tmp_path: Path) -> None:
    """The probes' within-source AUCs and the localisation share reach the row and the table;
    versions without them show "-"."""
    probes = {
        "probes": summarise_probes(
            LABELS,
            SOURCES,
            {"original": SCORES, "lungs_hidden": SCORES, "lungs_only": 1.0 - SCORES},
        )
    }
    shares = np.array([0.9, 0.5, 0.2, np.nan, 0.4, 0.1, 0.3, 0.6])
    called = SCORES >= 0.5  # images 0 (share 0.9) and 2 (share 0.2)
    localisation = {
        **summarise_shares(shares, LABELS, SOURCES, called),
        "uniform_share": 0.3,
        "sample_size": 8,
    }
    row = compare_row(
        "v1", "resnet18", 0.5, _scored(), 100, probes=probes, localisation=localisation
    )
    assert row["probes"]["lungs_hidden"]["within_source_auc"] == pytest.approx(2 / 3)
    assert row["probes"]["lungs_only"]["within_source_auc"] == pytest.approx(1 / 3)
    assert "original" not in row["probes"]
    assert row["localisation"]["covid_calls"]["mean"] == pytest.approx(0.55)
    assert row["localisation"]["covid_calls"]["n"] == 2
    plain = compare_row("v2", "resnet18", 0.5, _scored(), 100, probes={"skipped": "off"})
    assert plain["probes"] is None and plain["localisation"] is None
    write_comparison(tmp_path, "test", [row, plain], len(LABELS))
    table = (tmp_path / "compare.md").read_text()
    assert "within-source AUC, lungs hidden / lungs only" in table
    v1 = next(line for line in table.splitlines() if line.startswith("| v1 |"))
    assert "| 0.667 / 0.333 |" in v1
    assert "| 55.0 % of 2 calls (lungs 30.0 % of the image) |" in v1
    v2 = next(line for line in table.splitlines() if line.startswith("| v2 |"))
    assert "| - | - |" in v2
