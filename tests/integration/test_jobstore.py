"""The job store and its migrations on SQLite and on PostgreSQL (the production database)."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
from sqlalchemy import create_engine, inspect

from store import JobState, JobStore
from store.existing import head_revision
from store.migrate import current, upgrade


def receipt(uid: str, sha: str = "a" * 64) -> dict[str, object]:
    return {
        "sop_instance_uid": uid,
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.1",
        "study_instance_uid": "1.2.3",
        "series_instance_uid": "1.2.3.4",
        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
        "calling_ae": "STORESCU",
        "spool_path": f"/spool/{uid}.dcm",
        "sha256": sha,
        "size_bytes": 10,
    }


def test_upgrade_from_empty_creates_the_tables(db_url: str) -> None:
    assert current(db_url) is None
    head = head_revision()
    assert upgrade(db_url) == head
    assert upgrade(db_url) == head  # idempotent
    names = set(inspect(create_engine(db_url)).get_table_names())
    assert {
        "jobs",
        "job_events",
        "result_objects",
        "users",
        "console_sessions",
        "study_results",
    } <= names


def test_receipt_is_idempotent_and_new_content_reanalyses(db_url: str) -> None:
    upgrade(db_url)
    store = JobStore(db_url)
    first = store.record_received(**receipt("1.2.3.100"))  # type: ignore[arg-type]
    assert first.created and first.needs_analysis
    again = store.record_received(**receipt("1.2.3.100"))  # type: ignore[arg-type]
    assert not again.created and not again.changed and again.job_id == first.job_id
    store.set_state(first.job_id, JobState.DELIVERED, "done")
    done_again = store.record_received(**receipt("1.2.3.100"))  # type: ignore[arg-type]
    assert not done_again.needs_analysis
    changed = store.record_received(**receipt("1.2.3.100", sha="b" * 64))  # type: ignore[arg-type]
    assert changed.changed and changed.needs_analysis
    job = store.get(first.job_id)
    assert job is not None and job.state == JobState.RECEIVED and job.times_received == 4
    states = [e.state for e in store.events(first.job_id)]
    assert states[0] == "received" and "delivered" in states and states[-1] == "received"


def test_claim_is_compare_and_set(db_url: str) -> None:
    upgrade(db_url)
    store = JobStore(db_url)
    job_id = store.record_received(**receipt("1.2.3.200")).job_id  # type: ignore[arg-type]
    assert store.claim(job_id, lease_s=600)
    assert not store.claim(job_id, lease_s=600), "a live claim must not be taken twice"
    time.sleep(0.05)
    assert store.claim(job_id, lease_s=0.0), "an expired claim (dead worker) can be retaken"
    store.set_state(job_id, JobState.DELIVERED)
    assert not store.claim(job_id, lease_s=0.0), "finished jobs are never claimed again"
    job = store.get(job_id)
    assert job is not None and job.attempts == 2


def test_set_state_refuses_unknown_fields(db_url: str) -> None:
    upgrade(db_url)
    store = JobStore(db_url)
    job_id = store.record_received(**receipt("1.2.3.300")).job_id  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sop_instance_uid"):
        store.set_state(job_id, JobState.FAILED, sop_instance_uid="x")


def _listener(url: str, n: int) -> None:
    store = JobStore(url)
    for i in range(n):
        store.record_received(**receipt(f"1.2.9.{i}"))  # type: ignore[arg-type]
    # Every instance arrives twice (a PACS that retries): still one job each.
    for i in range(0, n, 3):
        store.record_received(**receipt(f"1.2.9.{i}"))  # type: ignore[arg-type]


def _worker(url: str, n: int, done: mp.Queue) -> None:  # type: ignore[type-arg]
    store = JobStore(url)
    mine: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(store.list(state="delivered", limit=10_000)) < n:
        for job_id in store.unfinished(stale_after_s=0.0):
            if store.claim(job_id, lease_s=600):
                store.set_state(job_id, JobState.DELIVERED, "ok", expect=[JobState.ANALYSING])
                mine.append(job_id)
        time.sleep(0.01)
    done.put(mine)


def test_concurrent_listener_and_two_workers_lose_and_duplicate_nothing(db_url: str) -> None:
    upgrade(db_url)
    n = 120
    ctx = mp.get_context("spawn")
    done: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_listener, args=(db_url, n))]
    procs += [ctx.Process(target=_worker, args=(db_url, n, done)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [done.get(timeout=180) for _ in range(2)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    processed = results[0] + results[1]
    assert len(processed) == n, "every job processed"
    assert len(set(processed)) == n, "no job processed twice"
    store = JobStore(db_url)
    assert store.counts() == {"delivered": n}
    assert all(j.times_received in (1, 2) for j in store.list(limit=10_000))


def _migrate(url: str) -> None:
    upgrade(url)


def test_concurrent_upgrades_from_empty_do_not_collide(db_url: str) -> None:
    """Node and workers start together and each applies migrations on start."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_migrate, args=(db_url,)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert current(db_url) == head_revision()
