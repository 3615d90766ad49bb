"""Result objects on disk: ``results_dir/<StudyInstanceUID>/<SOPInstanceUID>.dcm``.

Written durably (:mod:`common.atomic`: temp file, fsync, rename) with mode 0600 before they
enter the outbox, so the outbox never points at a half-written file; a write that fails (a full
disk) removes its temp file, so nothing half-written is left either. The folder is the delivery
when no destination is configured.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from common.atomic import atomic_file
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
    with atomic_file(path, mode=0o600) as fh:  # fsync reports a full disk (delayed allocation)
        ds.save_as(fh, enforce_file_format=True)
    return path
