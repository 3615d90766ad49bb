"""The embedded broker's wake-ups (:mod:`store.wake`, :mod:`store.broker_transport`), real kombu.

The consumers here poll every 30 s and are given 10 s: a message that arrives was brought by a
wake-up, never by a poll. (The same with real ``deepcovid node`` and ``worker`` processes:
``tests/integration/test_broker_wake.py``.)
"""

from __future__ import annotations

import socket
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Consumer, Message, Queue

from common.settings import Settings
from store.broker import EMBEDDED_TRANSPORT, declare_queue, make_celery
from store.broker_transport import Transport
from store.wake import SUFFIX, WakeListener, wake_all, wake_dir

LONG_POLL_S = 30.0
WAIT_S = 10.0
"""How long a consumer waits for a message: a third of its poll interval."""


def test_a_wake_up_ends_the_wait_and_is_consumed_by_it(tmp_path: Path) -> None:
    listener = WakeListener(tmp_path / "broker.wake")
    try:
        assert listener.bound
        assert not listener.wait(0.01), "nothing sent yet"
        assert wake_all(tmp_path / "broker.wake") == 1
        assert wake_all(tmp_path / "broker.wake") == 1
        assert listener.wait(WAIT_S)
        assert not listener.wait(0.01), "one wait consumes every pending wake-up"
    finally:
        listener.close()
    assert list((tmp_path / "broker.wake").iterdir()) == [], "its socket file is removed"


def test_a_dead_workers_socket_is_removed_and_a_missing_folder_is_no_error(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "broker.wake"
    assert wake_all(folder) == 0
    folder.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(folder / f"dead{SUFFIX}"))
    dead.close()  # as SIGKILL leaves it: the file stays, nobody receives
    assert wake_all(folder) == 0
    assert not (folder / f"dead{SUFFIX}").exists()


def test_a_listener_that_cannot_bind_still_sleeps_and_wakes_itself(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120)  # too long a path for a Unix socket
    for listener in (WakeListener(deep), WakeListener(None)):
        try:
            assert not listener.bound
            assert not listener.wait(0.01)
            listener.wake()
            assert listener.wait(WAIT_S)
        finally:
            listener.close()


def test_the_broker_file_names_the_wake_folder(tmp_path: Path) -> None:
    assert wake_dir(tmp_path / "broker.sqlite") == tmp_path / "broker.wake"


def _connection(path: Path) -> Connection:
    return Connection(
        f"sqlite:///{path}",
        transport=EMBEDDED_TRANSPORT,
        transport_options={"polling_interval": LONG_POLL_S},
    )


def _publish_later(path: Path, bodies: list[int], delay: float = 0.3) -> threading.Thread:
    def publish() -> None:
        threading.Event().wait(delay)  # the consumer has polled, found nothing, and sleeps
        with _connection(path) as conn:
            queue = conn.SimpleQueue("analysis")
            for body in bodies:
                queue.put(body)
            queue.close()

    thread = threading.Thread(target=publish)
    thread.start()
    return thread


def test_a_published_message_wakes_the_consumer_long_before_its_poll(tmp_path: Path) -> None:
    path = tmp_path / "broker.sqlite"
    got: list[Any] = []
    with _connection(path) as conn:
        consumer = Consumer(
            conn.channel(),
            queues=[Queue("analysis")],
            callbacks=[lambda body, message: (got.append(body), message.ack())],
            accept=["json"],
        )
        consumer.consume()
        publisher = _publish_later(path, [7])
        conn.drain_events(timeout=WAIT_S)  # TimeoutError unless woken: the poll is 30 s away
        publisher.join()
    assert got == [7]


def test_an_acknowledged_task_lets_the_next_waiting_one_in_at_once(tmp_path: Path) -> None:
    """Prefetch 1, as the worker runs: the second message waits for the first's ack, and the
    ack itself makes the consumer poll again (no publisher wakes it then)."""
    path = tmp_path / "broker.sqlite"
    held: list[Message] = []
    got: list[Any] = []

    def hold(body: Any, message: Message) -> None:
        got.append(body)
        held.append(message)

    with _connection(path) as conn:
        channel = conn.channel()
        channel.basic_qos(0, 1, False)
        Consumer(channel, queues=[Queue("analysis")], callbacks=[hold], accept=["json"]).consume()
        _publish_later(path, [1, 2], delay=0.0).join()
        conn.drain_events(timeout=WAIT_S)
        assert got == [1]
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.5)  # the second waits: prefetch 1, the first unacked
        acker = threading.Timer(0.3, held[0].ack)  # acked from another thread, as Celery does
        acker.start()
        conn.drain_events(timeout=WAIT_S)
        acker.join()
    assert got == [1, 2]


def test_the_embedded_broker_gets_this_transport_on_the_same_tables(tmp_path: Path) -> None:
    """Same file, same tables: what the app publishes, kombu's stock transport reads (a
    queue written before an upgrade is read after it, and the other way round)."""
    settings = Settings(data_dir=tmp_path, broker_poll_s=5.0)
    app = make_celery(settings)
    with app.connection_for_write() as conn:
        assert isinstance(conn.transport, Transport)
        assert conn.transport.polling_interval == 5.0
    declare_queue(settings.storage.broker)  # kombu's stock transport first, as at a start
    app.send_task("deepcovid.test", args=[41], queue="analysis")
    with sqlite3.connect(tmp_path / "broker.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",), "one fsync a commit"
    with Connection(settings.storage.broker) as stock:
        queue = stock.SimpleQueue("analysis")
        assert queue.get(timeout=WAIT_S).payload[0] == [41]  # Celery's (args, kwargs, embed)
        queue.close()


def test_redis_is_left_as_it_was(tmp_path: Path) -> None:
    app = make_celery(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0"))
    assert app.conf.broker_transport is None
    assert "polling_interval" not in app.conf.broker_transport_options
