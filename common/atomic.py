"""Durable, atomic file writes: a reader sees the old file or the new one, never half of one.

Every file this node must not lose or show half-written (a received instance in the spool, a
result object before it enters the outbox, a model version's weights and card, a training
checkpoint, an exported ONNX graph, a job-store backup) is written the same way:

1. **A temporary file in the same folder** (``.<name>.<random>.tmp``, created exclusively with
   its final mode). Same folder, because :func:`os.replace` is atomic only within one file
   system; hidden and ``.tmp``-suffixed, so a crash leftover is never taken for a real file
   and can be found and removed (the spool's ``clean_stale``); random, so two writers of the
   same name never write into one temporary file; created with the final mode, so patient
   data is never readable by others, not even for the moment before a ``chmod``.
2. **Write, flush, fsync.** ``flush`` moves Python's buffer to the kernel; ``fsync`` moves the
   kernel's pages to the disk. Without it a power cut after the rename can leave the new name
   pointing at an empty or partial file (delayed allocation). It is also where a full disk often
   first shows (``ENOSPC`` from the sync, not from ``write``), so the error reaches the caller
   while the old file is still intact.
3. **Rename over the final name** (:func:`os.replace`): atomic, so readers see either version.
4. **fsync the folder**, so the rename itself survives a power cut; until then the folder entry
   may still name the old file after a crash.

Any failure before the rename removes the temporary file and re-raises: the previous file is
untouched and nothing half-written is left. Three shapes of the same steps:
:func:`atomic_write` (bytes), :func:`atomic_file` (a file object to stream into, e.g.
``torch.save`` or ``Dataset.save_as``) and :func:`atomic_path` (a path, for tools that write by
name: ``pg_dump --file``, SQLite's backup API, ``torch.onnx.export``).

The caller creates the folder (its mode is the caller's policy: the spool and results folders
are 0700).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PRIVATE_MODE = 0o600
"""Default mode of a written file: readable by the service account only (patient data)."""
TEMP_SUFFIX = ".tmp"
"""Suffix of temporary files; a file ``.*.tmp`` in a written folder is a crash leftover."""

_CREATE_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL  # never open a file someone else made, nor a leftover of our own
    | getattr(os, "O_CLOEXEC", 0)  # not inherited by subprocesses started meanwhile
    | getattr(os, "O_NOFOLLOW", 0)  # a planted symlink is refused, not written through
)


def temp_path_for(path: Path) -> Path:
    """A fresh hidden temporary name beside ``path`` (same folder, hence same file system)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


def fsync_dir(folder: Path) -> None:
    """fsync ``folder`` so that renames and removals of its entries survive a power cut."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync(fd: int, data_only: bool) -> None:
    # Looked up at call time (not bound at import) so that a test can make the sync fail.
    if data_only and hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:
        os.fsync(fd)


def _create(path: Path, mode: int) -> tuple[Path, int]:
    """Create the temporary file for ``path`` with exactly ``mode``; (its path, an open fd)."""
    tmp = temp_path_for(path)
    fd = os.open(tmp, _CREATE_FLAGS, mode)
    try:
        os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask (e.g. 0644 for model files)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return tmp, fd


def _publish(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` (already synced) over ``path``, then make the rename durable."""
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_file(
    path: Path, *, mode: int = PRIVATE_MODE, data_only: bool = False
) -> Iterator[BinaryIO]:
    """Yield a binary file to write ``path``'s new content into; publish it when the block ends.

    On leaving the block normally the file is flushed, synced, renamed over ``path`` and the
    folder synced. If the block (or the sync or rename) raises, the temporary file is removed
    and the exception propagates; ``path`` keeps its previous content.

    ``data_only`` syncs with ``fdatasync`` where the platform has it: for a new file it still
    writes the size (what is needed to read the data back) but skips the timestamps, one
    journal commit fewer on the spool's hot path.
    """
    tmp, fd = _create(path, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            _sync(fh.fileno(), data_only)
        _publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: Path, *, mode: int = PRIVATE_MODE) -> Iterator[Path]:
    """Yield the path of an empty temporary file (``mode``) for a tool that writes by name.

    The tool must write into the file it is given (truncating keeps the file's mode); when the
    block ends the file is synced, renamed over ``path`` and the folder synced. On an exception
    the temporary file is removed and ``path`` is untouched.
    """
    tmp, fd = _create(path, mode)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            os.fsync(fd)  # what the tool wrote through its own descriptor, now on disk
        finally:
            os.close(fd)
        _publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(
    path: Path, data: bytes | bytearray | memoryview, *, mode: int = PRIVATE_MODE
) -> None:
    """Replace ``path``'s content with ``data`` durably and atomically (see the module)."""
    with atomic_file(path, mode=mode) as fh:
        fh.write(data)
