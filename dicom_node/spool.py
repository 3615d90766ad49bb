"""Durable storage of received instances: the spool.

One file per SOP Instance, named ``<SOP Instance UID>.dcm`` from a *validated* UID (see
:mod:`common.uids`), created with mode 0600 in a folder of mode 0700. A write is durable
before it is visible: the bytes go to a hidden temporary file in the spool folder, the file is
fsynced, renamed over the final name, and the folder is fsynced so the rename survives a power
cut. Only then may the listener record the job and answer Success.

Because the job row is inserted *after* the file is in place, a write is a small transaction:
:meth:`Spool.write` returns a :class:`PendingWrite` that the caller either commits (the row is in)
or rolls back (the row could not be written; the file is removed, or the previous version of a
re-sent instance is put back). Writers of the same UID are serialised by :meth:`Spool.lock`.

Leftovers of a crash (``.*.tmp`` files, ``.*.bak`` previous versions) are never visible under a
final name; :meth:`Spool.clean_stale` removes them at start. The sender never got Success for
such an instance, so it sends it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from common.atomic import TEMP_SUFFIX, atomic_file, fsync_dir
from common.uids import validate_uid

log = logging.getLogger(__name__)

FILE_MODE = 0o600
"""Mode of spooled files: they hold patient data, readable by the service account only."""
DIR_MODE = 0o700
"""Mode of the spool folder when this module creates it."""
SUFFIX = ".dcm"
_BAK_SUFFIX = ".bak"
_LOCK_STRIPES = 64
_LOCKS = [threading.Lock() for _ in range(_LOCK_STRIPES)]
"""Shared by every Spool of the process: the C-STORE listener and the STOW-RS intake each
have one, and a UID sent both ways at once must still be written by one at a time."""


@dataclass(frozen=True)
class SpooledFile:
    """A file durably in the spool: where, its SHA-256 (hex) and size in bytes."""

    path: Path
    sha256: str
    size_bytes: int


class PendingWrite:
    """A spooled file whose job row is not yet recorded; commit or roll back exactly once."""

    def __init__(self, spool: Spool, file: SpooledFile, backup: Path | None) -> None:
        self.file = file
        self._spool = spool
        self._backup = backup
        self._done = False

    def commit(self) -> None:
        """Keep the new file; drop the previous version kept for a rollback."""
        self._finish()
        if self._backup is not None:
            with contextlib.suppress(FileNotFoundError):
                self._backup.unlink()

    def rollback(self) -> None:
        """Undo the write: restore the previous version, or remove the new file."""
        self._finish()
        if self._backup is not None:
            os.replace(self._backup, self.file.path)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.file.path.unlink()
        self._spool.sync_dir()

    def _finish(self) -> None:
        if self._done:
            raise RuntimeError("this spool write was already committed or rolled back")
        self._done = True


class Spool:
    """The spool folder: durable, UID-named writes and a free-space watermark.

    ``min_free_bytes`` is the watermark :meth:`has_room_for` checks (the listener answers
    0xA700 below it). ``disk_usage`` is injectable so tests can simulate a full disk.
    """

    def __init__(
        self,
        root: Path,
        *,
        min_free_bytes: int = 0,
        disk_usage: Callable[[Path], tuple[int, int, int]] = shutil.disk_usage,
    ) -> None:
        self.root = Path(root)
        self.min_free_bytes = min_free_bytes
        self._disk_usage = disk_usage

    # --- layout -----------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the spool folder (mode 0700), or tighten an existing one to 0700.

        It holds patient data; a folder others may read or enter is narrowed (and logged).
        """
        self.root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        mode = stat.S_IMODE(self.root.stat().st_mode)
        if mode & 0o077:
            log.warning("spool %s had mode %o; setting %o", self.root, mode, DIR_MODE)
            self.root.chmod(DIR_MODE)

    def path_for(self, sop_instance_uid: str) -> Path:
        """The final path of an instance; raises ``InvalidUIDError`` for an unsafe UID."""
        return self.root / (validate_uid(sop_instance_uid, "SOPInstanceUID") + SUFFIX)

    # --- free space ---------------------------------------------------------------------------
    def free_bytes(self) -> int:
        """Bytes free on the spool's file system (for the unprivileged user)."""
        return int(self._disk_usage(self.root)[2])

    def has_room_for(self, size_bytes: int) -> bool:
        """Whether ``size_bytes`` more still leave at least the watermark free."""
        return self.free_bytes() - size_bytes >= self.min_free_bytes

    # --- writing ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, sop_instance_uid: str) -> Iterator[None]:
        """Serialise writers of one UID (write + job row) within this process."""
        with _LOCKS[hash(sop_instance_uid) % _LOCK_STRIPES]:
            yield

    def write(self, sop_instance_uid: str, chunks: Iterable[bytes]) -> PendingWrite:
        """Write ``chunks`` durably as the instance's file and return the pending write.

        On any error nothing new is left behind (the temporary file is removed, a previous
        version is untouched) and the ``OSError`` propagates. The SHA-256 is computed on
        another thread while this one writes and syncs: ``hashlib``, the write and
        ``fdatasync`` all release the GIL on large buffers, so the hash costs no wall time
        (about 10 ms for a 7 MB CR on the development machine).
        """
        final = self.path_for(sop_instance_uid)
        data = list(chunks)  # hashed and written from two threads
        hashed = _HASHER.submit(_sha256, data)
        backup: Path | None = None
        try:
            with atomic_file(final, mode=FILE_MODE, data_only=True) as fh:
                for chunk in data:
                    fh.write(chunk)
                if final.exists():  # keep the previous version for a rollback
                    backup = final.with_name(f".{final.name}.{secrets.token_hex(6)}{_BAK_SUFFIX}")
                    os.link(final, backup)
        except BaseException:
            if backup is not None:
                with contextlib.suppress(OSError):
                    backup.unlink()
            raise
        size = sum(len(chunk) for chunk in data)
        return PendingWrite(self, SpooledFile(final, hashed.result(), size), backup)

    def sync_dir(self) -> None:
        """fsync the spool folder so renames and unlinks in it are durable."""
        fsync_dir(self.root)

    def clean_stale(self) -> int:
        """Remove temporary files and kept previous versions left by a crash; return how many."""
        removed = 0
        for pattern in (f".*{TEMP_SUFFIX}", f".*{_BAK_SUFFIX}"):
            for path in self.root.glob(pattern):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        if removed:
            log.info("spool: removed %d leftover temporary file(s) from %s", removed, self.root)
        return removed


def part10_header(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """Preamble, ``DICM`` and a deterministic file meta group for a spooled instance.

    Deterministic (no time, no calling AE) so that the same encoded dataset always gives a
    byte-identical file and the same SHA-256; the calling AE is recorded on the job instead.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
    buffer = BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]  # pydicom stubs want a DicomFileLike
    return buffer.getvalue()


def _sha256(chunks: Sequence[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


_HASHER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="deepcovid-spool-hash")
