"""Durable storage of received instances: the spool.

One file per SOP Instance, named ``<SOP Instance UID>.dcm`` from a *validated* UID (see
:mod:`dicom_node.uids`), created with mode 0600 in a folder of mode 0700. A write is durable
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
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dicom_node.uids import validate_uid

log = logging.getLogger(__name__)

FILE_MODE = 0o600
"""Mode of spooled files: they hold patient data, readable by the service account only."""
DIR_MODE = 0o700
"""Mode of the spool folder when this module creates it."""
SUFFIX = ".dcm"
_TMP_SUFFIX = ".tmp"
_BAK_SUFFIX = ".bak"
_LOCK_STRIPES = 64


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
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    # --- layout -----------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the spool folder (mode 0700) if it does not exist."""
        self.root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)

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
        with self._locks[hash(sop_instance_uid) % _LOCK_STRIPES]:
            yield

    def write(self, sop_instance_uid: str, chunks: Iterable[bytes]) -> PendingWrite:
        """Write ``chunks`` durably as the instance's file and return the pending write.

        On any error nothing new is left behind (the temporary file is removed, a previous
        version is untouched) and the ``OSError`` propagates.
        """
        final = self.path_for(sop_instance_uid)
        token = secrets.token_hex(6)
        tmp = self.root / f".{final.stem}.{token}{_TMP_SUFFIX}"
        backup: Path | None = None
        try:
            digest, size = _write_synced(tmp, chunks)
            if final.exists():
                backup = self.root / f".{final.stem}.{token}{_BAK_SUFFIX}"
                os.link(final, backup)
            os.replace(tmp, final)
            self.sync_dir()
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            if backup is not None:
                with contextlib.suppress(OSError):
                    backup.unlink()
            raise
        return PendingWrite(self, SpooledFile(final, digest, size), backup)

    def sync_dir(self) -> None:
        """fsync the spool folder so renames and unlinks in it are durable."""
        fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def clean_stale(self) -> int:
        """Remove temporary files and kept previous versions left by a crash; return how many."""
        removed = 0
        for pattern in (f".*{_TMP_SUFFIX}", f".*{_BAK_SUFFIX}"):
            for path in self.root.glob(pattern):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        if removed:
            log.info("spool: removed %d leftover temporary file(s) from %s", removed, self.root)
        return removed


def _write_synced(path: Path, chunks: Iterable[bytes]) -> tuple[str, int]:
    """Create ``path`` (0600, must not exist), write ``chunks``, fdatasync; (sha256, size)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, FILE_MODE)
    digest = hashlib.sha256()
    size = 0
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            digest.update(view)
            size += len(view)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        sync = getattr(os, "fdatasync", os.fsync)
        sync(fd)
    finally:
        os.close(fd)
    return digest.hexdigest(), size
