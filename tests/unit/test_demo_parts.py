"""The pieces of ``deepcovid demo`` that need no service: what its service sees of the
environment, which files it sends, and what it prints per instance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.errors import UsageError
from deepcovid.demo import Outcome, describe, overlay_png, sample_files, service_environment
from tests.harness.factories import DICOM_DIR, wrap_pixels


def test_the_service_never_sees_a_real_destination_or_data_folder(tmp_path: Path) -> None:
    base = {
        "PATH": "/usr/bin",
        "DEEPCOVID_CONFIG": "/etc/deepcovid.toml",
        "DEEPCOVID_DESTINATION": "PACS@pacs.hospital:104",
        "DEEPCOVID_DATABASE_URL": "postgresql+psycopg://app@db/jobs",
        "DEEPCOVID_PORT": "11112",
        "DEEPCOVID_OCCLUSION_STRIDE": "16",
        "DEEPCOVID_DEVICE": "cpu",
    }
    env = service_environment(base, tmp_path, 40001, 40002)
    assert "DEEPCOVID_CONFIG" not in env and "DEEPCOVID_DESTINATION" not in env
    assert env["DEEPCOVID_DATABASE_URL"] == f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    assert (env["DEEPCOVID_PORT"], env["DEEPCOVID_BIND_ADDRESS"]) == ("40001", "127.0.0.1")
    assert env["DEEPCOVID_MONITORING_PORT"] == "40002"
    assert env["DEEPCOVID_OCCLUSION_STRIDE"] == "16" and env["DEEPCOVID_DEVICE"] == "cpu"
    assert env["PATH"] == "/usr/bin"


def test_it_sends_the_dicom_files_of_a_folder(tmp_path: Path) -> None:
    files = sample_files(DICOM_DIR)
    assert {p.name for p in files} >= {"RG1_J2KI.dcm", "RG1_UNCR.dcm"}
    assert all(p.suffix == ".dcm" for p in files)  # not the folder's manifest CSV
    with pytest.raises(UsageError, match="no DICOM files"):
        sample_files(tmp_path)
    with pytest.raises(UsageError, match="not a folder"):
        sample_files(tmp_path / "nowhere")


def test_each_instance_gets_its_finding_and_its_files(tmp_path: Path) -> None:
    analysed = Outcome(
        file=Path("RG1_UNCR.dcm"),
        sent=True,
        state="delivered",
        finding="present",
        probability=0.3281,
        threshold=0.2992,
        model_version="squeezenet1_1-c",
        results={"sr": tmp_path / "sr.dcm", "sc": tmp_path / "sc.dcm", "pm": tmp_path / "pm.dcm"},
        renderings={"sr": tmp_path / "sr.html", "sc": tmp_path / "sc.png"},
    )
    lines = describe(analysed)
    assert lines[0] == (
        "RG1_UNCR.dcm: COVID-19 finding present (probability 0.328, threshold 0.299; "
        "model squeezenet1_1-c)"
    )
    text = "\n".join(lines)
    for name in ("sr.dcm", "sr.html", "sc.dcm", "sc.png", "pm.dcm"):
        assert str(tmp_path / name) in text
    rejected = Outcome(file=Path("ct.dcm"), sent=True, state="rejected", reason="not a chest")
    assert describe(rejected) == ["ct.dcm: rejected: not a chest"]
    refused = Outcome(file=Path("x.dcm"), error="status 0xA900")
    assert describe(refused) == ["x.dcm: not sent: status 0xA900"]


def test_the_overlay_becomes_a_png(tmp_path: Path) -> None:
    ds = wrap_pixels(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    ds.save_as(tmp_path / "sc.dcm", enforce_file_format=True)
    assert overlay_png(tmp_path / "sc.dcm", tmp_path / "sc.png")
    assert (tmp_path / "sc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "broken.dcm").write_bytes(b"not dicom")
    assert not overlay_png(tmp_path / "broken.dcm", tmp_path / "broken.png")
