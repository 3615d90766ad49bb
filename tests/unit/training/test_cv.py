"""Cross-validation end to end on a tiny real subset: 2 folds, 1 epoch, 64 px, SqueezeNet.

The point is that the protocol runs and writes what it promises (every train + val film scored
once per seed by a model that never saw it, the metrics, the cost, the kept fold models), not
that the model is good.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.registry import Registry
from tests.harness.factories import CXR_DIR, DICOM_DIR
from training.__main__ import main as training_main
from training.cv_metrics import (
    CV_METRICS,
    calls_at,
    fold_metrics,
    format_mean_sd,
    mean_sd,
    summarise,
)
from training.manifest import ManifestRow

PER_STRATUM = {("ieee8023", "covid", ""): 12, ("ieee8023", "non_covid", ""): 12}
PER_STRATUM |= {("mhh_hannover", "covid", ""): 6, ("nih_chestxray8", "non_covid", "No Finding"): 6}
PER_STRATUM |= {("nih_chestxray8", "non_covid", "Pneumonia"): 6}
"""Films per (source, label, finding; "": any) taken from train + val."""


def _subset(path: Path) -> Path:
    """Train + val films of four strata (one per split group), and a few test films."""
    with (CXR_DIR / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    picked: list[dict[str, str]] = []
    for (source, label, finding), limit in PER_STRATUM.items():
        pool = [
            r
            for r in rows
            if (r["source"], r["label"]) == (source, label)
            and r["finding"] == (finding or r["finding"])
            and r["split"] in {"train", "val"}
        ]
        groups: dict[str, list[dict[str, str]]] = {}
        for r in pool:
            groups.setdefault(r["split_group"], []).append(r)
        picked += [g[0] for g in list(groups.values())[:limit]]
    picked += [r for r in rows if r["split"] == "test"][:4]
    fields = ["path", "label", "split", "finding", "source", "split_group"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for r in picked:
            writer.writerow({**{k: r[k] for k in fields}, "path": str(CXR_DIR / r["path"])})
    return path


RECIPE = [
    *("--arch", "squeezenet1_1", "--head-bias", "1", "--input-size", "64"),
    *("--batch-size", "8", "--epochs", "1", "--augment", "none", "--covid-copies", "1"),
    *("--threads", "2", "--load-workers", "2", "--device", "cpu", "--no-progress"),
]


@pytest.fixture(scope="module")
def crossval(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("cv")
    manifest = _subset(root / "manifest.csv")
    out, registry = root / "out", root / "registry"
    argv = [
        "cv",
        *("--manifest", str(manifest), "--registry", str(registry), "--out-dir", str(out)),
        *RECIPE,
        *("--folds", "2", "--keep-models", "--version-prefix", "tiny"),
        *("--nema-cr", str(DICOM_DIR / "RG1_UNCR.dcm")),
    ]
    assert training_main(argv) == 0
    return {"root": root, "manifest": manifest, "out": out, "registry": registry, "argv": argv}


def test_oof_covers_every_train_val_film_once_and_no_test_film(crossval: dict[str, Any]) -> None:
    with crossval["manifest"].open(newline="") as handle:
        manifest = list(csv.DictReader(handle))
    with (crossval["out"] / "oof.csv").open(newline="") as handle:
        oof = list(csv.DictReader(handle))
    assert list(oof[0]) == [
        "path",
        "source",
        "label",
        "finding",
        "split_group",
        "fold",
        "seed",
        "probability",
    ]
    cv_paths = sorted(r["path"] for r in manifest if r["split"] in {"train", "val"})
    assert sorted(Path(r["path"]).name for r in oof) == sorted(Path(p).name for p in cv_paths)
    assert {r["fold"] for r in oof} == {"0", "1"} and {r["seed"] for r in oof} == {"0"}
    assert all(0.0 <= float(r["probability"]) <= 1.0 for r in oof)
    folds_of_group: dict[str, set[str]] = {}
    for r in oof:
        folds_of_group.setdefault(r["split_group"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in folds_of_group.values())


def test_summary_has_every_metric_per_fold_and_as_mean_sd(crossval: dict[str, Any]) -> None:
    report = json.loads((crossval["out"] / "cv.json").read_text())
    assert report["folds"] == 2 and report["n"] == sum(PER_STRATUM.values())
    assert len(report["per_fold"]) == 2
    for fold in report["per_fold"]:
        assert set(CV_METRICS) <= set(fold["metrics"])
        assert fold["n_fit"] + fold["n_inner"] + fold["n_held"] == report["n"]
        assert fold["epochs_run"] == 1 and fold["seconds"]["total"] > 0
        assert 0.0 <= fold["metrics"]["nema_cr_probability"] <= 1.0
        assert fold["metrics"]["within_source_auc"] is not None  # ieee8023 has both classes
        assert 0.0 <= fold["metrics"]["nih_no_finding_called"] <= 1.0
    summary = report["summary"]
    assert set(summary) == set(CV_METRICS)
    aucs = [f["metrics"]["auc"] for f in report["per_fold"]]
    assert summary["auc"]["mean"] == pytest.approx(np.mean(aucs))
    assert summary["auc"]["sd"] == pytest.approx(np.std(aucs, ddof=1))
    points = report["pooled_oof"]["0"]["operating_points"]
    assert set(points) == {"paper", "clinical"} and points["paper"]["sensitivity"] >= 0.98
    calls = report["pooled_oof"]["0"]["calls"]
    assert set(calls) == {"paper", "clinical"}
    assert calls["paper"]["nih_no_finding_n"] == 6 and calls["paper"]["nema_cr_of"] == 2
    # the paper point is the lower threshold, so it calls at least what the clinical one does
    assert calls["paper"]["nih_no_finding_called"] >= calls["clinical"]["nih_no_finding_called"]
    assert calls["paper"]["nema_cr_called"] >= calls["clinical"]["nema_cr_called"]
    assert report["cost"]["seconds_per_fold_mean"] > 0
    table = (crossval["out"] / "cv.md").read_text()
    assert "| within-source AUC |" in table and "wall time (s)" in table
    assert 'NIH "No Finding" called' in table and "of 2 fold models" in table


def test_fold_models_are_kept_unactivated(crossval: dict[str, Any]) -> None:
    registry = Registry(crossval["registry"])
    assert registry.versions() == ["tiny-f0-s0", "tiny-f1-s0"]
    assert registry.active_version() is None
    card = registry.card("tiny-f1-s0")
    assert "fold 1 of 2" in card.notes and card.architecture == "squeezenet1_1"
    params = card.training_parameters
    assert (params["fold"], params["folds"], params["fold_seed"], params["seed"]) == (1, 2, 0, 0)
    registry.verify("tiny-f0-s0")


def test_a_second_run_reuses_the_finished_folds(
    crossval: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    before = json.loads((crossval["out"] / "cv.json").read_text())
    argv = [a for a in crossval["argv"] if a != "--keep-models"]
    assert training_main(argv) == 0
    assert "done before, reused" in capsys.readouterr().err
    after = json.loads((crossval["out"] / "cv.json").read_text())
    assert after["summary"] == before["summary"]


def _rows(labels: list[int], sources: list[str], findings: list[str]) -> list[ManifestRow]:
    return [
        ManifestRow(Path(f"{i}.png"), f"{i}.png", y, "train", f, s)
        for i, (y, s, f) in enumerate(zip(labels, sources, findings, strict=True))
    ]


def test_fold_metrics_count_the_clinical_numbers_by_hand() -> None:
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    probs = np.array([0.9, 0.8, 0.7, 0.6, 0.65, 0.5, 0.2, 0.1])
    sources = ["a"] * 4 + ["nih_chestxray8"] * 4
    findings = ["COVID-19"] * 4 + ["No Finding", "No Finding", "Pneumonia", "No Finding"]
    m = fold_metrics(np.array(labels), probs, _rows(labels, sources, findings), 0.62)
    # 98 % of 4 positives: all 4, threshold just under 0.6 (halfway to 0.5): one FP (0.65).
    assert m["specificity_at_98"] == pytest.approx(3 / 4)
    assert m["nih_no_finding_called"] == pytest.approx(1 / 3)
    assert m["nema_cr_present"] == 1.0 and m["nema_cr_probability"] == 0.62
    assert math.isnan(m["within_source_auc"])  # no source holds both classes


def test_calls_at_a_pooled_point_count_normal_films_and_fold_models_by_hand() -> None:
    labels = [1, 1, 0, 0, 0, 0]
    probs = np.array([0.9, 0.4, 0.5, 0.3, 0.2, 0.35])
    sources = ["a", "a", "nih_chestxray8", "nih_chestxray8", "nih_chestxray8", "a"]
    findings = ["COVID-19", "COVID-19", "No Finding", "No Finding", "Pneumonia", "No Finding"]
    calls = calls_at(0.32, probs, _rows(labels, sources, findings), [0.1, 0.33, math.nan])
    # NIH "No Finding": 0.5 and 0.3, one at or above 0.32; source "a"'s normal film does not count
    assert calls == {
        "nih_no_finding_called": 0.5,
        "nih_no_finding_n": 2,
        "nema_cr_called": 1,
        "nema_cr_of": 2,
    }
    none = calls_at(0.32, probs[:2], _rows(labels[:2], sources[:2], findings[:2]), [])
    assert none["nih_no_finding_called"] is None and none["nema_cr_of"] == 0


def test_one_class_fold_marks_auc_not_defined() -> None:
    labels = [1, 1, 1]
    m = fold_metrics(
        np.array(labels), np.array([0.9, 0.4, 0.7]), _rows(labels, ["a"] * 3, [""] * 3)
    )
    assert math.isnan(m["auc"]) and math.isnan(m["specificity_at_98"])
    summary = summarise([m, m])
    assert summary["auc"] == {"mean": None, "sd": None, "n": 0, "of": 2}
    assert format_mean_sd(summary["auc"], "auc") == "not defined (one class)"
    assert format_mean_sd(mean_sd([0.8, 0.9, math.nan]), "auc") == "0.850 ± 0.071 (2 of 3 folds)"
    assert format_mean_sd(None) == "-"


def test_a_run_split_over_calls_by_only_folds(crossval: dict[str, Any]) -> None:
    out = crossval["root"] / "split"
    argv = [a for a in crossval["argv"] if a != "--keep-models"]
    argv[argv.index("--out-dir") + 1] = str(out)
    assert training_main([*argv, "--only-folds", "0"]) == 0
    first = json.loads((out / "cv.json").read_text())
    assert not first["complete"] and [f["fold"] for f in first["per_fold"]] == [0]
    assert first["summary"]["auc"]["of"] == 1
    assert "Incomplete" in (out / "cv.md").read_text()
    with (out / "oof.csv").open(newline="") as handle:
        assert {r["fold"] for r in csv.DictReader(handle)} == {"0"}
    assert training_main([*argv, "--only-folds", "1"]) == 0
    second = json.loads((out / "cv.json").read_text())
    assert second["complete"] and [f["fold"] for f in second["per_fold"]] == [0, 1]
    assert second["per_fold"][0] == first["per_fold"][0]  # fold 0 reused, not retrained


def test_a_head_only_recipe_runs_its_backbone_once_and_scores_as_the_full_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--finetune last --augment none``: the backbone's outputs are computed once for every
    fold, and the out-of-fold probabilities equal those of running the whole network."""
    import torch

    from models.architectures import build_model
    from training import trainer

    manifest = _subset(tmp_path / "manifest.csv")
    weights = tmp_path / "pretrained.pt"  # stands in for ImageNet weights: fixed, not seeded
    torch.save(build_model("resnet18").state_dict(), weights)
    recipe = [*RECIPE, "--finetune", "last", "--lr", "0.01", "--init", str(weights)]
    recipe[recipe.index("squeezenet1_1")] = "resnet18"

    def run(out: Path) -> np.ndarray:
        argv = ["cv", "--manifest", str(manifest), "--out-dir", str(out), *recipe, "--folds", "2"]
        assert training_main(argv) == 0
        with (out / "oof.csv").open(newline="") as handle:
            return np.array([float(r["probability"]) for r in csv.DictReader(handle)])

    cached = run(tmp_path / "cached")
    said = capsys.readouterr()
    assert (said.out + said.err).count("computed once") == 1
    monkeypatch.setattr(trainer.FrozenBackbone, "applies", staticmethod(lambda cfg: False))
    full = run(tmp_path / "full")
    said = capsys.readouterr()
    assert "computed once" not in said.out + said.err
    np.testing.assert_allclose(cached, full, atol=1e-5)


def test_a_fold_run_with_the_manifest_elsewhere_is_reused(
    crossval: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The manifest's sha256 names the data, not its path: fold runs made on another machine
    (a GPU box with the data under another folder) finish a cross-validation started here."""
    out = crossval["root"] / "moved"
    argv = [a for a in crossval["argv"] if a != "--keep-models"]
    argv[argv.index("--out-dir") + 1] = str(out)
    assert training_main([*argv, "--only-folds", "0"]) == 0
    elsewhere = crossval["root"] / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / "copy.csv"
    moved.write_bytes(crossval["manifest"].read_bytes())  # same content, other path
    argv[argv.index("--manifest") + 1] = str(moved)
    capsys.readouterr()
    assert training_main([*argv, "--only-folds", "1"]) == 0
    assert "fold 1/2, seed 0: done before, reused" in capsys.readouterr().err
    assert json.loads((out / "cv.json").read_text())["complete"]


def test_summarise_trains_nothing_and_sums_up_the_stored_fold_runs(
    crossval: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Fold runs made by parallel calls (one ``--only-folds F`` each) are summed up by a last
    ``--summarise`` call, which loads no image and never trains a missing fold."""
    out = crossval["root"] / "parallel"
    argv = [a for a in crossval["argv"] if a != "--keep-models"]
    argv[argv.index("--out-dir") + 1] = str(out)
    (out / "folds").mkdir(parents=True)
    fold0 = crossval["out"] / "folds" / "fold0-seed0.json"
    (out / "folds" / fold0.name).write_bytes(fold0.read_bytes())
    capsys.readouterr()
    assert training_main([*argv, "--summarise"]) == 0
    err = capsys.readouterr().err
    assert "training" not in err and "loaded" not in err
    assert "fold 2/2, seed 0: not run yet, left out" in err
    first = json.loads((out / "cv.json").read_text())
    assert not first["complete"] and [f["fold"] for f in first["per_fold"]] == [0]
    fold1 = crossval["out"] / "folds" / "fold1-seed0.json"
    (out / "folds" / fold1.name).write_bytes(fold1.read_bytes())
    assert training_main([*argv, "--summarise"]) == 0
    whole = json.loads((crossval["out"] / "cv.json").read_text())
    assert json.loads((out / "cv.json").read_text())["summary"] == whole["summary"]


def test_a_fold_run_stored_under_the_earlier_key_is_reused_and_stored_again(
    crossval: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Fold runs stored before the key left the manifest's path out (it held the path too) are
    still reused at that path, and stored again under today's key, which matches elsewhere."""
    import argparse

    from training.commands import cv as cv_command
    from training.commands.inputs import load_manifest
    from training.cv import CVPlan, _plan_key
    from training.folds import assign_folds, cv_rows

    out = crossval["root"] / "earlier"
    (out / "folds").mkdir(parents=True)
    argv = [a for a in crossval["argv"] if a != "--keep-models"]
    argv[argv.index("--out-dir") + 1] = str(out)
    parser = argparse.ArgumentParser()
    cv_command.register(parser.add_subparsers())
    cfg = cv_command.config_from_args(parser.parse_args(argv))
    manifest = load_manifest(cfg.manifest, cfg.data_root)
    folds = assign_folds(cv_rows(manifest), 2, 0)
    plan = CVPlan(config=cfg, folds=2)
    earlier = _plan_key(plan, manifest, folds, with_paths=True)
    assert earlier != _plan_key(plan, manifest, folds)
    for name in ("fold0-seed0.json", "fold1-seed0.json"):
        data = json.loads((crossval["out"] / "folds" / name).read_text())
        (out / "folds" / name).write_text(json.dumps({**data, "plan_key": earlier}))
    copy = crossval["root"] / "copy-of-manifest.csv"
    copy.write_bytes(crossval["manifest"].read_bytes())
    elsewhere = [*argv, "--summarise"]
    elsewhere[elsewhere.index("--manifest") + 1] = str(copy)
    capsys.readouterr()
    assert training_main(elsewhere) == 0  # another path: the earlier key does not match
    assert "reused" not in capsys.readouterr().err
    assert training_main([*argv, "--summarise"]) == 0  # its own path: reused, stored again
    assert "fold 2/2, seed 0: done before, reused" in capsys.readouterr().err
    assert training_main(elsewhere) == 0  # now it matches wherever the manifest lies
    assert "fold 2/2, seed 0: done before, reused" in capsys.readouterr().err
