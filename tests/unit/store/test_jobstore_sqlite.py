"""The job store on SQLite, in the fast layer: receipts, claims and leases (a job left
``analysed`` included), the state guard, re-enqueueing, the outbox settling a job, and the
schema agreeing with its migrations.

The same rules run on PostgreSQL in ``tests/integration/test_jobstore.py``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import update

from common.states import FINAL_STATES, JobState
from store import JobStore
from store.jobstore import make_engine
from store.migrate import upgrade
from store.outbox import NewResult, Outbox
from store.recovery import requeue_unfinished
from store.schema import Base, DeliveryState, Job, ResultObject
from tests.harness.factories import record_job

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade(url)
    return JobStore(url)


def receive(store: JobStore, uid: str, sha: str = "a" * 64) -> int:
    return record_job(store, uid, sha256=sha)


def age(store: JobStore, job_id: int, seconds: float) -> None:
    """Pretend the job's last change happened ``seconds`` ago."""
    with store.session() as s:
        when = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
        s.execute(update(Job).where(Job.id == job_id).values(updated_at=when))


def test_the_schema_and_the_migrations_agree(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    upgrade(url)
    with make_engine(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"schema.py and migrations/ differ: {diff}"


def test_a_receipt_twice_is_one_job_and_new_content_is_analysed_again(store: JobStore) -> None:
    job_id = receive(store, "1.2.3.100")
    assert receive(store, "1.2.3.100") == job_id
    store.set_state(job_id, JobState.DELIVERED, "done")
    assert receive(store, "1.2.3.100", sha="b" * 64) == job_id  # new content: analysed again
    job = store.get(job_id)
    assert job is not None and job.state == JobState.RECEIVED and job.times_received == 3


def test_a_live_claim_is_exclusive_and_an_expired_one_can_be_retaken(store: JobStore) -> None:
    job_id = receive(store, "1.2.3.200")
    assert store.claim(job_id, lease_s=600)
    assert not store.claim(job_id, lease_s=600)
    age(store, job_id, 700)
    assert store.claim(job_id, lease_s=600), "the worker died: its lease ran out"
    store.set_state(job_id, JobState.DELIVERED)
    age(store, job_id, 700)
    assert not store.claim(job_id, lease_s=600), "finished jobs are never claimed again"


def test_the_state_guard_refuses_a_change_from_the_wrong_state(store: JobStore) -> None:
    job_id = receive(store, "1.2.3.300")
    assert not store.set_state(job_id, JobState.DELIVERED, expect=[JobState.RESULTS_BUILT])
    assert store.get(job_id).state == JobState.RECEIVED  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="sop_instance_uid"):
        store.set_state(job_id, JobState.FAILED, sop_instance_uid="x")
    events = [e.state for e in store.events(job_id)]
    assert events == ["received"], "a refused change adds no event"


def test_requeue_takes_waiting_jobs_and_expired_analyses_only(store: JobStore) -> None:
    waiting = receive(store, "1.2.3.401")
    live = receive(store, "1.2.3.402")
    dead = receive(store, "1.2.3.403")
    done = receive(store, "1.2.3.404")
    assert store.claim(live, lease_s=900) and store.claim(dead, lease_s=900)
    store.set_state(done, JobState.DELIVERED)
    for job_id in (waiting, live, done):
        age(store, job_id, 60)
    age(store, dead, 1000)
    sent: list[int] = []
    n = requeue_unfinished(store, sent.append, stale_after_s=30, analysis_lease_s=900)
    assert n == 2 and sorted(sent) == sorted([waiting, dead])


def test_a_job_left_analysed_is_retaken_once_its_lease_runs_out(store: JobStore) -> None:
    # The worker recorded the analysis, then lost the database (or died) before its results
    # were built: its task retry finds the job claimed; once the lease runs out the job is
    # claimed and requeued again instead of staying "analysed" for ever.
    job_id = receive(store, "1.2.3.450")
    assert store.claim(job_id, lease_s=900)
    assert store.set_state(job_id, JobState.ANALYSED, expect=[JobState.ANALYSING])
    assert store.renew(job_id), "the lease is renewed while the results are built"
    assert not store.claim(job_id, lease_s=900), "a live lease is exclusive"
    sent: list[int] = []
    assert requeue_unfinished(store, sent.append, stale_after_s=30, analysis_lease_s=900) == 0
    age(store, job_id, 1000)
    assert requeue_unfinished(store, sent.append, stale_after_s=30, analysis_lease_s=900) == 1
    assert sent == [job_id]
    assert store.claim(job_id, lease_s=900)
    job = store.get(job_id)
    assert job is not None and job.state == JobState.ANALYSING and job.attempts == 2
    store.set_state(job_id, JobState.RESULTS_BUILT)
    assert not store.renew(job_id), "the lease ends once the results are built"


def test_requeue_stops_at_the_first_broker_failure(store: JobStore) -> None:
    for i in range(3):
        receive(store, f"1.2.3.50{i}")

    def broker_down(_job_id: int) -> None:
        raise ConnectionError("broker down")

    assert requeue_unfinished(store, broker_down) == 0
    assert len(store.unfinished()) == 3, "the jobs stay for the next run"


@pytest.mark.parametrize(
    ("outcome", "final"),
    [(DeliveryState.CONFIRMED, JobState.DELIVERED), (DeliveryState.FAILED, JobState.FAILED)],
)
def test_the_outbox_settles_the_job_through_the_guarded_transition(
    store: JobStore, outcome: DeliveryState, final: JobState
) -> None:
    job_id = receive(store, "1.2.3.600")
    store.set_state(job_id, JobState.RESULTS_BUILT)
    outbox = Outbox(store)
    results = [
        NewResult(
            kind, f"1.2.3.6{i}", "1.2.840.10008.5.1.4.1.1.88.34", f"1.2.3.7{i}", "1.2.3", "/x"
        )
        for i, kind in enumerate(("sr", "sc"))
    ]
    assert outbox.add(job_id, results, model_version="v", destination="PACS@h:104") == 2
    rows = outbox.claim_due(job_id=job_id)
    outbox.mark(rows[0].id, DeliveryState.CONFIRMED)
    assert store.get(job_id).state == JobState.RESULTS_BUILT  # type: ignore[union-attr]
    outbox.mark(rows[1].id, outcome, error="refused" if outcome == DeliveryState.FAILED else None)
    job = store.get(job_id)
    assert job is not None and job.state == final and final in FINAL_STATES
    assert [e.state for e in store.events(job_id)][-1] == final
    outbox.settle(job_id)  # settling again changes nothing
    assert [e.state for e in store.events(job_id)].count(final) == 1


def test_upgrading_a_store_in_use_keeps_its_jobs_events_and_results(tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import text

    from store.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    command.upgrade(alembic_config(url), "0002")
    # Rows as the code of revision 0002 wrote them (today's models have more columns).
    engine = make_engine(url)
    with engine.begin() as conn:
        now = dt.datetime.now(dt.UTC)
        job_id = conn.execute(
            text(
                "INSERT INTO jobs (sop_instance_uid, sop_class_uid, study_instance_uid, "
                "series_instance_uid, calling_ae, spool_path, sha256, size_bytes, state, "
                "times_received, attempts, created_at, updated_at) VALUES ('1.2.3.700', "
                "'1.2.840.10008.5.1.4.1.1.1', '1.2.3', '1.2.3.4', 'TEST', '/spool/x.dcm', "
                ":sha, 10, 'results_built', 1, 0, :now, :now)"
            ),
            {"sha": "a" * 64, "now": now},
        ).lastrowid
        for state in ("received", "results_built"):
            conn.execute(
                text("INSERT INTO job_events (job_id, at, state) VALUES (:j, :now, :s)"),
                {"j": job_id, "now": now, "s": state},
            )
        conn.execute(
            text(
                "INSERT INTO result_objects (job_id, kind, model_version, sop_instance_uid, "
                "sop_class_uid, series_instance_uid, study_instance_uid, path, "
                "delivery_state, attempts, created_at, updated_at) VALUES (:j, 'sr', 'v', "
                "'1.2.3.71', '1.2.840.10008.5.1.4.1.1.88.34', '1.2.3.72', '1.2.3', '/x', "
                "'kept', 0, :now, :now)"
            ),
            {"j": job_id, "now": now},
        )
    engine.dispose()
    upgrade(url)
    store = JobStore(url)
    assert [e.state for e in store.events(job_id)] == ["received", "results_built"]
    job = store.get(job_id)
    assert job is not None and job.state == JobState.RESULTS_BUILT
    assert job.accession_number is None
    with store.session() as s:
        assert s.query(ResultObject).count() == 1


def test_database_errors_name_no_bound_values(tmp_path: Path) -> None:
    """An error's text (logged by retries and warnings) carries the SQL, never the values."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from store.jobstore import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")
    with pytest.raises(SQLAlchemyError) as caught, engine.connect() as conn:
        conn.execute(text("INSERT INTO no_such_table VALUES (:v)"), {"v": "ACC-SECRET-0042"})
    assert "no_such_table" in str(caught.value)
    assert "ACC-SECRET-0042" not in str(caught.value)
