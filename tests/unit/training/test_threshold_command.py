"""``deepcovid threshold --predictions``: both operating points from a labelled predictions file
(such as cross-validation's out-of-fold ``oof.csv``), stored in a version's card without scoring.
(Scoring a split of a site's films is tested with the trained model in ``test_train_evaluate``.)"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from models.operating_point import CLINICAL, PAPER
from models.registry import Registry
from tests.harness.factories import random_registry
from training.__main__ import main as training_main
from training.operating_points import operating_points


def _oof(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """An oof.csv-like file with two seeds of 60 COVID-19 and 90 non-COVID predictions."""
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(60, int), np.zeros(90, int)]
    by_seed = {}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "fold", "seed", "probability"])
        for seed in (0, 1):
            s = np.round(np.clip(rng.normal(0.35 + 0.35 * y, 0.15), 0, 1), 6)
            by_seed[seed] = (y, s)
            for i, (label, p) in enumerate(zip(y, s, strict=True)):
                name = "covid" if label else "non_covid"
                writer.writerow([f"img{i}.png", name, i % 5, seed, f"{p:.6f}"])
    return by_seed


def test_points_from_out_of_fold_predictions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = random_registry(tmp_path / "registry")
    registry = Registry(root)
    version = registry.active_version()
    assert version is not None
    before = registry.card(version)
    oof = tmp_path / "oof.csv"
    by_seed = _oof(oof)
    common = ["threshold", "--registry", str(root), "--predictions", str(oof)]

    assert training_main([*common, "--bootstrap", "30"]) == 2  # two seeds: which one?
    assert "choose one with --seed" in capsys.readouterr().err
    assert training_main([*common, "--seed", "7"]) == 2
    assert "no rows of seed 7" in capsys.readouterr().err
    assert registry.card(version) == before

    assert training_main([*common, "--seed", "1", "--bootstrap", "30"]) == 0
    printed = capsys.readouterr().out
    assert "stored both points" in printed and "out-of-bag" in printed
    after = registry.card(version)
    expected = operating_points(*by_seed[1], n_boot=30, data="x")
    for name in (PAPER, CLINICAL):
        assert after.operating_points[name].threshold == expected[name].threshold
        assert after.operating_points[name].specificity_ci == expected[name].specificity_ci
    assert after.threshold == expected[PAPER].threshold
    assert "on the predictions in oof.csv (sha256 " in after.threshold_method
    assert ", seed 1) (60 COVID-19 / 90 non-COVID images)" in after.threshold_method
    assert after.weights_sha256 == before.weights_sha256
    registry.verify(version)


def test_bad_predictions_files_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = random_registry(tmp_path / "registry")
    common = ["threshold", "--registry", str(root), "--predictions"]
    bad_label = tmp_path / "bad.csv"
    bad_label.write_text("label,probability\ncovid,0.8\nmaybe,0.4\n")
    no_columns = tmp_path / "cols.csv"
    no_columns.write_text("path,score\na.png,0.3\n")
    one_class = tmp_path / "one.csv"
    one_class.write_text("label,probability\ncovid,0.8\ncovid,0.4\n")
    for path, says in (
        (bad_label, "labels must be one of non_covid, covid"),
        (no_columns, "columns label and probability"),
        (one_class, "both COVID-19 and non-COVID"),
        (tmp_path / "missing.csv", "cannot read"),
    ):
        assert training_main([*common, str(path)]) == 2
        assert says in capsys.readouterr().err
