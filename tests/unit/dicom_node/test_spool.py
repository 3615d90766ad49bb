"""The spool: durable, UID-named, 0600 writes that can be rolled back."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.uids import InvalidUIDError
from dicom_node.spool import PendingWrite, Spool

UID = "1.2.826.0.1.3680043.8.498.1"


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    s = Spool(tmp_path / "spool")
    s.ensure()
    return s


def listing(spool: Spool) -> list[str]:
    return sorted(p.name for p in spool.root.iterdir())


def test_ensure_creates_a_private_folder(tmp_path: Path) -> None:
    s = Spool(tmp_path / "a" / "spool")
    s.ensure()
    assert stat.S_IMODE(s.root.stat().st_mode) == 0o700


def test_write_names_the_file_from_the_uid_with_mode_0600(spool: Spool) -> None:
    pending = spool.write(UID, [b"abc", b"def"])
    pending.commit()
    path = spool.root / f"{UID}.dcm"
    assert pending.file.path == path
    assert path.read_bytes() == b"abcdef"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pending.file.sha256 == hashlib.sha256(b"abcdef").hexdigest()
    assert pending.file.size_bytes == 6
    assert listing(spool) == [f"{UID}.dcm"]


def test_write_syncs_the_file_before_renaming_and_then_the_folder(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_replace = os.replace

    def fake_sync(fd: int) -> None:
        calls.append("dir-sync" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file-sync")

    def fake_replace(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fdatasync", fake_sync, raising=False)
    monkeypatch.setattr(os, "fsync", fake_sync)
    monkeypatch.setattr(os, "replace", fake_replace)
    spool.write(UID, [b"x"]).commit()
    assert calls == ["file-sync", "rename", "dir-sync"]


def test_unsafe_uid_writes_nothing(spool: Spool) -> None:
    with pytest.raises(InvalidUIDError):
        spool.write("1.2/../../x", [b"x"])
    with pytest.raises(InvalidUIDError):
        spool.path_for("..")
    assert listing(spool) == []


def test_failure_while_writing_leaves_no_temporary_file(spool: Spool) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        spool.write(UID, chunks())
    assert listing(spool) == []


def test_rollback_removes_a_new_file(spool: Spool) -> None:
    spool.write(UID, [b"new"]).rollback()
    assert listing(spool) == []


def test_rollback_restores_the_previous_version(spool: Spool) -> None:
    spool.write(UID, [b"first"]).commit()
    pending = spool.write(UID, [b"second"])
    assert (spool.root / f"{UID}.dcm").read_bytes() == b"second"
    pending.rollback()
    assert (spool.root / f"{UID}.dcm").read_bytes() == b"first"
    assert listing(spool) == [f"{UID}.dcm"]


def test_commit_replaces_and_drops_the_previous_version(spool: Spool) -> None:
    spool.write(UID, [b"first"]).commit()
    spool.write(UID, [b"second"]).commit()
    assert (spool.root / f"{UID}.dcm").read_bytes() == b"second"
    assert listing(spool) == [f"{UID}.dcm"]


def test_a_pending_write_ends_once(spool: Spool) -> None:
    pending: PendingWrite = spool.write(UID, [b"x"])
    pending.commit()
    with pytest.raises(RuntimeError):
        pending.rollback()


def test_clean_stale_removes_crash_leftovers_only(spool: Spool) -> None:
    spool.write(UID, [b"x"]).commit()
    (spool.root / f".{UID}.abc.tmp").write_bytes(b"t")
    (spool.root / f".{UID}.abc.bak").write_bytes(b"b")
    assert spool.clean_stale() == 2
    assert listing(spool) == [f"{UID}.dcm"]


def test_unwritable_folder_raises_oserror(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    with pytest.raises(OSError):
        Spool(blocker).write(UID, [b"x"])


def test_free_space_watermark(tmp_path: Path) -> None:
    free = {"bytes": 10_000}
    s = Spool(tmp_path, min_free_bytes=1_000, disk_usage=lambda _p: (0, 0, free["bytes"]))
    assert s.free_bytes() == 10_000
    assert s.has_room_for(9_000)
    assert not s.has_room_for(9_001)
    free["bytes"] = 500
    assert not s.has_room_for(0)


def test_ensure_tightens_an_existing_open_folder(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    Spool(folder).ensure()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
