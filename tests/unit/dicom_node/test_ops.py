"""The node's operations endpoints without servers: checks, latency bookkeeping, HTTP server.

The integration layer (``tests/integration/test_monitoring.py``) runs them in a real node.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from common.settings import Settings
from dicom_node.ops import health
from dicom_node.ops.health import ModelCheck, Readiness, check_broker, check_spool
from dicom_node.ops.metrics import Histogram, JobStoreCollector, stage_durations
from dicom_node.ops.server import start_monitoring
from store import JobState, JobStore
from store.migrate import upgrade
from tests.harness.factories import record_job
from tests.harness.net import free_port

T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_stage_durations_of_a_delivered_job() -> None:
    events = [
        (1, "received", at(0)),
        (2, "queued", at(0.1)),
        (3, "analysing", at(2)),
        (4, "analysing", at(2.5)),  # attributes recorded: same stage
        (5, "analysed", at(5)),
        (6, "results_built", at(6)),
        (7, "delivered", at(9)),
    ]
    [(outcome, stages, total)] = stage_durations(events, {7})
    assert outcome == "delivered"
    assert stages == {"queue": 2.0, "analysis": 3.0, "build": 1.0, "delivery": 3.0}
    assert total == 9.0


def test_stage_durations_count_only_transitions_and_cycles() -> None:
    events = [
        (1, "received", at(0)),
        (2, "analysing", at(1)),
        (3, "rejected", at(2)),
        (4, "rejected", at(50)),  # "received again, identical content" on a rejected job
        (5, "received", at(100)),  # different content: a second cycle
        (6, "analysing", at(104)),
        (7, "analysed", at(106)),
        (8, "failed", at(107)),
    ]
    assert list(stage_durations(events, {4})) == []
    found = list(stage_durations(events, {3, 8}))
    assert found[0] == ("rejected", {"queue": 1.0}, 2.0)
    assert found[1] == ("failed", {"queue": 4.0, "analysis": 2.0}, 7.0)


def test_histogram_buckets_are_cumulative() -> None:
    h = Histogram([1, 10])
    for seconds in (0.5, 1.0, 3, 30, -2):
        h.observe(seconds)
    assert h.buckets() == [("1", 3.0), ("10", 4.0), ("+Inf", 5.0)]
    assert h.total == pytest.approx(34.5)


def test_collector_observes_each_finished_job_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade(url)
    store = JobStore(url)
    old = _job(store, "1.2.3.1")
    store.set_state(old, JobState.REJECTED, reason="lateral")  # finished before the node
    collector = JobStoreCollector(store.engine)
    assert _sample(collector, "deepcovid_job_duration_seconds_count", outcome="rejected") == 0
    new = _job(store, "1.2.3.2")
    store.set_state(new, JobState.REJECTED, reason="lateral")
    _job(store, "1.2.3.3")  # waiting
    for _ in range(2):  # a second scrape must not count the job again
        assert _sample(collector, "deepcovid_job_duration_seconds_count", outcome="rejected") == 1
    assert _sample(collector, "deepcovid_jobs_total", stage="received") == 3
    assert _sample(collector, "deepcovid_jobs_total", stage="rejected") == 2
    assert _sample(collector, "deepcovid_queue_depth") == 1
    assert _sample(collector, "deepcovid_jobstore_up") == 1


def test_collector_counts_findings_including_indeterminate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade(url)
    store = JobStore(url)
    for i, finding in enumerate(["present", "absent", "absent", "indeterminate"]):
        job = _job(store, f"1.2.3.{i}")
        store.set_state(job, JobState.ANALYSED, probability=0.5, threshold=0.5, finding=finding)
    _job(store, "1.2.3.9")  # not analysed: no finding
    collector = JobStoreCollector(store.engine)
    assert _sample(collector, "deepcovid_findings_total", finding="present") == 1
    assert _sample(collector, "deepcovid_findings_total", finding="absent") == 2
    assert _sample(collector, "deepcovid_findings_total", finding="indeterminate") == 1


def test_collector_reports_an_unreadable_store(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    collector = JobStoreCollector(create_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}"))
    names = [m.name for m in collector.collect()]
    assert names == ["deepcovid_jobstore_up"]
    assert _sample(collector, "deepcovid_jobstore_up") == 0


def test_spool_check_fails_below_the_watermark(tmp_path: Path) -> None:
    def usage(_: Path) -> tuple[int, int, int]:
        return (1000 * health.MIB, 900 * health.MIB, 100 * health.MIB)

    assert check_spool(tmp_path, 50, usage).ok
    below = check_spool(tmp_path, 200, usage)
    assert not below.ok and "0xA700" in below.detail and "100 MiB free" in below.detail


def test_broker_check_fails_fast_when_nothing_listens() -> None:
    result = check_broker(f"redis://127.0.0.1:{free_port()}/0", timeout_s=2)
    assert not result.ok and "broker unreachable" in result.detail


def test_model_check_follows_the_registry(model_registry: Path, tmp_path: Path) -> None:
    ok = ModelCheck(model_registry)()
    assert ok.ok and "squeezenet1_1" in ok.detail
    assert not ModelCheck(tmp_path)().ok  # no ACTIVE file
    # A copy whose weights were tampered with is not ready.
    import shutil

    copy = tmp_path / "reg"
    shutil.copytree(model_registry, copy)
    version = (copy / "ACTIVE").read_text().strip()
    with (copy / version / health.WEIGHTS_FILE).open("ab") as fh:
        fh.write(b"x")
    bad = ModelCheck(copy)()
    assert not bad.ok and "do not match" in bad.detail


def test_a_raising_check_makes_the_node_not_ready() -> None:
    def boom() -> health.CheckResult:
        raise RuntimeError("bug")

    ready, results = Readiness(
        {"spool": lambda: health.CheckResult("spool", True, "fine"), "x": boom}
    ).run()
    assert not ready
    assert [(r.name, r.ok) for r in results] == [("spool", True), ("x", False)]


def test_server_serves_endpoints_and_survives_a_taken_port(
    tmp_path: Path, model_registry: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        model_registry_dir=model_registry,
        monitoring_port=free_port(),
        min_free_space_mb=1,
    )
    settings.storage.ensure_dirs()
    upgrade(settings.storage.db_url)
    server = start_monitoring(settings)
    assert server is not None
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(base + "/health/live", timeout=10) as r:
            assert r.status == 200 and json.loads(r.read()) == {"status": "live"}
        with urllib.request.urlopen(base + "/health/ready", timeout=30) as r:
            body = json.loads(r.read())
        assert body["status"] == "ready", body
        assert set(body["checks"]) == {"database", "broker", "spool", "model"}
        with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            text = r.read().decode()
        assert 'deepcovid_ready_check{check="model"} 1.0' in text
        assert "deepcovid_queue_depth 0.0" in text
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/nope", timeout=10)
        assert err.value.code == 404
        # A second server on the same port: logged, not fatal.
        assert start_monitoring(settings) is None
    finally:
        server.shutdown()
    with socket.socket() as s:  # the port is released (TIME_WAIT aside)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", server.port))


def test_monitoring_port_zero_turns_it_off(tmp_path: Path) -> None:
    assert start_monitoring(Settings(data_dir=tmp_path, monitoring_port=0)) is None


def _job(store: JobStore, uid: str) -> int:
    return record_job(store, uid)


def _sample(collector: JobStoreCollector, name: str, **labels: str) -> float:
    for metric in collector.collect():
        for sample in metric.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")
