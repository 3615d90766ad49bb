"""The embedded broker's queue is declared before a service starts, once, and a lost race is
retried (real kombu, one process; eight processes starting together are in
``tests/integration/test_broker_first_start.py``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import kombu
import pytest
from sqlalchemy.exc import IntegrityError

from common.tasks import ANALYSIS_QUEUE
from store.broker import declare_queue


def _queues(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [name for (name,) in db.execute("SELECT name FROM kombu_queue")]


def test_declared_once_however_often(tmp_path: Path) -> None:
    path = tmp_path / "broker.sqlite"
    declare_queue(f"sqla+sqlite:///{path}")
    declare_queue(f"sqla+sqlite:///{path}")
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


def test_other_brokers_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis declares its queues itself: no connection is even opened (nothing listens there)."""
    opened: list[object] = []
    monkeypatch.setattr(kombu, "Connection", lambda *args, **kwargs: opened.append(args))
    declare_queue("redis://127.0.0.1:1/0")
    assert opened == []
