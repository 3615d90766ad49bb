"""``common.atomic``: the new content or the old, never half, and nothing left behind.

Failures are raised where a real file system reports them (``fsync`` on a full disk with
delayed allocation, the writer itself, the rename); the call order is observed on the real
``os`` functions, which still run.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from common.atomic import TEMP_SUFFIX, atomic_file, atomic_path, atomic_write, fsync_dir


def _no_space(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_writes_the_content_with_the_private_mode(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    atomic_write(target, b"payload")
    assert target.read_bytes() == b"payload"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "card.json", b"{}", mode=0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "card.json").stat().st_mode) == 0o644


def test_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old content that is longer")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"


def test_failed_sync_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "a.bin"
    atomic_write(target, b"old")
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(OSError) as info:
        atomic_write(target, b"new")
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_writer_error_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    atomic_write(target, b"old")
    with pytest.raises(RuntimeError, match="serialiser"), atomic_file(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("serialiser failed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_failed_rename_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(src: object, dst: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        atomic_write(tmp_path / "a.bin", b"new")
    assert list(tmp_path.iterdir()) == []


def test_syncs_the_file_then_renames_then_syncs_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("dir-sync" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file-sync")
        real_fsync(fd)

    def replace(src: Path, dst: Path) -> None:
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write(tmp_path / "a.bin", b"x")
    assert calls == ["file-sync", "rename", "dir-sync"]
    calls.clear()
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"y")
    assert calls == ["file-sync", "rename", "dir-sync"]
    assert (tmp_path / "b.bin").read_bytes() == b"y"


def test_temporary_file_is_hidden_beside_the_target_with_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "dump.bin"
    with atomic_path(target, mode=0o600) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".dump.bin.") and tmp.name.endswith(TEMP_SUFFIX)
        assert stat.S_IMODE(tmp.stat().st_mode) == 0o600
        assert not target.exists(), "nothing visible under the final name before the end"
        tmp.write_bytes(b"dumped")
    assert target.read_bytes() == b"dumped"


def test_atomic_path_failure_removes_what_the_tool_wrote(tmp_path: Path) -> None:
    target = tmp_path / "dump.bin"
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial dump")
        raise ValueError("tool failed")
    assert list(tmp_path.iterdir()) == []


def test_a_symlink_at_the_temporary_name_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    planted = tmp_path / ".a.bin.fixed.tmp"
    planted.symlink_to(elsewhere)
    monkeypatch.setattr("common.atomic.temp_path_for", lambda path: planted)
    with pytest.raises(FileExistsError):
        atomic_write(tmp_path / "a.bin", b"secret")
    assert not elsewhere.exists()


def test_fsync_dir_accepts_a_folder_only(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "f")
