"""End to end with a real PACS: Orthanc auto-routes chest X-rays to our node, the worker
analyses them, and the SR, heatmap SC and Parametric Map come back into the same study.

Runs with the embedded broker and with a real redis-server. Also: what the gate rejects sends
nothing clinical back, and a PACS that is down for a minute gets every result exactly once.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from store import JobStore
from store.outbox import Outbox
from tests.harness.factories import CT_IMAGE_STORAGE, load_cxr, wrap_pixels
from tests.harness.net import wait_for
from tests.harness.orthanc import Orthanc
from tests.harness.services import ServiceProcess

SR = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
SC = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
PM = "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map
PR = "1.2.840.10008.5.1.4.1.1.11.1"  # Grayscale Softcopy Presentation State
COVID_IMAGE = "images/covid/figure1__covid__COVID-00001.jpg"


@pytest.fixture
def env(broker_env: dict[str, str]) -> dict[str, str]:
    """Each broker, with quick delivery retries."""
    return {**broker_env, "DEEPCOVID_DELIVERY_BACKOFF_S": "2"}


@pytest.fixture
def pacs(env: dict[str, str], tmp_path: Path):  # type: ignore[no-untyped-def]
    orthanc = Orthanc(
        tmp_path / "orthanc",
        node_aet="DEEPCOVID",
        node_port=int(env["DEEPCOVID_PORT"]),
        routed_modalities="CR,DX,CT",
    )
    env["DEEPCOVID_DESTINATION"] = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
    orthanc.start()
    yield orthanc
    orthanc.stop()


def start_node_and_worker(
    env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> JobStore:
    for name in ("node", "worker"):
        services.append(ServiceProcess([name], env, tmp_path / f"{name}.log").start())
    port = env["DEEPCOVID_PORT"]

    def echo() -> bool:
        cmd = ["echoscu", "-aec", "DEEPCOVID", "127.0.0.1", port]
        return subprocess.run(cmd, capture_output=True).returncode == 0

    wait_for(echo, timeout=90, what="the node to answer C-ECHO")
    return JobStore(f"sqlite:///{Path(env['DEEPCOVID_DATA_DIR']) / 'jobs.sqlite'}")


def storescu(port: int, aec: str, *files: Path) -> None:
    cmd = ["storescu", "-aet", "MODALITY", "-aec", aec, "127.0.0.1", str(port), *map(str, files)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def chest_cr(tmp_path: Path, name: str, **kwargs: object) -> Path:
    ds = wrap_pixels(load_cxr(COVID_IMAGE), **kwargs)  # type: ignore[arg-type]
    path = tmp_path / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_results_reach_the_pacs_in_the_same_study(
    env: dict[str, str], pacs: Orthanc, services: list[ServiceProcess], tmp_path: Path
) -> None:
    store = start_node_and_worker(env, services, tmp_path)
    cr = chest_cr(tmp_path, "cr")
    study = str(dcmread(cr).StudyInstanceUID)
    storescu(pacs.dicom_port, pacs.aet, cr)

    def results_in_orthanc() -> bool:
        classes = pacs.study_sop_classes(study)
        return {SR, SC, PM, PR} <= set(classes)

    wait_for(results_in_orthanc, timeout=240, what="SR, SC, PM and GSPS in Orthanc's study")
    classes = pacs.study_sop_classes(study)
    assert sorted(classes).count(SR) == 1 and len(classes) == 5, classes
    wait_for(lambda: store.counts() == {"delivered": 1}, timeout=60, what="job delivered")
    job = store.list()[0]
    rows = Outbox(store).for_job(job.id)
    assert {r.kind for r in rows} == {"sr", "sc", "pm", "pr"}
    assert all(r.delivery_state == "confirmed" for r in rows), rows
    # Orthanc does not route our results back to us: still exactly one job.
    time.sleep(3)
    assert len(store.list()) == 1


def test_rejected_instances_send_nothing_clinical_back(
    env: dict[str, str], pacs: Orthanc, services: list[ServiceProcess], tmp_path: Path
) -> None:
    store = start_node_and_worker(env, services, tmp_path)
    lateral = chest_cr(tmp_path, "lateral", view_position="LL")
    ct = chest_cr(tmp_path, "ct", modality="CT", sop_class_uid=CT_IMAGE_STORAGE)
    storescu(pacs.dicom_port, pacs.aet, lateral, ct)
    wait_for(lambda: store.counts() == {"rejected": 2}, timeout=120, what="both rejected")
    reasons = sorted(j.reason or "" for j in store.list())
    assert any("lateral" in r.lower() for r in reasons), reasons
    assert any("CT" in r for r in reasons), reasons
    time.sleep(3)
    for path in (lateral, ct):
        classes = pacs.study_sop_classes(str(dcmread(path).StudyInstanceUID))
        assert classes and not ({SR, SC, PM} & set(classes)), classes


def test_pacs_down_for_a_minute_gets_every_result_exactly_once(
    env: dict[str, str], pacs: Orthanc, services: list[ServiceProcess], tmp_path: Path
) -> None:
    store = start_node_and_worker(env, services, tmp_path)
    pacs.stop()
    cr = chest_cr(tmp_path, "cr")
    storescu(int(env["DEEPCOVID_PORT"]), "DEEPCOVID", cr)  # straight to the node
    outbox = Outbox(store)

    def failed_attempt() -> bool:
        jobs = store.list()
        return bool(jobs) and any(
            r.attempts >= 1 and r.last_error for r in outbox.for_job(jobs[0].id)
        )

    wait_for(failed_attempt, timeout=180, what="a failed delivery attempt")
    assert store.list()[0].state == "results_built"
    time.sleep(60)
    assert store.list()[0].state == "results_built", "nothing is given up while the PACS is down"
    pacs.start()
    wait_for(lambda: store.counts() == {"delivered": 1}, timeout=180, what="delivery after restart")
    study = str(dcmread(cr).StudyInstanceUID)
    classes = pacs.study_sop_classes(study)
    assert sorted(classes) == sorted([SR, SC, PM, PR]), classes
    stored = [
        c for c in pacs.get("/changes?limit=1000")["Changes"] if c["ChangeType"] == "NewInstance"
    ]
    assert len(stored) == 4, "each result stored once"
