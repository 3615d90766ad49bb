"""Result objects on disk: ``results_dir/<StudyInstanceUID>/<SOPInstanceUID>.dcm``.

Written durably (:mod:`common.atomic`: temp file, fsync, rename) with mode 0600 before they
enter the outbox, so the outbox never points at a half-written file; a write that fails (a full
disk) removes its temp file, so nothing half-written is left either. The folder is the delivery
when no destination is configured.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset

from common.atomic import atomic_write
from common.uids import uid_problem


def result_path(results_dir: Path, ds: Dataset) -> Path:
    """Where ``ds`` is kept; refuses UIDs that are not plain DICOM UIDs."""
    study, sop = str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
    for uid in (study, sop):
        problem = uid_problem(uid)
        if problem:
            raise ValueError(f"cannot name a result file after UID {uid!r}: {problem}")
    return results_dir / study / f"{sop}.dcm"


def write_result(results_dir: Path, ds: Dataset) -> Path:
    """Write ``ds`` durably and return its path (an existing identical object is replaced)."""
    path = result_path(results_dir, ds)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Encoded in memory first: pydicom re-raises a write error inside an element as a new
    # OSError without its errno, and the caller tells a full disk by errno (ENOSPC). The write
    # itself, or its fsync (delayed allocation), then reports a full disk as it is.
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    atomic_write(path, buffer.getbuffer(), mode=0o600)
    return path
