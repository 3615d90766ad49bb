"""The report puts within-source numbers beside the pooled AUC, then the probes and localisation.

Same hand example as ``test_within_source``: pooled within-source AUC 2/3 from sources A and B.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from models.card import ModelCard
from training.evaluate import Scored, compute_metrics, json_safe
from training.localisation import summarise_shares
from training.manifest import ManifestRow, read_manifest, write_manifest
from training.probes import summarise_probes
from training.report import METRICS_FILE, REPORT_FILE, write_report

LABELS = np.array([1, 1, 0, 0, 1, 0, 0, 0])
SCORES = np.array([0.9, 0.4, 0.6, 0.1, 0.2, 0.3, 0.1, 0.05])
SOURCES = ["A", "A", "A", "A", "B", "B", "B", "C"]


def test_report_leads_with_within_source_and_shows_the_shortcut_checks(tmp_path: Path) -> None:
    records = [
        {"path": f"{i}.jpg", "label": "covid" if y else "non_covid", "split": "test", "source": s}
        for i, (y, s) in enumerate(zip(LABELS, SOURCES, strict=True))
    ]
    write_manifest(tmp_path / "m.csv", records)
    manifest = read_manifest(tmp_path / "m.csv")
    rows = [
        ManifestRow(r.path, r.relpath, r.label, r.split, source=r.source) for r in manifest.rows
    ]
    card = ModelCard(
        architecture="resnet18",
        version="v1",
        threshold=0.5,
        source_prevalence={"A": 0.5, "B": 0.25, "C": 0.0, "*": 0.3},
    )
    metrics = compute_metrics(Scored(LABELS, SCORES, rows), card, manifest, "test", n_boot=100)
    probes = summarise_probes(
        LABELS,
        SOURCES,
        {"original": SCORES, "lungs_hidden": SCORES[::-1].copy(), "lungs_only": SCORES},
    )
    loc = {
        "sample_size": 3,
        "population": 8,
        "seed": 0,
        "window": 32,
        "stride": 8,
        "sampling": "stratified",
        "uniform_share": 0.33,
        **summarise_shares(np.array([0.7, 0.2, 0.5]), LABELS[:3], SOURCES[:3], LABELS[:3] == 1),
    }
    lung_fields = {
        "methods": {"prior": 8},
        "mean_area": 0.33,
        "fallback_by_class": {
            "covid": {"n": 3, "fallback": 0},
            "non_covid": {"n": 5, "fallback": 1},
        },
    }
    metrics.update(
        json_safe(
            {
                "probes": {"fill_note": "0.5", "probes": probes, "lung_fields": lung_fields},
                "localisation": loc,
            }
        )
    )
    write_report(tmp_path / "out", metrics, card)
    saved = json.loads((tmp_path / "out" / METRICS_FILE).read_text())
    assert abs(saved["within_source"]["pooled_auc"] - 2 / 3) < 1e-12
    assert saved["source_baseline"]["origin"] == "model card"
    assert saved["source_baseline"]["within_source_auc"] == 0.5
    report = (tmp_path / "out" / REPORT_FILE).read_text()
    headline = report.split("## Headline")[1].split("\n## ")[0]
    assert "| ROC AUC, pooled over sources |" in headline
    assert "**ROC AUC within source** (pairs of one source; 6 pairs from A, B) | **0.667**" in (
        headline
    )
    assert "ROC AUC within A (2 COVID-19, 2 non-COVID) | 0.750" in headline
    assert "source-only baseline AUC" in headline
    assert report.index("Within source: the numbers") < report.index("Tables 2-5")
    assert "| A (few) | 2 | 2 | 0.750" in report
    assert "0.5 by construction (computed: 0.500)" in report
    assert "| lung fields hidden | " in report and "| AUC within A | AUC within B |" in report
    assert "On a **sample** of 3 of 8 images" in report
    assert "| **COVID-19 calls** (p >= 0.5000) | 2 | 45.0 % | 45.0 % |" in report


def test_report_says_when_the_checks_were_skipped(tmp_path: Path) -> None:
    write_manifest(
        tmp_path / "m.csv",
        [
            {"path": "a.jpg", "label": "covid", "split": "test", "source": "A"},
            {"path": "b.jpg", "label": "non_covid", "split": "test", "source": "A"},
        ],
    )
    manifest = read_manifest(tmp_path / "m.csv")
    card = ModelCard(architecture="resnet18", threshold=0.5)
    metrics = compute_metrics(
        Scored(np.array([1, 0]), np.array([0.7, 0.2]), list(manifest.rows)),
        card,
        manifest,
        "test",
        n_boot=10,
    )
    # No train split and no card field: the baseline says so instead of inventing shares.
    assert metrics["source_baseline"]["auc"] is None
    assert "unavailable" in metrics["source_baseline"]["origin"]
    metrics["probes"] = {"skipped": "disabled (--no-probes)"}
    metrics["localisation"] = {"skipped": "disabled (--localisation-sample 0)"}
    write_report(tmp_path / "out", metrics, card)
    report = (tmp_path / "out" / REPORT_FILE).read_text()
    assert "Not computed: disabled (--no-probes)." in report
    assert "Not computed: disabled (--localisation-sample 0)." in report
