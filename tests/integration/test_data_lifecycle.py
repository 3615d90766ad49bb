"""Data lifecycle on SQLite and PostgreSQL: retention purges only what was delivered, and the
job store survives a backup and restore (``deepcovid db purge | backup | restore``).

PostgreSQL runs at ``DEEPCOVID_TEST_PG_URL`` (each test makes and drops its own database);
backup and restore there use the ``pg_dump``/``pg_restore``/``psql`` client tools.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import update

from common.pidlock import SERVE_LOCK, PidLock
from common.settings import get_settings
from deepcovid.cli import main
from store import JobState, JobStore
from store.backup import BackupError, backup, restore
from store.lifecycle import PURGED, purge_expired
from store.migrate import current, upgrade
from store.outbox import NewResult, Outbox
from store.schema import DeliveryState, Job, ResultObject

OLD = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
SR = "1.2.840.10008.5.1.4.1.1.88.22"


class Site:
    """A job store with spool and results folders, and helpers to make jobs in any state."""

    def __init__(self, url: str, root: Path) -> None:
        upgrade(url)
        self.store = JobStore(url)
        self.outbox = Outbox(self.store)
        self.spool = root / "spool"
        self.results = root / "results"
        self.spool.mkdir(parents=True)
        self.results.mkdir(parents=True)
        self.n = 0

    def job(
        self,
        state: JobState,
        *,
        results: DeliveryState | None = None,
        old: bool = True,
        spool_dir: Path | None = None,
    ) -> int:
        """A job in ``state`` with its spooled file (and three result files if ``results``)."""
        self.n += 1
        uid = f"1.2.826.0.1.{self.n}"
        spooled = (spool_dir or self.spool) / f"{uid}.dcm"
        spooled.write_bytes(b"x" * 1000)
        job_id = self.store.record_received(
            sop_instance_uid=uid,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
            study_instance_uid=f"{uid}.0",
            series_instance_uid=f"{uid}.1",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            calling_ae="MODALITY",
            spool_path=str(spooled),
            sha256="0" * 64,
            size_bytes=1000,
        ).job_id
        paths = [spooled]
        if results is not None:
            self.store.set_state(job_id, JobState.RESULTS_BUILT)
            new = []
            for kind in ("sr", "sc", "pm"):
                path = self.results / f"{uid}.0" / f"{uid}.{kind}.dcm"
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(b"y" * 500)
                paths.append(path)
                sop = f"{uid}.9.{len(new)}"
                new.append(NewResult(kind, sop, SR, f"{uid}.9", f"{uid}.0", str(path)))
            self.outbox.add(job_id, new, model_version="v1", destination="PACS@127.0.0.1:104")
            with self.store.session() as s:
                s.execute(
                    update(ResultObject)
                    .where(ResultObject.job_id == job_id)
                    .values(delivery_state=str(results))
                )
        self.store.set_state(job_id, state)
        if old:
            self.age(job_id, paths)
        return job_id

    def age(self, job_id: int, paths: list[Path]) -> None:
        with self.store.session() as s:
            s.execute(update(Job).where(Job.id == job_id).values(updated_at=OLD))
        for path in paths:
            os.utime(path, (OLD.timestamp(), OLD.timestamp()))

    def files(self) -> set[Path]:
        return {p for root in (self.spool, self.results) for p in root.rglob("*") if p.is_file()}

    def purge(self, dry_run: bool = False):  # type: ignore[no-untyped-def]
        return purge_expired(
            self.store,
            retention_days=30,
            spool_dir=self.spool,
            results_dir=self.results,
            dry_run=dry_run,
        )


@pytest.fixture
def site(db_url: str, tmp_path: Path) -> Site:
    return Site(db_url, tmp_path)


def test_retention_purges_only_delivered_files_and_keeps_rows(site: Site, tmp_path: Path) -> None:
    delivered = site.job(JobState.DELIVERED, results=DeliveryState.CONFIRMED)
    kept_folder = site.job(JobState.DELIVERED, results=DeliveryState.KEPT)
    rejected = site.job(JobState.REJECTED)
    recent = site.job(JobState.DELIVERED, results=DeliveryState.SENT, old=False)
    failed = site.job(JobState.FAILED, results=DeliveryState.FAILED)
    unfinished = site.job(JobState.RESULTS_BUILT, results=DeliveryState.PENDING)
    waiting = site.job(JobState.RECEIVED)
    # Rejected, but its rejection SR has not reached the PACS yet.
    rejection_pending = site.job(JobState.REJECTED, results=DeliveryState.PENDING)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = site.job(JobState.DELIVERED, spool_dir=elsewhere)
    before = site.files()

    dry = site.purge(dry_run=True)
    assert (dry.jobs, dry.files, dry.bytes, dry.kept) == (4, 9, 3 * 1000 + 6 * 500, 1)
    assert site.files() == before, "a dry run removes nothing"
    assert not any(PURGED in (e.message or "") for e in site.store.events(delivered))

    report = site.purge()
    assert (report.jobs, report.files, report.kept) == (4, 9, 1)
    gone = before - site.files()
    assert len(gone) == 9
    for job_id in (recent, failed, unfinished, waiting, rejection_pending):
        job = site.store.get(job_id)
        assert job is not None and Path(job.spool_path).exists(), job_id
    assert (elsewhere / "1.2.826.0.1.9.dcm").exists(), "nothing outside the spool/results"
    assert not any(p.is_dir() for p in site.results.iterdir() if not any(p.iterdir()))
    for job_id, state in (
        (delivered, "delivered"),
        (kept_folder, "delivered"),
        (rejected, "rejected"),
        (outside, "delivered"),
    ):
        job = site.store.get(job_id)
        assert job is not None and job.state == state, "the row stays, state unchanged"
        last = site.store.events(job_id)[-1]
        assert last.message is not None and last.message.startswith(PURGED)
    assert "3 result object(s)" in (site.store.events(delivered)[-1].message or "")
    assert "1 kept" in (site.store.events(outside)[-1].message or "")

    assert site.purge().jobs == 0, "a purged job is not purged again"


def test_an_instance_received_again_is_not_purged_until_it_is_old_again(site: Site) -> None:
    job_id = site.job(JobState.DELIVERED, results=DeliveryState.CONFIRMED)
    job = site.store.get(job_id)
    assert job is not None
    # The same instance arrives again (identical content): the spool file is written afresh.
    Path(job.spool_path).write_bytes(b"x" * 1000)
    site.store.record_received(
        sop_instance_uid=job.sop_instance_uid,
        sop_class_uid=job.sop_class_uid,
        study_instance_uid=job.study_instance_uid,
        series_instance_uid=job.series_instance_uid,
        transfer_syntax_uid=job.transfer_syntax_uid,
        calling_ae="MODALITY",
        spool_path=job.spool_path,
        sha256=job.sha256,
        size_bytes=1000,
    )
    assert site.purge().jobs == 0
    assert Path(job.spool_path).exists()


def test_a_file_written_after_the_cutoff_is_kept(site: Site) -> None:
    """The row may be old while its file is new (a receipt racing with the purge)."""
    job_id = site.job(JobState.DELIVERED, results=DeliveryState.CONFIRMED)
    job = site.store.get(job_id)
    assert job is not None
    os.utime(job.spool_path)  # now
    report = site.purge()
    assert (report.jobs, report.files, report.kept) == (1, 3, 1)
    assert Path(job.spool_path).exists()


def test_backup_and_restore_round_trip(site: Site, db_url: str, tmp_path: Path) -> None:
    first = site.job(JobState.DELIVERED, results=DeliveryState.CONFIRMED)
    revision = current(db_url)
    file = tmp_path / "backups" / "jobs.backup"
    assert backup(db_url, file) == file
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert not [p for p in file.parent.iterdir() if p != file], "no temporary file left"

    later = site.job(JobState.RECEIVED)
    site.store.set_state(first, JobState.FAILED, "changed after the backup")
    restore(db_url, file)
    assert site.store.get(later) is None
    restored = site.store.get(first)
    assert restored is not None and restored.state == "delivered"
    assert [r.kind for r in site.outbox.for_job(first)] == ["sr", "sc", "pm"]
    assert current(db_url) == revision
    # The restored store works: new jobs get new ids.
    assert site.job(JobState.RECEIVED) > first


def test_restore_refuses_a_backup_of_the_other_kind(
    site: Site, db_url: str, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.backup"
    if db_url.startswith("sqlite"):
        wrong.write_bytes(b"PGDMP\x01\x0f\x00" + b"\x00" * 64)
        match = "PostgreSQL dump"
    else:
        wrong.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)
        match = "SQLite backup"
    job_id = site.job(JobState.RECEIVED)
    with pytest.raises(BackupError, match=match):
        restore(db_url, wrong)
    assert site.store.get(job_id) is not None, "nothing changed"


def test_db_commands(
    site: Site, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    for key, value in {
        "DATA_DIR": str(data),
        "DATABASE_URL": db_url,
        "SPOOL_DIR": str(site.spool),
        "RESULTS_DIR": str(site.results),
        "RETENTION_DAYS": "30",
    }.items():
        monkeypatch.setenv(f"DEEPCOVID_{key}", value)
    get_settings.cache_clear()
    try:
        delivered = site.job(JobState.DELIVERED, results=DeliveryState.CONFIRMED)
        assert main(["db", "purge", "--dry-run"]) == 0
        assert "would remove 4 file(s)" in capsys.readouterr().out
        assert main(["db", "purge"]) == 0
        assert "removed 4 file(s)" in capsys.readouterr().out
        assert site.store.events(delivered)[-1].message.startswith(PURGED)  # type: ignore[union-attr]

        file = tmp_path / "store.backup"
        assert main(["db", "backup", str(file)]) == 0
        site.job(JobState.RECEIVED)
        data.mkdir(exist_ok=True)
        lock = PidLock(data / SERVE_LOCK)
        assert lock.acquire()  # as a running `deepcovid serve` holds it
        assert main(["db", "restore", str(file)]) == 1
        assert "stop it first" in capsys.readouterr().err
        lock.release()
        assert main(["db", "restore", str(file)]) == 0
        assert sum(site.store.counts().values()) == 1
        assert main(["db", "restore", str(tmp_path / "missing")]) == 1
    finally:
        get_settings.cache_clear()
