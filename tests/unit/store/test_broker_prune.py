"""The embedded broker's consumed messages are deleted, its waiting ones kept (real kombu)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from kombu import Connection

from store.broker import prune_consumed


def _rows(path: Path) -> dict[int, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT visible, count(*) FROM kombu_message GROUP BY visible"))


def test_consumed_messages_go_waiting_ones_stay(tmp_path: Path) -> None:
    path = tmp_path / "broker.sqlite"
    url = f"sqla+sqlite:///{path}"
    with Connection(url) as conn:
        queue = conn.SimpleQueue("analysis")
        for i in range(3):
            queue.put({"job": i})
        for _ in range(2):
            queue.get(timeout=10).ack()
        queue.close()
    assert _rows(path) == {0: 2, 1: 1}, "kombu keeps what it handed out"
    assert prune_consumed(url) == 0, "consumed less than an hour ago: kept"
    assert prune_consumed(url, older_than_s=0) == 2
    assert _rows(path) == {1: 1}
    with Connection(url) as conn:
        queue = conn.SimpleQueue("analysis")
        assert queue.get(timeout=10).payload == {"job": 2}, "the waiting message still arrives"
        queue.close()


def test_other_brokers_and_a_fresh_file_are_left_alone(tmp_path: Path) -> None:
    assert prune_consumed("redis://127.0.0.1:1/0") == 0  # not even connected to
    assert prune_consumed(f"sqla+sqlite:///{tmp_path / 'new.sqlite'}", older_than_s=0) == 0
