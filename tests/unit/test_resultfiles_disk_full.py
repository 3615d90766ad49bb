"""A result file that cannot be written leaves nothing behind and fails the job with a reason.

The real full file system (a tmpfs mounted over the results folder) is in
``tests/integration/test_faults.py``; here the failure is raised where a file system with
delayed allocation reports it, in ``fsync``, and where a quota or size limit would.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from common.settings import Settings
from worker import pipeline, resultfiles
from worker.pipeline import JobFailed


def _dataset() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.6"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _no_space(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_failed_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(OSError) as info:
        resultfiles.write_result(tmp_path, _dataset())
    assert info.value.errno == errno.ENOSPC
    assert list((tmp_path / "1.2.3.4").iterdir()) == [], "no temp file, no result file"


def test_failed_write_keeps_the_previous_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = resultfiles.write_result(tmp_path, _dataset())
    before = path.read_bytes()
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(OSError):
        resultfiles.write_result(tmp_path, _dataset())
    assert list(path.parent.iterdir()) == [path]
    assert path.read_bytes() == before


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_full_results_disk_fails_the_job_with_a_reason(
    code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(results_dir: Path, ds: Dataset) -> Path:
        raise OSError(code, os.strerror(code), str(results_dir / "x"))

    monkeypatch.setattr(resultfiles, "write_result", full)
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(JobFailed) as info:
        pipeline._write("sc", _dataset(), settings)
    reason = str(info.value)
    assert reason.startswith("results folder full: the SC could not be written")
    assert errno.errorcode[code] in reason and "re-analyse" in reason
    assert str(tmp_path) not in reason, "the reason names no path"


def test_other_write_errors_are_not_called_disk_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(results_dir: Path, ds: Dataset) -> Path:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(resultfiles, "write_result", denied)
    with pytest.raises(PermissionError):
        pipeline._write("sc", _dataset(), Settings(data_dir=tmp_path))
