"""The embedded broker's queue is declared before a service starts, once, by however many
processes start together (real kombu, real processes)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import kombu
import pytest
from sqlalchemy.exc import IntegrityError

from common.tasks import ANALYSIS_QUEUE
from store.broker import declare_queue
from tests.harness.net import REPO


def _queues(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [name for (name,) in db.execute("SELECT name FROM kombu_queue")]


def test_declared_once_however_often(tmp_path: Path) -> None:
    path = tmp_path / "broker.sqlite"
    declare_queue(f"sqla+sqlite:///{path}")
    declare_queue(f"sqla+sqlite:///{path}")
    assert _queues(path) == [ANALYSIS_QUEUE]


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


def test_a_lost_race_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first attempt fails as the loser of the race does (UNIQUE constraint); the retry
    finds the queue and returns."""
    real = kombu.Connection
    calls: list[int] = []

    def connection(*args: object, **kwargs: object) -> kombu.Connection:
        calls.append(1)
        if len(calls) == 1:
            raise IntegrityError("INSERT INTO kombu_queue", {}, Exception("UNIQUE constraint"))
        return real(*args, **kwargs)

    monkeypatch.setattr(kombu, "Connection", connection)
    path = tmp_path / "broker.sqlite"
    declare_queue(f"sqla+sqlite:///{path}")
    assert len(calls) == 2 and _queues(path) == [ANALYSIS_QUEUE]


def test_other_brokers_are_left_alone() -> None:
    declare_queue("redis://127.0.0.1:1/0")  # not even connected to: no error
