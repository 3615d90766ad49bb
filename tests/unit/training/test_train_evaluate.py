"""A tiny real training run, resume, evaluation report and comparison (real chest X-rays).

A few dozen images of ``shared/data/cxr`` at 64 px, two or three epochs: the point is that the
whole path works and writes what it promises, not that the model is good.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from models.registry import Registry
from tests.harness.factories import CXR_DIR
from training.__main__ import main as training_main
from training.portable import absolute_paths
from training.report import FIGURES, METRICS_FILE, PREDICTIONS_FILE, REPORT_FILE

assert (CXR_DIR / "manifest.csv").is_file(), f"shared chest X-ray data missing at {CXR_DIR}"

PER_GROUP = {"train": 12, "val": 6, "test": 6}


def _tiny_manifest(path: Path) -> Path:
    """Up to N images per split and label, taken round-robin over sources (absolute paths)."""
    with (CXR_DIR / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    picked: list[dict[str, str]] = []
    for split, limit in PER_GROUP.items():
        for label in ("covid", "non_covid"):
            pool = [r for r in rows if r["split"] == split and r["label"] == label]
            by_source: dict[str, list[dict[str, str]]] = {}
            for r in pool:
                by_source.setdefault(r["source"], []).append(r)
            queues = list(by_source.values())
            chosen: list[dict[str, str]] = []
            while len(chosen) < limit and any(queues):
                for q in queues:
                    if q and len(chosen) < limit:
                        chosen.append(q.pop(0))
            picked += chosen
    with path.open("w", newline="") as handle:
        fields = ["path", "label", "split", "finding", "source"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for r in picked:
            writer.writerow({**{k: r[k] for k in fields}, "path": str(CXR_DIR / r["path"])})
    return path


TRAIN_FLAGS = [
    "--arch",
    "resnet18",
    "--input-size",
    "64",
    "--batch-size",
    "8",
    "--lr",
    "1e-3",
    "--augment",
    "none",
    "--covid-copies",
    "1",
    "--threads",
    "2",
    "--load-workers",
    "2",
    "--no-progress",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train 2 epochs, then resume to 3; return the paths."""
    root = tmp_path_factory.mktemp("train")
    manifest = _tiny_manifest(root / "manifest.csv")
    registry, run = root / "registry", root / "run"
    common = ["--manifest", str(manifest), "--registry", str(registry), "--run-dir", str(run)]
    assert training_main(["train", *common, *TRAIN_FLAGS, "--epochs", "2", "--version", "two"]) == 0
    first_history = root / "first.json"
    first_history.write_text((run / "history.json").read_text())
    assert (
        training_main(
            ["train", *common, *TRAIN_FLAGS, "--epochs", "3", "--resume", "--version", "three"]
        )
        == 0
    )
    return {
        "root": root,
        "manifest": manifest,
        "registry": registry,
        "run": run,
        "first_history": first_history,
    }


def test_training_writes_a_loadable_version_with_card(trained: dict[str, Path]) -> None:
    registry = Registry(trained["registry"])
    assert set(registry.versions()) == {"two", "three"}
    assert registry.active_version() is None  # not activated without --activate
    model, card = registry.load("two")
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2)
    assert card.architecture == "resnet18" and card.input_size == 64
    assert card.weights_sha256 and card.device_uid
    assert 0.0 <= card.threshold <= 1.0
    assert "sensitivity >= 0.98 on the val split" in card.threshold_method
    # both named points chosen on val, so either threshold_policy serves the new version
    assert set(card.operating_points) == {"paper", "clinical"}
    assert card.operating_point("paper") == ("paper", card.operating_points["paper"])
    assert card.operating_points["paper"].threshold == card.threshold
    assert card.operating_points["clinical"].threshold >= card.threshold
    assert card.operating_points["clinical"].specificity_ci is not None
    assert {"val/auc", "val/sensitivity", "val/specificity"} <= set(card.metrics)
    assert card.metrics["val/sensitivity"].value >= 0.98 - 1e-9
    assert card.training_manifest_sha256 and card.training_command.startswith("python -m training")
    assert card.training_parameters["epochs_run"] == 2
    assert card.training_parameters["batch_size"] == 8
    card_text = (trained["registry"] / "two" / "model_card.json").read_text()
    assert not absolute_paths(card_text)  # the tmp registry, run folder and manifest: relative
    assert card.training_manifest == "<registry>/../manifest.csv"
    assert card.training_parameters["manifest"] == "<registry>/../manifest.csv"


def test_loss_decreases(trained: dict[str, Path]) -> None:
    history = json.loads((trained["first_history"]).read_text())
    assert len(history) == 2
    assert history[1]["train_loss"] < history[0]["train_loss"]


def test_resume_continues_from_saved_epoch(trained: dict[str, Path]) -> None:
    history = json.loads((trained["run"] / "history.json").read_text())
    first = json.loads(trained["first_history"].read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[:2] == first  # epochs 1-2 kept, not retrained
    card = Registry(trained["registry"]).card("three")
    assert card.training_parameters["epochs_run"] == 3


def test_resume_refuses_a_different_experiment(
    trained: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [f if f != "resnet18" else "squeezenet1_1" for f in TRAIN_FLAGS]
    assert (
        training_main(
            [
                "train",
                "--manifest",
                str(trained["manifest"]),
                "--registry",
                str(trained["registry"]),
                "--run-dir",
                str(trained["run"]),
                *flags,
                "--epochs",
                "4",
                "--resume",
            ]
        )
        == 2
    )
    assert "cannot resume" in capsys.readouterr().err  # one line, no traceback


def test_evaluate_writes_every_report_file(trained: dict[str, Path]) -> None:
    out = trained["root"] / "report"
    status = training_main(
        [
            "evaluate",
            "--registry",
            str(trained["registry"]),
            "--model",
            "two",
            "--split",
            "test",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--threads",
            "2",
            "--bootstrap",
            "200",
            "--occlusion-images",
            "3",
            "--occlusion-window",
            "16",
            "--occlusion-stride",
            "16",
            "--localisation-sample",
            "4",
            "--record-in-card",
        ]
    )
    assert status == 0
    expected = {METRICS_FILE, REPORT_FILE, PREDICTIONS_FILE, *FIGURES.values()}
    assert expected <= {p.name for p in out.iterdir()}
    for name in FIGURES.values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert metrics["n"] == 2 * PER_GROUP["test"]
    assert 0.0 <= metrics["auc"] <= 1.0
    lo, hi = metrics["auc_ci_bootstrap"]
    assert lo <= metrics["auc"] <= hi
    op = metrics["operating_point"]
    assert op["tp"] + op["fn"] == PER_GROUP["test"]
    assert set(metrics["per_source"]) >= {"nih_chestxray8"}
    assert len(metrics["occlusion"]["images"]) == 3
    # The shortcut checks: within source, the baseline from the card, probes, localisation.
    assert "pooled_auc" in metrics["within_source"]
    assert metrics["source_baseline"]["origin"] == "model card"
    assert set(metrics["probes"]["probes"]) == {"original", "lungs_hidden", "lungs_only"}
    assert metrics["probes"]["probes"]["original"]["auc"] == metrics["auc"]
    assert metrics["localisation"]["sample_size"] == 4
    predictions = (out / PREDICTIONS_FILE).read_text().splitlines()
    assert predictions[0] == "path,label,source,probability,finding"
    assert len(predictions) == 1 + metrics["n"]
    positives = sum(line.endswith(",present") for line in predictions[1:])
    assert positives == op["tp"] + op["fp"]
    report = (out / REPORT_FILE).read_text()
    for heading in (
        "Headline",
        "ROC AUC within source",
        "Shortcut probes",
        "Heatmap localisation",
        "Tables 2-5",
        "Per source",
        "Fig 14",
    ):
        assert heading in report
    card = Registry(trained["registry"]).card("two")
    assert card.source_prevalence["nih_chestxray8"] == 0.0  # written at training time
    assert "test/auc" in card.metrics and "test/nih_chestxray8/specificity" in card.metrics
    for name in (METRICS_FILE, REPORT_FILE, PREDICTIONS_FILE):
        assert not absolute_paths((out / name).read_text()), name
    assert metrics["manifest"] == "<registry>/../manifest.csv"


def test_evaluate_takes_a_split_the_site_named(trained: dict[str, Path]) -> None:
    lines = trained["manifest"].read_text().splitlines()
    holdout = trained["root"] / "holdout.csv"
    holdout.write_text("\n".join(line.replace(",test,", ",holdout,") for line in lines) + "\n")
    out = trained["root"] / "report-holdout"
    status = training_main(
        [
            "evaluate",
            *("--registry", str(trained["registry"]), "--model", "two"),
            *("--manifest", str(holdout), "--split", "holdout", "--out", str(out)),
            *("--device", "cpu", "--bootstrap", "50", "--occlusion-images", "1"),
            *("--occlusion-window", "32", "--occlusion-stride", "32"),
        ]
    )
    assert status == 0
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert metrics["split"] == "holdout" and metrics["n"] == 2 * PER_GROUP["test"]


def test_compare_writes_table_and_curves(trained: dict[str, Path]) -> None:
    out = trained["root"] / "compare"
    status = training_main(
        [
            "compare",
            "two",
            "three",
            "--registry",
            str(trained["registry"]),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--bootstrap",
            "100",
            *("--localisation-sample", "4", "--occlusion-window", "16"),
            *("--occlusion-stride", "16"),
        ]
    )
    assert status == 0
    data = json.loads((out / "compare.json").read_text())
    assert [m["version"] for m in data["models"]] == ["two", "three"]
    for model in data["models"]:  # the shortcut checks ran for each version
        assert set(model["probes"]) == {"lungs_hidden", "lungs_only"}
        assert model["localisation"]["sample_size"] == 4
    table = (out / "compare.md").read_text()
    assert "| two | resnet18 |" in table and "| three | resnet18 |" in table
    assert "within-source AUC, lungs hidden / lungs only" in table
    assert "evidence in lungs, COVID-19 calls" in table
    assert (out / "roc_compare.png").stat().st_size > 1000


def test_threshold_command_rechooses_and_stores(
    trained: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Both operating points, chosen on the labelled split and stored; the card's threshold is
    the paper point's; the command says what it stored."""
    registry = Registry(trained["registry"])
    before = registry.card("three")
    common = ["--registry", str(trained["registry"]), "--model", "three", "--device", "cpu"]
    assert training_main(["threshold", *common, "--dry-run", "--bootstrap", "50"]) == 0
    assert registry.card("three") == before
    assert "dry run: the card is unchanged" in capsys.readouterr().out
    assert training_main(["threshold", *common, "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out
    assert "clinical (sensitivity >= 90 %): threshold" in printed
    assert "stored both points" in printed
    after = registry.card("three")
    assert set(after.operating_points) == {"paper", "clinical"}
    paper, clinical = after.operating_points["paper"], after.operating_points["clinical"]
    assert after.threshold == paper.threshold
    assert "sensitivity >= 0.98 on the val split" in after.threshold_method
    assert clinical.threshold >= paper.threshold
    assert clinical.sensitivity is not None and clinical.sensitivity >= 0.9
    assert clinical.threshold_ci is not None and "50 resamples" in clinical.ci_method
    assert after.metrics["val/sensitivity"].value >= 0.98 - 1e-9
    assert after.operating_point("clinical") == ("clinical", clinical)
    registry.verify("three")  # weights untouched

    # evaluate reports each stored point on the split it scores.
    out = trained["root"] / "report-points"
    argv = ["evaluate", *common, "--split", "test", "--out", str(out), "--bootstrap", "20"]
    argv += ["--no-probes", "--occlusion-images", "0", "--localisation-sample", "0"]
    assert training_main(argv) == 0
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert set(metrics["operating_points"]) == {"paper", "clinical"}
    assert metrics["operating_points"]["clinical"]["threshold"] == clinical.threshold
    assert "at the clinical (sensitivity >= 90 %) point" in (out / "report.md").read_text()


def test_threshold_command_refuses_films_of_one_class(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A site's positive cases alone give no specificity: a clear error, the card unchanged."""
    with trained["manifest"].open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "val" and r["label"] == "covid"]
    site = tmp_path / "site.csv"
    with site.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "split": "site"} for r in rows)
    registry = Registry(trained["registry"])
    before = registry.card("two")
    args = ["--registry", str(trained["registry"]), "--model", "two", "--device", "cpu"]
    status = training_main(["threshold", *args, "--manifest", str(site), "--split", "site"])
    assert status == 2
    assert "both COVID-19 and non-COVID" in capsys.readouterr().err
    assert registry.card("two") == before


def test_deepcovid_cli_registers_the_commands() -> None:
    from deepcovid.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "--manifest", "m.csv", "--epochs", "3", "--oversample"])
    assert args.epochs == 3 and args.oversample and callable(args.func)
    for command in (["evaluate"], ["compare", "v1", "v2"], ["threshold"], ["models", "fit-domain"]):
        assert callable(parser.parse_args(command).func)
    with pytest.raises(SystemExit):  # fit-domain is a command of the registry, registered once
        parser.parse_args(["fit-domain"])
