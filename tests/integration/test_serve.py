"""``deepcovid serve`` (what the README's first command runs): listener and worker together,
stopped together."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from store import JobStore
from tests.conftest import ServiceProcess, wait_for
from tests.factories import DICOM_DIR

pytestmark = pytest.mark.integration


def our_processes(data_dir: str) -> list[int]:
    """Pids of processes started with this test's data folder in their environment."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"DEEPCOVID_DATA_DIR={data_dir}".encode() in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def test_serve_analyses_and_stops_with_its_worker(
    settings_env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    serve = ServiceProcess(["serve"], settings_env, tmp_path / "serve.log").start()
    services.append(serve)
    port = settings_env["DEEPCOVID_PORT"]
    echo = ["echoscu", "-aec", "DEEPCOVID", "127.0.0.1", port]
    wait_for(lambda: subprocess.run(echo, capture_output=True).returncode == 0, timeout=90)
    assert "listening as DEEPCOVID" in serve.output()
    store_cmd = ["storescu", "-aec", "DEEPCOVID", "127.0.0.1", port]
    subprocess.run([*store_cmd, str(DICOM_DIR / "nih_chestxray_DX_nhsx_test.dcm")], check=True)
    store = JobStore(f"sqlite:///{Path(settings_env['DEEPCOVID_DATA_DIR']) / 'jobs.sqlite'}")
    wait_for(lambda: store.counts() == {"delivered": 1}, timeout=120, what="job delivered")
    data_dir = settings_env["DEEPCOVID_DATA_DIR"]
    assert len(our_processes(data_dir)) >= 3, "node, worker and its pool child"
    assert serve.proc is not None
    serve.proc.terminate()  # SIGTERM to serve only: it must stop its worker itself
    serve.proc.wait(timeout=60)
    wait_for(lambda: not our_processes(data_dir), timeout=60, what="every process stopped")
