"""``deepcovid demo`` end to end: service up, the sample chest X-rays sent, results shown, down.

Runs the command as a newcomer would, on the shared sample DICOM files (read only; the JPEG 2000
ones need our sender's compressed presentation contexts), with a coarser occlusion stride and
one thread so that it fits a shared CI machine.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.factories import DICOM_DIR
from tests.harness.net import REPO

RESULTS_WAIT_S = 240
"""The demo's own wait for results (``--timeout``), after at most 180 s for its service."""
PROCESS_TIMEOUT_S = 180 + RESULTS_WAIT_S + 80
"""When the demo process is killed: after both of its waits, with time to start and stop."""
TEST_TIMEOUT_S = PROCESS_TIMEOUT_S + 60
"""pytest's limit for this test: after the process's and below the suite's (``timeout`` in
pyproject.toml), so that each of the three limits can fire, the one that says most first."""


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_demo_shows_each_result_and_stops_the_service(
    tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    suite_limit = float(pytestconfig.getini("timeout"))
    assert suite_limit > TEST_TIMEOUT_S, "the suite's limit would fire before this test's"
    data = tmp_path / "data"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DEEPCOVID_")},
        "DEEPCOVID_OCCLUSION_STRIDE": "16",
        "DEEPCOVID_TORCH_THREADS": "1",
        "DEEPCOVID_DESTINATION": "PACS@192.0.2.1:104",  # must not reach the demo's service
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [
            *(sys.executable, "-m", "deepcovid.cli", "demo", "--dicom-dir", str(DICOM_DIR)),
            *("--data-dir", str(data), "--timeout", str(RESULTS_WAIT_S)),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "Traceback" not in out + done.stderr
    port = int(re.search(r"DEEPCOVID@127\.0\.0\.1:(\d+)", out).group(1))  # type: ignore[union-attr]
    for name in ("RG1_J2KI.dcm", "RG1_J2KR.dcm", "RG1_UNCR.dcm"):
        line = next(line for line in out.splitlines() if line.startswith(f"{name}: "))
        assert re.search(r"COVID-19 finding \w+ \(probability 0\.\d{3}, threshold", line), line
    paths = {m.group(1): Path(m.group(2)) for m in re.finditer(r"^ +(.+?) {2,}(/\S+)$", out, re.M)}
    kinds = {kind.strip() for kind in paths}
    assert {"structured report", "heatmap overlay", "as PNG"} <= kinds
    # None of the shared DICOMs states a usable spacing: by default (parametric_map =
    # with_spacing) none gets a map, which OHIF could not draw over it.
    assert "parametric map" not in kinds
    if shutil.which("dsr2html"):
        assert "as HTML" in kinds
    for path in paths.values():
        assert path.is_file() and path.is_relative_to(data), path
    for png in data.glob("demo/*-overlay.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with socket.socket() as s:  # the service is stopped: its port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
