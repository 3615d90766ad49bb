"""The queue with real brokers and real ``celery worker`` processes.

Runs once with the embedded durable broker (kombu SQLAlchemy transport on SQLite) and once with
a real ``redis-server``. Instances are received by our node from dcmtk ``storescu``; the worker
opens each spooled instance and records its key attributes on the job.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid

from store import JobStore
from tests.harness.factories import DICOM_DIR
from tests.harness.net import wait_for
from tests.harness.services import ServiceProcess


def start(services: list[ServiceProcess], args: list[str], env: dict[str, str], log: Path):  # type: ignore[no-untyped-def]
    svc = ServiceProcess(args, env, log).start()
    services.append(svc)
    return svc


def wait_listening(port: int, node: ServiceProcess) -> None:
    def ready() -> bool:
        assert node.proc is not None and node.proc.poll() is None, node.output()
        return (
            subprocess.run(
                ["echoscu", "-aec", "DEEPCOVID", "127.0.0.1", str(port)], capture_output=True
            ).returncode
            == 0
        )

    wait_for(ready, timeout=90, what="the node to answer C-ECHO")


def copies(src: Path, n: int, out: Path) -> list[Path]:
    """``n`` copies of ``src`` with fresh SOP Instance UIDs."""
    out.mkdir(parents=True, exist_ok=True)
    ds = dcmread(src)
    paths = []
    for i in range(n):
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        path = out / f"{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def storescu(port: int, files: list[Path]) -> None:
    assert shutil.which("storescu"), "dcmtk is not installed"
    res = subprocess.run(
        ["storescu", "-aet", "STORESCU", "-aec", "DEEPCOVID", "127.0.0.1", str(port)]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr


def test_jobs_sent_by_storescu_reach_their_state(
    broker_env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    port = int(broker_env["DEEPCOVID_PORT"])
    node = start(services, ["node"], broker_env, tmp_path / "node.log")
    wait_listening(port, node)
    start(services, ["worker"], broker_env, tmp_path / "worker.log")
    files = [
        DICOM_DIR / "nih_chestxray_DX_nhsx_test.dcm",
        *copies(DICOM_DIR / "nih_chestxray_DX_nhsx_test.dcm", 5, tmp_path / "send"),
    ]
    storescu(port, files)
    store = JobStore(f"sqlite:///{Path(broker_env['DEEPCOVID_DATA_DIR']) / 'jobs.sqlite'}")

    def all_done() -> bool:
        return store.counts() == {"delivered": len(files)}

    wait_for(all_done, timeout=240, what=f"{len(files)} jobs delivered to the results folder")
    for job in store.list(limit=100):
        assert job.modality in {"DX", "OT"}
        assert (job.rows, job.columns) == (1024, 1024)
        assert job.photometric_interpretation == "MONOCHROME2"
        assert job.transfer_syntax_uid is not None
        states = [e.state for e in store.events(job.id)]
        assert states[0] == "received" and states[-1] == "delivered"
        assert {"queued", "analysing", "analysed", "results_built"} <= set(states)
        assert job.probability is not None and job.model_version


def test_killed_worker_loses_no_job(
    broker_env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    port = int(broker_env["DEEPCOVID_PORT"])
    node = start(services, ["node"], broker_env, tmp_path / "node.log")
    wait_listening(port, node)
    files = copies(DICOM_DIR / "nih_chestxray_DX_nhsx_test.dcm", 8, tmp_path / "send")
    storescu(port, files)  # all queued before any worker runs
    store = JobStore(f"sqlite:///{Path(broker_env['DEEPCOVID_DATA_DIR']) / 'jobs.sqlite'}")
    worker = start(services, ["worker"], broker_env, tmp_path / "worker1.log")
    wait_for(lambda: store.counts().get("delivered", 0) >= 2, timeout=180, what="some progress")
    worker.kill()  # SIGKILL mid-queue: main process and its pool child
    before = store.counts()
    assert before.get("delivered", 0) < len(files), "the kill must happen mid-queue"
    start(services, ["worker"], broker_env, tmp_path / "worker2.log")
    wait_for(
        lambda: store.counts() == {"delivered": len(files)},
        timeout=300,
        what="every job analysed after the restart",
    )
    for job in store.list(limit=100):
        assert job.attempts >= 1
