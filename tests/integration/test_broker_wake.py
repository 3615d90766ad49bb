"""The embedded broker wakes a real ``deepcovid worker`` when the node publishes a task.

The worker polls its broker every 30 s here (``DEEPCOVID_BROKER_POLL_S``); a job that storescu
sends once the worker has polled and gone to sleep must still leave the queue within 10 s,
which only the node's wake-up can do (``store.wake``, ``store.broker_transport``). Without it
the job would wait for the worker's next poll, some 30 s later.
"""

from __future__ import annotations

import time
from pathlib import Path

from store import JobStore
from tests.harness.factories import DICOM_DIR
from tests.harness.net import wait_for
from tests.harness.services import ServiceProcess
from tests.integration.test_queue import start, storescu, wait_listening

LONG_POLL_S = "30"
PICKED_UP_WITHIN_S = 10.0
"""A third of the poll interval: enough for a loaded machine, far short of the next poll."""


def test_a_sleeping_worker_is_woken_by_the_node(
    settings_env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    env = {**settings_env, "DEEPCOVID_BROKER_POLL_S": LONG_POLL_S}
    port = int(env["DEEPCOVID_PORT"])
    node = start(services, ["node"], env, tmp_path / "node.log")
    wait_listening(port, node)
    worker = start(services, ["worker"], env, tmp_path / "worker.log")
    wait_for(lambda: " ready." in worker.output(), timeout=120, what="the worker to be ready")
    time.sleep(1.0)  # its first poll found nothing: the next is 30 s away
    wake = Path(env["DEEPCOVID_DATA_DIR"]) / "broker.wake"
    assert [p.suffix for p in wake.iterdir()] == [".sock"], "the worker listens for wake-ups"

    storescu(port, [DICOM_DIR / "nih_chestxray_DX_nhsx_test.dcm"])
    store = JobStore(f"sqlite:///{Path(env['DEEPCOVID_DATA_DIR']) / 'jobs.sqlite'}")
    job = wait_for(lambda: next(iter(store.list(limit=1)), None), timeout=30, what="the job")
    wait_for(
        lambda: "analysing" in {e.state for e in store.events(job.id)},
        timeout=PICKED_UP_WITHIN_S,
        what="the worker to take the job (woken, not polling)",
    )
    wait_for(lambda: store.get(job.id).state == "delivered", timeout=240, what="delivery")  # type: ignore[union-attr]
    assert "wake-ups are off" not in worker.output()
