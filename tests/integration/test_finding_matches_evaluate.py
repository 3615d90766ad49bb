"""The shipped model says the same thing in the node's SR as in ``deepcovid evaluate``.

A COVID-19 image and a non-COVID image of the test split are wrapped in CR DICOM (pixels
unchanged), sent to the node with ``storescu``, analysed by the worker with the active shipped
model, and the SR's coded finding is compared with the finding ``deepcovid evaluate`` writes
to ``predictions.csv`` for the same images.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread

from common.paths import SHIPPED_REGISTRY
from store import JobStore
from store.outbox import Outbox
from tests.harness.factories import CXR_DIR, load_cxr, wrap_pixels
from tests.harness.net import REPO, wait_for
from tests.harness.services import ServiceProcess
from tests.harness.srread import read_report


def pick_images() -> list[dict[str, str]]:
    """The first COVID-19 and the first non-COVID image of the test split."""
    with (CXR_DIR / "manifest.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    return [next(r for r in rows if r["label"] == label) for label in ("covid", "non_covid")]


def test_sr_finding_matches_deepcovid_evaluate(
    settings_env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    rows = pick_images()
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    env = {**settings_env, "DEEPCOVID_MODEL_REGISTRY_DIR": str(SHIPPED_REGISTRY)}
    report = tmp_path / "report"
    cmd = [
        sys.executable, "-m", "deepcovid.cli", "evaluate", "--split", "test",
        "--manifest", str(manifest), "--data-root", str(CXR_DIR), "--out", str(report),
        "--bootstrap", "20", "--occlusion-images", "0", "--no-probes",
        "--localisation-sample", "0",
    ]  # fmt: skip  # the finding is the point: no probes, no heatmaps
    res = subprocess.run(
        cmd, env={**os.environ, **env}, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    with (report / "predictions.csv").open(newline="") as fh:
        expected = {r["path"]: r for r in csv.DictReader(fh)}
    assert len(expected) == 2

    files: dict[str, Path] = {}
    for row in rows:
        path = tmp_path / f"{row['label']}.dcm"
        wrap_pixels(load_cxr(row["path"])).save_as(path, enforce_file_format=True)
        files[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    for name in ("node", "worker"):
        services.append(ServiceProcess([name], env, tmp_path / f"{name}.log").start())
    port = env["DEEPCOVID_PORT"]
    echo = ["echoscu", "-aec", "DEEPCOVID", "127.0.0.1", port]
    wait_for(lambda: subprocess.run(echo, capture_output=True).returncode == 0, timeout=90)
    store_cmd = ["storescu", "-aec", "DEEPCOVID", "127.0.0.1", port, *map(str, files.values())]
    assert subprocess.run(store_cmd, capture_output=True).returncode == 0

    store = JobStore(f"sqlite:///{Path(env['DEEPCOVID_DATA_DIR']) / 'jobs.sqlite'}")
    wait_for(lambda: store.counts() == {"delivered": 2}, timeout=300, what="both delivered")
    for row in rows:
        want = expected[row["path"]]
        uid = next(u for u, p in files.items() if p.stem == row["label"])
        job = store.get_by_uid(uid)
        assert job is not None and job.probability is not None
        assert job.probability == pytest.approx(float(want["probability"]), abs=2e-3)
        sr_row = next(r for r in Outbox(store).for_job(job.id) if r.kind == "sr")
        verdict = read_report(Path(sr_row.path)).verdict
        assert verdict is not None and verdict.lower() == want["finding"], row["path"]
        assert job.finding == want["finding"]
