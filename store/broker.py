"""The Celery application both services share: broker from settings, at-least-once delivery.

The listener publishes through it (:mod:`store.queue`) and the worker runs it
(:mod:`worker.tasks` registers the task under :data:`common.tasks.ANALYSE_TASK`); the app names
the worker's task module as a string, so importing it imports no worker code.

``acks_late`` + ``reject_on_worker_lost`` + prefetch 1 make a task message stay with the broker
until the task has finished, so a worker that dies hands its task back. The job store, not the
broker, is the final record: :mod:`store.recovery` re-enqueues any job the broker lost.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from celery import Celery
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError, OperationalError

from common.settings import Settings, get_settings
from common.tasks import ANALYSIS_QUEUE

EMBEDDED = "sqla+sqlite:///"
"""Broker URLs of the embedded default: kombu's SQLAlchemy transport on a SQLite file."""
EMBEDDED_TRANSPORT = "store.broker_transport:Transport"
"""The kombu transport the embedded broker's URLs get (:mod:`store.broker_transport`)."""


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured from ``settings``.

    An embedded broker (``sqla+sqlite:///``) gets :mod:`store.broker_transport`: a publisher
    wakes the workers, who otherwise poll every ``worker.broker_poll_s``.
    """
    broker = settings.storage.broker
    url, transport = broker, None
    options = _transport_options(broker)
    if broker.startswith(EMBEDDED):
        settings.storage.data_dir.mkdir(parents=True, exist_ok=True)
        # The same tables through kombu's SQLAlchemy transport, with wake-ups between polls.
        url, transport = broker.removeprefix("sqla+"), EMBEDDED_TRANSPORT
        options["polling_interval"] = settings.worker.broker_poll_s
    app = Celery("deepcovid", broker=url, include=["worker.tasks"])
    app.conf.update(
        broker_transport=transport,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=ANALYSIS_QUEUE,
        task_default_delivery_mode="persistent",
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options=options,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # A broker that goes away must not kill the analyses running: Celery's cancelling
        # terminates the pool child, possibly mid-delivery (results stored, outbox not yet
        # marked). The task finishes instead; its unacknowledged message comes back later and
        # finds the job finished (the claim is compare-and-set), so it does nothing.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
    )
    return app


def _transport_options(broker: str) -> dict[str, object]:
    """Per-transport options: kombu's SQLAlchemy transport hands them to ``create_engine``."""
    if broker.startswith("sqla+sqlite"):
        # Several processes share the SQLite file: wait for its lock instead of failing.
        return {"connect_args": {"timeout": 30}}
    if broker.startswith("sqla+"):
        return {}
    # Redis: a task a dead worker held comes back after an hour at the latest; the job
    # store's lease brings it back sooner.
    return {"visibility_timeout": 3600}


def declare_queue(broker: str, *, attempts: int = 10) -> None:
    """Create the analysis queue in an SQLAlchemy broker (the embedded default) before a service
    starts; other brokers: nothing to do.

    kombu's SQLAlchemy transport creates its tables and a queue's row lazily, check then insert,
    guarded by a lock of one process only. The node and a worker starting together on a fresh
    data folder can both insert: the loser's INSERT fails on the queue name's UNIQUE constraint
    (or its CREATE TABLE on the table the other just made), and a Celery worker that meets this
    while starting exits with "Unrecoverable error" (seen once in CI). Declared here first, with
    a retry that then finds the row, there is nothing left for kombu to create.
    """
    if not broker.startswith("sqla+"):
        return
    from kombu import Connection

    for attempt in range(1, attempts + 1):
        try:
            with Connection(broker, transport_options=_transport_options(broker)) as conn:
                conn.default_channel.queue_declare(queue=ANALYSIS_QUEUE)
            return
        except (IntegrityError, OperationalError):
            if attempt == attempts:
                raise
            time.sleep(0.05 * attempt)  # the other process's row or table is there by then


CONSUMED_KEPT_S = 3600.0
"""How long a consumed message of the SQLAlchemy transport is kept before it is deleted."""
PRUNE_INTERVAL_S = 3600.0

log = logging.getLogger(__name__)


def prune_consumed(broker: str, *, older_than_s: float = CONSUMED_KEPT_S) -> int:
    """Delete the task messages kombu's SQLAlchemy transport has handed out; returns how many.

    That transport (the embedded default, ``sqla+sqlite:///``) marks a message it hands to a
    worker ``visible = false`` and never deletes it (celery/kombu#276), so its file grows by
    about 1 KiB per job forever (measured by ``benchmarks/bench_soak.py``). Such a message is
    never delivered again -- the transport has no redelivery; the job store's reconciler
    re-enqueues a job whose worker died -- so deleting it loses nothing. Only messages consumed
    more than ``older_than_s`` ago go (kombu stamps the row's ``timestamp``, local time, when it
    hides it). Other brokers: nothing to do, 0.
    """
    if not broker.startswith("sqla+"):
        return 0
    engine = create_engine(broker.removeprefix("sqla+"), hide_parameters=True)
    try:
        with engine.begin() as conn:
            if not inspect(conn).has_table("kombu_message"):
                return 0
            cutoff = dt.datetime.now() - dt.timedelta(seconds=older_than_s)
            result = conn.execute(
                text(
                    "DELETE FROM kombu_message WHERE visible = :hidden "
                    "AND (timestamp IS NULL OR timestamp < :cutoff)"
                ),
                {"hidden": False, "cutoff": cutoff},
            )
            return int(result.rowcount)
    finally:
        engine.dispose()


def start_broker_pruner(broker: str, *, interval_s: float = PRUNE_INTERVAL_S) -> threading.Event:
    """Run :func:`prune_consumed` now and every ``interval_s`` in a daemon thread (SQLAlchemy
    brokers only); returns an event that stops the loop when set."""
    stop = threading.Event()
    if not broker.startswith("sqla+"):
        return stop

    def loop() -> None:
        while not stop.is_set():
            try:
                removed = prune_consumed(broker)
                if removed:
                    log.info("broker: %d consumed task message(s) deleted", removed)
            except Exception as exc:  # the broker's database is away: try again next time
                log.warning("broker pruning failed: %s", type(exc).__name__)
            stop.wait(interval_s)

    threading.Thread(target=loop, name="broker-pruner", daemon=True).start()
    return stop


_apps: dict[str, Celery] = {}


def get_app(settings: Settings | None = None) -> Celery:
    """The app for the current settings' broker (one per broker URL, made on first use).

    Publishers use this rather than the module-level ``app`` so a process whose settings
    change (tests, tools) never publishes to a stale broker.
    """
    settings = settings or get_settings()
    if settings.storage.broker not in _apps:
        _apps[settings.storage.broker] = make_celery(settings)
    return _apps[settings.storage.broker]
