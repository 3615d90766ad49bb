"""Which files to send: DICOM Part 10 files named, or found under folders.

Shared by ``deepcovid send`` and ``deepcovid demo``. Folders are searched recursively for files
with the ``DICM`` prefix (so a folder's CSV or README is left out); files named explicitly are
always sent, so that a wrong one is reported rather than skipped in silence.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

DICM_OFFSET = 128


def collect_files(paths: Sequence[Path]) -> Iterator[Path]:
    """Files named explicitly, and DICOM files found under the directories, sorted per dir."""
    for path in paths:
        if path.is_dir():
            yield from (p for p in sorted(path.rglob("*")) if p.is_file() and is_dicom_file(p))
        else:
            yield path


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` starts like a DICOM Part 10 file (``DICM`` after the preamble)."""
    try:
        with path.open("rb") as handle:
            handle.seek(DICM_OFFSET)
            return handle.read(4) == b"DICM"
    except OSError:
        return False
