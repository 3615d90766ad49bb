"""Time from ``storescu`` to Orthanc until the SR, SC and PM are stored there (not a test).

Starts a real Orthanc (auto-routing to the node), our node and one worker on the embedded
defaults, sends one chest CR at a time (a fresh study each time) and reports the median of
``--runs`` round trips per architecture, with the share of each stage taken from the job's
timeline: intake (Orthanc forwards, node spools), queue wait, model inference, occlusion heatmap,
building the result objects, delivery (C-STORE + C-FIND confirmation) and Orthanc indexing.

Speed does not depend on the weights, so each architecture runs with randomly initialised
weights in a temporary registry. Usage::

    .venv/bin/python benchmarks/bench_end_to_end.py --arch squeezenet1_1 resnet18 --runs 10
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pydicom import dcmread  # noqa: E402

from store import JobStore  # noqa: E402
from tests.conftest import ServiceProcess, free_port, wait_for  # noqa: E402
from tests.factories import load_cxr, random_registry, wrap_pixels  # noqa: E402
from tests.integration.orthanc import Orthanc  # noqa: E402

RESULT_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.34",
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.30",
}
IMAGE = "images/covid/figure1__covid__COVID-00001.jpg"


def stage_shares(store: JobStore, job_id: int) -> dict[str, float]:
    events = store.events(job_id)
    at = {}
    for e in events:
        at.setdefault(e.state, e.at)
    analysed = next(e for e in events if e.state == "analysed")
    inference = float(re.search(r"inference ([\d.]+) s", analysed.message or "").group(1))  # type: ignore[union-attr]
    heatmap = float(re.search(r"heatmap ([\d.]+) s", analysed.message or "").group(1))  # type: ignore[union-attr]
    total_analysis = (at["analysed"] - at["analysing"]).total_seconds()
    return {
        "queue": (at["analysing"] - at["received"]).total_seconds(),
        "inference": inference,
        "heatmap": heatmap,
        "load+gate+model": max(total_analysis - inference - heatmap, 0.0),
        "build": (at["results_built"] - at["analysed"]).total_seconds(),
        "delivery": (at["delivered"] - at["results_built"]).total_seconds(),
    }


def run(arch: str, runs: int, work: Path) -> None:
    env = {
        **os.environ,
        "DEEPCOVID_DATA_DIR": str(work / "data"),
        "DEEPCOVID_PORT": str(free_port()),
        "DEEPCOVID_BIND_ADDRESS": "127.0.0.1",
        "DEEPCOVID_MODEL_REGISTRY_DIR": str(random_registry(work / "registry", arch)),
        "DEEPCOVID_MIN_FREE_SPACE_MB": "1",
        "DEEPCOVID_MONITORING_PORT": "0",
    }
    orthanc = Orthanc(work / "orthanc", node_aet="DEEPCOVID", node_port=int(env["DEEPCOVID_PORT"]))
    env["DEEPCOVID_DESTINATION"] = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
    orthanc.start()
    services = [
        ServiceProcess([name], env, work / f"{name}.log").start() for name in ("node", "worker")
    ]
    try:
        echo = ["echoscu", "-aec", "DEEPCOVID", "127.0.0.1", env["DEEPCOVID_PORT"]]
        wait_for(lambda: subprocess.run(echo, capture_output=True).returncode == 0, timeout=120)
        store = JobStore(f"sqlite:///{work / 'data' / 'jobs.sqlite'}")
        pixels = load_cxr(IMAGE)
        times: list[float] = []
        shares: list[dict[str, float]] = []
        for i in range(runs + 1):  # the first run warms up the worker (model load) and is dropped
            path = work / f"cr{i}.dcm"
            wrap_pixels(pixels).save_as(path, enforce_file_format=True)
            study = str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)
            t0 = time.perf_counter()
            subprocess.run(
                ["storescu", "-aec", "ORTHANC", "127.0.0.1", str(orthanc.dicom_port), str(path)],
                check=True,
                capture_output=True,
            )
            wait_for(
                lambda study=study: set(orthanc.study_sop_classes(study)) >= RESULT_CLASSES,
                timeout=600,
                interval=0.1,
                what="results in Orthanc",
            )
            elapsed = time.perf_counter() - t0
            if i == 0:
                continue
            times.append(elapsed)
            job = store.list(limit=1)[0]
            wait_for(lambda job=job: store.get(job.id).state == "delivered", timeout=120)  # type: ignore[union-attr]
            shares.append(stage_shares(store, job.id))
        median = statistics.median(times)
        print(f"\n{arch}: storescu -> SR+SC+PM in Orthanc, median of {runs}: {median:.2f} s")
        print(f"  min {min(times):.2f} s, max {max(times):.2f} s")
        for stage in shares[0]:
            m = statistics.median(s[stage] for s in shares)
            print(f"  {stage:<16} {m:6.2f} s  ({100 * m / median:4.1f} %)")
        rest = median - sum(statistics.median(s[k] for s in shares) for k in shares[0])
        print(f"  {'intake+indexing':<16} {rest:6.2f} s  ({100 * rest / median:4.1f} %)")
    finally:
        for svc in services:
            svc.stop()
        orthanc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["squeezenet1_1", "resnet18"])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    for arch in args.arch:
        with tempfile.TemporaryDirectory() as tmp:
            run(arch, args.runs, Path(tmp))


if __name__ == "__main__":
    main()
