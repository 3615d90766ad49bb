"""Faults mid-run: nothing received is lost, nothing is delivered twice.

Every test runs the production path on loopback: a private redis-server with persistence (AOF)
as the broker, two real Celery worker processes, our node, and a real Orthanc as the PACS that
receives the results. A batch of chest CRs is sent, a fault is injected while it is being
worked on, and after recovery every instance the node acknowledged must have a job in a final
state -- here all ``delivered``, since the batch is analysable -- with its SR, SC, Parametric
Map and GSPS received by Orthanc exactly once (a Lua filter logs every reception, duplicates
included).

Faults:

- a worker SIGKILLed mid-analysis (the job is analysed again once its lease runs out);
- redis-server restarted, instances received while it is down included;
- PostgreSQL as the job store (a private server, ``initdb`` + ``pg_ctl``) restarted -- fast
  shutdown, 5 s down -- while both workers analyse: instances sent meanwhile are answered 0xA700
  (nothing kept) and accepted when sent again; workers retry their tasks, the node's loops wait;
- Orthanc stopped for two minutes, with the shipped delivery back-off (first retry after 5 s,
  doubling; 12 attempts): several failed attempts each, nothing given up, all delivered after;
- the node SIGKILLed in the middle of an association and restarted;
- the spool's disk "full" (the free-space watermark set above the free space: C-STORE answers
  0xA700 and nothing is kept, then the watermark is lowered and the refused instances are sent
  again);
- the results folder's file system full in the middle of a write (a 1200 KiB tmpfs, root
  only; skipped elsewhere): the jobs fail with "results folder full", nothing half-written is
  left and nothing is sent; space is freed, the jobs are re-analysed and delivered once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest
from pydicom import dcmread

from common.settings import OPTIONS
from dicom_client.scu import SendResult
from store.outbox import Outbox
from tests.harness.cluster import Cluster, make_instances, metric, sop_uid
from tests.harness.net import REPO, wait_for
from tests.harness.pgserver import PostgresServer, pg_bin
from tests.harness.redisserver import RedisServer
from tests.harness.services import ServiceProcess
from worker.results import ResultObjects

BATCH = 8
SETTLE_TIMEOUT = 300.0
RESULTS_FS_KIB = 1200
PACS_DOWN_S = 120


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The instances every test sends (each test has its own store and PACS)."""
    return make_instances(BATCH + 3, tmp_path_factory.mktemp("batch"))


def start_fleet(
    env: dict[str, str],
    redis_server: RedisServer,
    services: list[ServiceProcess],
    tmp_path: Path,
    **extra: str,
) -> Iterator[Cluster]:
    """Redis + Orthanc + node + two workers, ready to receive (``extra``: more settings)."""
    env = {
        **env,
        "DEEPCOVID_BROKER_URL": redis_server.url,
        "DEEPCOVID_RECONCILE_INTERVAL_S": "2",  # waiting jobs re-enqueued after 20 s
        # These faults are about each image's results; a study-level SR and KOS, issued
        # study_settle_s after a study's jobs are final, would land in Orthanc at a moment the
        # counts below cannot pin down (tests/integration/test_study_result.py covers them).
        "DEEPCOVID_STUDY_SETTLE_S": "86400",
    }
    cluster = Cluster(env, tmp_path, services)
    cluster.env.update(extra)
    cluster.with_orthanc()
    try:
        cluster.start_node()
        cluster.start_worker()
        cluster.start_worker()
        yield cluster
    finally:
        assert cluster.orthanc is not None
        cluster.orthanc.stop()


@pytest.fixture
def fleet(
    settings_env: dict[str, str],
    redis_server: RedisServer,
    services: list[ServiceProcess],
    tmp_path: Path,
) -> Iterator[Cluster]:
    """The fleet on the embedded job store (SQLite in the data folder)."""
    yield from start_fleet(settings_env, redis_server, services, tmp_path)


@pytest.fixture
def fleet_default_delivery(
    settings_env: dict[str, str],
    redis_server: RedisServer,
    services: list[ServiceProcess],
    tmp_path: Path,
) -> Iterator[Cluster]:
    """The fleet with the shipped delivery retry settings (first retry after 5 s, doubling;
    12 attempts), not the cluster's quick 1 s back-off."""
    defaults = {
        name: str(OPTIONS[name].info.default)
        for name in ("delivery_backoff_s", "delivery_max_attempts")
    }
    extra = {f"DEEPCOVID_{name.upper()}": value for name, value in defaults.items()}
    yield from start_fleet(settings_env, redis_server, services, tmp_path, **extra)


@pytest.fixture
def small_results_fs(data_dir: Path) -> Iterator[Path]:
    """A real, small file system (tmpfs, 1200 KiB) mounted as the results folder.

    One job's results take about 1.6 MB (SC 0.9, PM 0.7, GSPS and SR a few tens of KB), so
    every job's writes run out of space part way through a file.
    """
    results = data_dir / "results"
    results.mkdir(mode=0o700)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={RESULTS_FS_KIB}k,mode=0700", "tmpfs"]
    if shutil.which("mount") is None:
        pytest.skip("no mount command to mount a small file system with")
    done = subprocess.run([*mount, str(results)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {done.stderr.strip()}")
    try:
        yield results
    finally:
        subprocess.run(["umount", "-l", str(results)], check=False)


@pytest.fixture
def full_results_fleet(
    small_results_fs: Path,
    settings_env: dict[str, str],
    redis_server: RedisServer,
    services: list[ServiceProcess],
    tmp_path: Path,
) -> Iterator[Cluster]:
    """The fleet with its results folder on :func:`small_results_fs`."""
    yield from start_fleet(settings_env, redis_server, services, tmp_path)


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server the test may restart (not the machine's own)."""
    if pg_bin("initdb") is None or pg_bin("pg_ctl") is None:
        pytest.skip("PostgreSQL server programs are not installed (scripts/test-services.sh)")
    server = PostgresServer().init()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_fleet(
    settings_env: dict[str, str],
    redis_server: RedisServer,
    postgres: PostgresServer,
    services: list[ServiceProcess],
    tmp_path: Path,
) -> Iterator[Cluster]:
    """The fleet with the private PostgreSQL as its job store (which outlives the services)."""
    env = {**settings_env, "DEEPCOVID_DATABASE_URL": postgres.url}
    yield from start_fleet(env, redis_server, services, tmp_path)


def assert_all_delivered_once(cluster: Cluster, uids: set[str]) -> None:
    """Every instance has a job, all delivered; each result reached Orthanc exactly once."""
    jobs = cluster.wait_all_final(uids, timeout=SETTLE_TIMEOUT)
    assert set(jobs) == uids, "a job for every acknowledged instance, and no other"
    not_delivered = {u: (j.state, j.reason) for u, j in jobs.items() if j.state != "delivered"}
    assert not not_delivered, not_delivered
    outbox = Outbox(cluster.store)
    results = [r for job in jobs.values() for r in outbox.for_job(job.id)]
    assert sorted(r.kind for r in results) == sorted(["pm", "pr", "sc", "sr"] * len(uids))
    assert {r.delivery_state for r in results} <= {"confirmed", "sent"}, results
    received = cluster.receptions()
    missing = [r.sop_instance_uid for r in results if r.sop_instance_uid not in received]
    assert not missing, f"results never received by Orthanc: {missing}"
    twice = {uid: n for uid, n in received.items() if n > 1}
    assert not twice, f"results received more than once: {twice}"
    assert cluster.orthanc is not None
    assert cluster.orthanc.instance_count() == len(fields(ResultObjects)) * len(uids)


def acknowledged(statuses: dict[str, int | None]) -> set[str]:
    return {uid for uid, status in statuses.items() if status == 0}


def test_worker_killed_mid_analysis(fleet: Cluster, batch: list[Path]) -> None:
    uids = acknowledged(fleet.send(batch[:BATCH]))
    assert len(uids) == BATCH
    store = fleet.store
    wait_for(
        lambda: store.counts().get("analysing", 0) == 2,
        timeout=180,
        what="both workers analysing",
    )
    fleet.workers[0].kill()  # SIGKILL, process group: the Celery main process and its child
    assert store.counts().get("delivered", 0) < BATCH
    assert_all_delivered_once(fleet, uids)
    assert max(j.attempts for j in fleet.jobs().values()) >= 2, "a job was analysed again"


def test_redis_restarted_mid_run(
    fleet: Cluster, batch: list[Path], redis_server: RedisServer
) -> None:
    uids = acknowledged(fleet.send(batch[:BATCH]))
    store = fleet.store
    wait_for(lambda: store.counts().get("delivered", 0) >= 1, timeout=180, what="progress")
    redis_server.stop()  # SIGTERM: the AOF (fsync always) keeps what was queued
    during = acknowledged(fleet.send(batch[BATCH:]))  # the node still takes instances
    assert len(during) == len(batch) - BATCH
    time.sleep(3)
    redis_server.start()
    assert_all_delivered_once(fleet, uids | during)


def test_postgresql_restarted_under_load(
    pg_fleet: Cluster, batch: list[Path], postgres: PostgresServer
) -> None:
    fleet = pg_fleet
    uids = acknowledged(fleet.send(batch[:BATCH]))
    assert len(uids) == BATCH
    store = fleet.store
    wait_for(
        lambda: store.counts().get("analysing", 0) == 2,
        timeout=180,
        what="both workers analysing",
    )
    postgres.stop("fast")  # every connection cut, open transactions rolled back
    # While the job store is down the node keeps nothing it cannot record: it answers
    # 0xA700 (out of resources), and the modality sends again later.
    during = fleet.send(batch[BATCH:])
    assert set(during.values()) == {0xA700}, during
    time.sleep(5)
    postgres.start()
    assert fleet.node is not None and fleet.node.proc is not None
    assert fleet.node.proc.poll() is None, "the node outlives its database"
    assert all(w.proc is not None and w.proc.poll() is None for w in fleet.workers)
    assert set(fleet.send(batch[BATCH:]).values()) == {0}
    assert_all_delivered_once(fleet, uids | set(during))


def test_pacs_down_for_two_minutes(fleet_default_delivery: Cluster, batch: list[Path]) -> None:
    fleet = fleet_default_delivery
    assert fleet.orthanc is not None
    uids = acknowledged(fleet.send(batch[:BATCH]))
    store = fleet.store
    wait_for(lambda: store.counts().get("delivered", 0) >= 1, timeout=180, what="progress")
    fleet.orthanc.stop()
    down_since = time.monotonic()
    wait_for(
        lambda: metric(fleet.http("/metrics")[1], "deepcovid_outbox_pending") > 0,
        timeout=120,
        what="results waiting for the PACS",
    )
    time.sleep(max(0.0, PACS_DOWN_S - (time.monotonic() - down_since)))
    assert store.counts().get("failed", 0) == 0, "nothing is given up while the PACS is down"
    outbox = Outbox(store)
    tries = max(r.attempts for j in fleet.jobs().values() for r in outbox.for_job(j.id))
    assert tries >= 4, f"several attempts, backing off, while the PACS was down ({tries})"
    fleet.orthanc.start()
    assert_all_delivered_once(fleet, uids)


def test_node_killed_mid_association_and_restarted(fleet: Cluster, batch: list[Path]) -> None:
    node = fleet.node
    assert node is not None
    answered: list[str] = []

    def kill_after_three(result: SendResult) -> None:
        if result.status == 0:
            answered.append(str(result.sop_instance_uid))
        if len(answered) == 3 and node.proc is not None and node.proc.poll() is None:
            node.kill()  # SIGKILL in the middle of the association

    statuses = fleet.send(batch[:BATCH], on_result=kill_after_three)
    acked = acknowledged(statuses)
    assert acked == set(answered) and len(acked) == 3, statuses
    fleet.start_node()
    spool = Path(fleet.env["DEEPCOVID_DATA_DIR"]) / "spool"
    assert not list(spool.glob(".*")), "no temporary file survives a restart"
    # The modality sends again what was not acknowledged, and one that was (harmless).
    again = [p for p in batch[:BATCH] if sop_uid(p) not in acked] + [batch[0]]
    assert set(fleet.send(again).values()) == {0}
    assert_all_delivered_once(fleet, {sop_uid(p) for p in batch[:BATCH]})
    assert fleet.jobs()[sop_uid(batch[0])].times_received == 2


def test_spool_disk_full_refuses_instead_of_accepting(fleet: Cluster, batch: list[Path]) -> None:
    first, rest = batch[: BATCH // 2], batch[BATCH // 2 : BATCH]
    assert set(fleet.send(first).values()) == {0}
    # The disk "fills": the node restarts with a watermark 10 GiB above the free space.
    data_dir = Path(fleet.env["DEEPCOVID_DATA_DIR"])
    free_mb = shutil.disk_usage(data_dir).free // (1024 * 1024)
    assert fleet.node is not None
    fleet.node.stop()
    fleet.start_node(DEEPCOVID_MIN_FREE_SPACE_MB=str(free_mb + 10240))
    code, body = fleet.http("/health/ready")
    assert code == 503 and not body["checks"]["spool"]["ok"], body
    statuses = fleet.send(rest)
    assert set(statuses.values()) == {0xA700}, statuses
    jobs = fleet.jobs()
    assert not set(statuses) & set(jobs), "nothing refused has a job"
    spooled = {p.name for p in (data_dir / "spool").iterdir()}
    assert not {f"{uid}.dcm" for uid in statuses} & spooled, "nothing refused is kept"
    assert not [n for n in spooled if n.startswith(".")], "no half-written file"
    text = fleet.http("/metrics")[1]
    assert metric(text, "deepcovid_c_store_responses_total", status="0xA700") == len(rest)
    # Space comes back: the modality's retry is accepted and everything is analysed.
    fleet.node.stop()
    fleet.start_node()
    assert fleet.http("/health/ready")[0] == 200
    assert set(fleet.send(rest).values()) == {0}
    assert_all_delivered_once(fleet, {sop_uid(p) for p in batch[:BATCH]})


def test_results_disk_full_mid_write_then_reanalysed(
    full_results_fleet: Cluster, batch: list[Path], small_results_fs: Path
) -> None:
    fleet = full_results_fleet
    sent = batch[:2]
    uids = acknowledged(fleet.send(sent))
    assert len(uids) == len(sent)
    jobs = fleet.wait_all_final(uids, timeout=SETTLE_TIMEOUT)
    # Nothing is delivered from a folder that could not hold the results: each job fails
    # with a reason an operator can act on, and nothing half-written is left there.
    assert {j.state for j in jobs.values()} == {"failed"}, jobs
    for job in jobs.values():
        assert (job.reason or "").startswith("results folder full: "), job.reason
        assert not Outbox(fleet.store).for_job(job.id), "no outbox entry without its file"
    files = [p for p in small_results_fs.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".")], "no temp file is left"
    for path in files:  # whatever was written before the disk filled up is whole
        ds = dcmread(path)
        if "PixelData" in ds or "FloatPixelData" in ds:
            assert ds.pixel_array.size > 0
    assert fleet.receptions() == {}, "nothing reached the PACS"
    # Space is freed; the operator re-analyses the failed jobs; each result arrives once.
    subprocess.run(
        ["mount", "-o", "remount,size=64m", str(small_results_fs)], check=True, timeout=30
    )
    for uid in uids:
        subprocess.run(
            [sys.executable, "-m", "deepcovid.cli", "jobs", "reanalyse", uid],
            env={**os.environ, **fleet.env},
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=120,
        )
    assert_all_delivered_once(fleet, uids)
