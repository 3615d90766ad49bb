"""The node's /health and /metrics endpoints, served by a real ``deepcovid node`` process.

A private redis-server is the broker, so readiness can be seen to fail when it stops and to
recover when it comes back; a real worker analyses the instances so the job, queue and latency
figures have something to count.
"""

from __future__ import annotations

import subprocess
from dataclasses import fields
from pathlib import Path

from tests.harness.cluster import Cluster, make_instances, metric
from tests.harness.net import wait_for
from tests.harness.redisserver import RedisServer
from tests.harness.services import ServiceProcess
from worker.results import ResultObjects


def test_health_and_metrics_follow_the_node(
    settings_env: dict[str, str],
    redis_server: RedisServer,
    services: list[ServiceProcess],
    tmp_path: Path,
) -> None:
    cluster = Cluster(
        {**settings_env, "DEEPCOVID_BROKER_URL": redis_server.url}, tmp_path, services
    )
    cluster.start_node()

    code, body = cluster.http("/health/live")
    assert (code, body) == (200, {"status": "live"})
    code, body = cluster.http("/health/ready")
    assert code == 200, body
    assert {name: c["ok"] for name, c in body["checks"].items()} == {
        "database": True,
        "broker": True,
        "spool": True,
        "model": True,
    }

    # Two instances, no worker yet: they wait in the queue.
    files = make_instances(2, tmp_path / "send")
    assert set(cluster.send(files).values()) == {0}
    refused = subprocess.run(
        ["echoscu", "-aec", "NOT-THE-NODE", "127.0.0.1", str(cluster.port)], capture_output=True
    )
    assert refused.returncode != 0
    wait_for(
        lambda: metric(cluster.http("/metrics")[1], "deepcovid_queue_depth") == 2,
        timeout=30,
        what="queue depth 2",
    )
    text = cluster.http("/metrics")[1]
    assert metric(text, "deepcovid_c_store_responses_total", status="0x0000") == 2
    assert metric(text, "deepcovid_associations_total", outcome="rejected") == 1
    assert metric(text, "deepcovid_associations_total", outcome="accepted") >= 2
    assert metric(text, "deepcovid_jobs_total", stage="received") == 2
    assert metric(text, "deepcovid_oldest_waiting_job_age_seconds") > 0

    # A worker analyses both; the totals and the latency histograms count them.
    cluster.start_worker()
    wait_for(
        lambda: cluster.store.counts() == {"delivered": 2}, timeout=240, what="2 jobs delivered"
    )
    text = cluster.http("/metrics")[1]
    assert metric(text, "deepcovid_queue_depth") == 0
    assert metric(text, "deepcovid_jobs_total", stage="analysed") == 2
    assert metric(text, "deepcovid_jobs_total", stage="delivered") == 2
    assert metric(text, "deepcovid_jobs_in_state", state="delivered") == 2
    results = len(fields(ResultObjects))  # SC, PM, GSPS, SR for each job
    assert metric(text, "deepcovid_outbox_objects", state="kept") == 2 * results
    assert metric(text, "deepcovid_outbox_pending") == 0
    for stage in ("queue", "analysis", "build", "delivery"):
        assert metric(text, "deepcovid_stage_duration_seconds_count", stage=stage) == 2
    assert metric(text, "deepcovid_job_duration_seconds_count", outcome="delivered") == 2
    assert metric(text, "deepcovid_job_duration_seconds_sum", outcome="delivered") > 0
    assert metric(text, "process_resident_memory_bytes") > 0

    # The broker stops: not ready (and says why), still live; back when it returns.
    redis_server.stop()
    code, body = cluster.http("/health/ready")
    assert code == 503 and body["status"] == "not ready"
    assert not body["checks"]["broker"]["ok"], body
    assert "broker unreachable" in body["checks"]["broker"]["detail"]
    assert body["checks"]["database"]["ok"] and body["checks"]["model"]["ok"]
    assert cluster.http("/health/live")[0] == 200
    assert metric(cluster.http("/metrics")[1], "deepcovid_ready_check", check="broker") == 0
    redis_server.start()
    wait_for(lambda: cluster.http("/health/ready")[0] == 200, timeout=30, what="ready again")
