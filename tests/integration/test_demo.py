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

from tests.harness.factories import DICOM_DIR
from tests.harness.net import REPO


def test_demo_shows_each_result_and_stops_the_service(tmp_path: Path) -> None:
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
            *("--data-dir", str(data), "--timeout", "600"),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
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
