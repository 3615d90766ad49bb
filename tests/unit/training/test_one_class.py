"""Evaluation on a split of one class only (a site's positive cases): no AUC, but the rate.

Such a split has no ROC curve, so AUC and its interval are not defined; sensitivity (all
COVID-19) or specificity (all non-COVID) still is, and the commands must say so instead of
failing after all the work.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from models.registry import Registry
from tests.harness.factories import CXR_DIR, random_registry
from training.__main__ import main as training_main
from training.cv_metrics import summarise
from training.report import METRICS_FILE, REPORT_FILE


def _one_class_manifest(path: Path, label: str) -> Path:
    with (CXR_DIR / "manifest.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"]
    picked = [r for r in rows if r["label"] == label][:4]
    fields = ["path", "label", "split", "finding", "source"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for r in picked:
            row = {**{k: r[k] for k in fields}, "path": str(CXR_DIR / r["path"])}
            writer.writerow({**row, "split": "positives"})
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_registry(tmp_path_factory.mktemp("registry"))


FAST = [
    *("--device", "cpu", "--threads", "2", "--bootstrap", "20", "--occlusion-images", "1"),
    *("--occlusion-window", "56", "--occlusion-stride", "56", "--no-probes"),
    *("--localisation-sample", "0"),
]


@pytest.mark.parametrize(
    ("label", "rate"), [("covid", "sensitivity"), ("non_covid", "specificity")]
)
def test_evaluate_on_one_class_reports_the_rate_and_no_auc(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], label: str, rate: str
) -> None:
    manifest = _one_class_manifest(tmp_path / "m.csv", label)
    out = tmp_path / "report"
    argv = ["evaluate", "--registry", str(registry), "--manifest", str(manifest)]
    status = training_main([*argv, "--split", "positives", "--out", str(out), *FAST])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert "AUC not defined (one class)" in printed.out
    assert f"{rate} " in printed.out
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert metrics["auc"] is None and metrics["n"] == 4
    assert metrics["operating_point"][rate] is not None
    assert "not defined (one class)" in (out / REPORT_FILE).read_text()


def _cv_folder(folder: Path, aucs: list[float]) -> Path:
    """A cross-validation summary as ``cv`` writes it (only what ``compare`` reads)."""
    folder.mkdir()
    per_fold = [{"auc": a, "within_source_auc": a - 0.1, "specificity_at_98": 0.5} for a in aucs]
    report = {"folds": len(aucs), "seeds": [0], "versions": [], "summary": summarise(per_fold)}
    (folder / "cv.json").write_text(json.dumps(report))
    return folder


def test_compare_on_one_class_with_cv_columns(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    random_registry(registry, seed=1)  # a second version
    first, second = Registry(registry).versions()[:2]
    manifest = _one_class_manifest(tmp_path / "m.csv", "covid")
    cv = _cv_folder(tmp_path / "cv", [0.8, 0.9, 0.85])
    out = tmp_path / "compare"
    argv = ["compare", first, second, "--registry", str(registry), "--manifest", str(manifest)]
    argv += ["--split", "positives", "--out", str(out), "--cv", f"{first}={cv}"]
    argv += [a for a in FAST if a not in {"--occlusion-images", "1"}]
    status = training_main(argv)
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert printed.out.count("AUC not defined (one class)") == 2
    assert "specificity" not in printed.out.split("comparison written")[0]
    table = (out / "compare.md").read_text()
    assert "| CV pooled AUC | CV within-source AUC |" in table
    line = next(x for x in table.splitlines() if x.startswith(f"| {first} |"))
    assert "not defined (one class)" in line and "0.850 ± 0.050" in line
    other = next(x for x in table.splitlines() if x.startswith(f"| {second} |"))
    assert "| - | - |" in other  # no CV for this one
    data = json.loads((out / "compare.json").read_text())
    assert data["models"][0]["cv"]["auc"]["mean"] == pytest.approx(0.85)
    assert data["models"][1]["cv"] is None


def test_compare_refuses_a_cv_folder_without_summary(registry: Path, tmp_path: Path) -> None:
    argv = ["compare", "v0001", "--registry", str(registry), "--cv", f"v0001={tmp_path}"]
    assert training_main(argv) == 2
