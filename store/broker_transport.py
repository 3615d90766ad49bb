"""The embedded broker's kombu transport: kombu's SQLAlchemy transport on SQLite, with wake-ups.

The stock transport polls the queue table every ``polling_interval`` (kombu's default 1 s) and
sleeps in between, so a task published just after a poll waits almost a whole interval. This
one is the same transport -- same tables, same SQL, same commit before ``send_task`` returns,
so an enqueued task survives a crash exactly as before -- with two changes:

* a publisher, once its message is committed, wakes every worker of the broker file
  (:func:`store.wake.wake_all`), and
* a consuming worker sleeps on its wake-up socket (:class:`store.wake.WakeListener`) instead
  of :func:`time.sleep`, and polls when woken, when it has just acknowledged a task (it can
  take the next one), or when ``polling_interval`` has passed since its last empty poll --
  kept as the fallback for a lost wake-up, and honoured even beyond the 2 s Celery's loop
  asks ``drain_events`` to return after.

:func:`store.broker.make_celery` selects it for ``sqla+sqlite:///`` broker URLs.
"""

from __future__ import annotations

from pathlib import Path
from time import monotonic
from typing import Any

from kombu.transport import sqlalchemy as kombu_sqla
from kombu.transport.virtual import Empty
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url

from store.wake import WakeListener, wake_all, wake_dir

ENGINE_OPTIONS = ("connect_args",)
"""The transport options handed to SQLAlchemy's ``create_engine`` (the rest are kombu's)."""


def broker_file(url: str) -> Path | None:
    """The SQLite file of the SQLAlchemy URL ``url`` (``sqlite:///…``); None when in memory."""
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


def _write_ahead_log(dbapi_conn: Any, _record: Any) -> None:
    """WAL with ``synchronous=FULL``, as the job store: a commit is still on disk when it
    returns (the WAL is fsynced), with one fsync where the default rollback journal takes
    three -- about half of a publish's time, and of a poll's that finds a task."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.close()


class Channel(kombu_sqla.Channel):
    """kombu's SQLAlchemy channel, waking the workers after each stored message."""

    connection: Transport
    _engines: dict[str, Any] = {}  # noqa: RUF012  # kombu's cache, but of engines made here
    """Engines by URL: not shared with the stock channel, whose engines lack the WAL."""

    def _engine_from_config(self) -> Any:
        conninfo = self.connection.client
        assert conninfo is not None
        options = {k: v for k, v in conninfo.transport_options.items() if k in ENGINE_OPTIONS}
        engine = create_engine(conninfo.hostname, **options)
        event.listen(engine, "connect", _write_ahead_log)
        return engine

    # kombu names the message "message" in its base class and "payload" here.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super()._put(queue, payload, **kwargs)  # committed (or raised) here
        self.connection.wake_workers()

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple=multiple)
        self.connection.poll_soon()  # a slot is free: a waiting task can be taken at once

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue=requeue)
        self.connection.poll_soon()


class Transport(kombu_sqla.Transport):
    """kombu's SQLAlchemy transport whose consumers sleep on a wake-up socket between polls."""

    Channel = Channel

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        path = broker_file(client.hostname)
        self._wake_dir = wake_dir(path) if path is not None else None
        self._listener: WakeListener | None = None
        self._next_poll = 0.0

    def wake_workers(self) -> None:
        """Wake every worker of this broker file (after a message was stored)."""
        if self._wake_dir is not None:
            wake_all(self._wake_dir)

    def poll_soon(self) -> None:
        """Make the consuming loop poll at once (from any thread of this process)."""
        self._next_poll = 0.0
        if self._listener is not None:
            self._listener.wake()

    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> None:
        """Deliver one message; between polls, sleep until a wake-up or the poll interval.

        Raises :class:`TimeoutError` (``socket.timeout``) when ``timeout`` seconds pass
        without a message, as kombu's virtual transport does.
        """
        if self._listener is None:
            self._listener = WakeListener(self._wake_dir)
        assert self.cycle is not None  # made by the channel that consumes
        started = monotonic()
        deadline = None if timeout is None else started + timeout
        while True:
            now = monotonic()
            if now >= self._next_poll:
                self._next_poll = now + self.polling_interval
                try:
                    self.cycle.get(self._deliver, timeout=timeout)
                except Empty:
                    pass
                else:
                    self._next_poll = 0.0  # more may wait behind it
                    return
                now = monotonic()
            if deadline is not None and now >= deadline:
                raise TimeoutError  # socket.timeout, which Celery's loop expects
            until = self._next_poll if deadline is None else min(self._next_poll, deadline)
            if self._listener.wait(until - now):
                self._next_poll = 0.0
            elif deadline is not None and monotonic() >= deadline:
                raise TimeoutError  # slept to the deadline: the next call polls if due

    def close_connection(self, connection: Any) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        super().close_connection(connection)
