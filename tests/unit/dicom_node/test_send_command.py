"""`deepcovid send`: file collection, argument errors and the exit status."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from deepcovid.cli import main
from deepcovid.commands import send as send_command
from dicom_client.scu import Sender, SendReport, SendResult
from tests.harness.factories import DICOM_DIR


def test_directories_are_searched_for_dicom_files(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    shutil.copy(DICOM_DIR / "nih_chestxray_DX_nhsx_test.dcm", nested / "x.dcm")
    shutil.copy(DICOM_DIR / "manifest_dicom.csv", tmp_path / "manifest.csv")
    explicit = tmp_path / "explicit.txt"
    explicit.write_text("named explicitly, so sent (and reported as failed)")
    found = list(send_command.collect_files([tmp_path, explicit]))
    assert found == [nested / "x.dcm", explicit]


@pytest.mark.parametrize(
    "argv",
    [["send", "x.dcm", "--to", "nonsense"], ["send", "x.dcm", "--to", "A@h:1", "--attempts", "0"]],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "deepcovid send:" in capsys.readouterr().err


def test_no_files_found_exits_2(tmp_path: Path) -> None:
    assert main(["send", str(tmp_path), "--to", "A@h:1"]) == 2


def fake_send(ok: list[bool]) -> Any:
    def send_files(self: Sender, paths: Any, on_result: Any = None) -> SendReport:
        results = []
        for path, good in zip(paths, ok, strict=True):
            result = SendResult(
                str(path), status=0 if good else 0xA900, error=None if good else "status 0xA900"
            )
            on_result(result)
            results.append(result)
        return SendReport(results)

    return send_files


@pytest.mark.parametrize(("ok", "status"), [([True, True], 0), ([True, False], 1)])
def test_exit_status_says_whether_everything_was_stored(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    ok: list[bool],
    status: int,
) -> None:
    monkeypatch.setattr(Sender, "send_files", fake_send(ok))
    files = [str(DICOM_DIR / "RG1_UNCR.dcm"), str(DICOM_DIR / "RG1_J2KI.dcm")]
    assert main(["send", *files, "--to", "PACS@h:104", "--no-progress"]) == status
    out = capsys.readouterr()
    assert f"sent {ok.count(True)} of 2 file(s) to PACS@h:104" in out.out
    assert ("FAILED" in out.err) == (not all(ok))
