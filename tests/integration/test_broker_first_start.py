"""The embedded broker's queue declared by eight real processes starting together on a fresh
data folder (the node and workers of a first start): every one returns, the queue exists once.
The single-process rules of :func:`store.broker.declare_queue` are unit tests
(``tests/unit/store/test_broker_declare.py``)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from common.tasks import ANALYSIS_QUEUE
from tests.harness.net import REPO


def _queues(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [name for (name,) in db.execute("SELECT name FROM kombu_queue")]


def test_processes_starting_together_all_succeed(tmp_path: Path) -> None:
    """Eight processes declare on one fresh file at once (the node and workers of a first
    start): every one returns, and the queue exists once."""
    path = tmp_path / "broker.sqlite"
    code = f"from store.broker import declare_queue; declare_queue('sqla+sqlite:///{path}')"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stderr=subprocess.PIPE)
        for _ in range(8)
    ]
    errors = [p.communicate(timeout=120)[1].decode()[-500:] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    assert _queues(path) == [ANALYSIS_QUEUE]
