"""``deepcovid serve | node | worker``: run the listener, the worker, or both."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from typing import Any

from common.errors import UsageError
from common.redact import redact_url
from common.settings import Settings, get_settings
from deepcovid.runtime import audit_purged, prepare, stop_process_group


def register(subparsers: Any) -> None:
    """Add ``serve``, ``node`` and ``worker``."""
    p = subparsers.add_parser(
        "serve",
        help="run the DICOM listener and a worker on this machine (embedded defaults)",
        description="Start the DICOM listener in this process and worker process(es) beside it.",
    )
    p.set_defaults(func=cmd_serve)
    p = subparsers.add_parser("node", help="run the DICOM listener (C-ECHO/C-STORE SCP) only")
    p.set_defaults(func=cmd_node)
    p = subparsers.add_parser("worker", help="run a Celery analysis worker only")
    p.add_argument("--concurrency", type=int, default=None, help="worker processes")
    p.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        metavar="PID",
        help="stop when process PID dies, and hold the data folder's serve-worker lock "
        "(how `serve` starts its worker)",
    )
    p.set_defaults(func=cmd_worker)


def _banner(settings: Settings) -> None:
    """Where everything is, and how a newcomer sends a first image and finds its results."""
    listener, storage = settings.listener, settings.storage
    dest = settings.delivery.destination or f"local folder {storage.results}"
    host = "localhost" if listener.bind_address in {"0.0.0.0", "::"} else listener.bind_address
    print(
        f"deepcovid-node: listening as {listener.ae_title} on "
        f"{listener.bind_address}:{listener.port}\n"
        f"  job store: {redact_url(storage.db_url)}\n  broker:    {redact_url(storage.broker)}\n"
        f"  spool:     {storage.spool}\n  results:   {dest}\n"
        f"  send:      deepcovid send FILE|DIR --to {listener.ae_title}@{host}:{listener.port}"
        f"   (storescu: -xv / -xw for JPEG 2000 files)\n"
        f"  then:      deepcovid jobs list; deepcovid jobs show UID",
        flush=True,
    )


def _start_background(settings: Settings) -> None:
    """The node's loops: re-enqueue what was left unfinished; deliver what is due; issue the
    result of each study that has settled; serve the health and metrics endpoints; remove files
    past ``storage.retention_days``; delete the embedded broker's consumed task messages."""
    from dicom_node.ops.server import start_monitoring
    from store.broker import start_broker_pruner
    from store.lifecycle import start_purger
    from store.outbox import Outbox
    from store.queue import default_store, enqueue_analysis
    from store.recovery import start_reconciler
    from worker.delivery import start_dispatcher
    from worker.study.watcher import start_study_watcher

    start_monitoring(settings)
    start_dispatcher(Outbox(default_store()), settings)
    start_study_watcher(default_store(), settings)
    start_reconciler(
        default_store(),
        enqueue_analysis,
        interval_s=settings.worker.reconcile_interval_s,
        analysis_lease_s=settings.worker.analysis_lease_s,
    )
    start_broker_pruner(settings.storage.broker)
    start_purger(
        default_store(),
        retention_days=settings.storage.retention_days,
        spool_dir=settings.storage.spool,
        results_dir=settings.storage.results,
        on_purged=audit_purged,
    )


def cmd_node(args: argparse.Namespace) -> int:
    """Run the listener in the foreground until interrupted."""
    settings = get_settings()
    prepare(settings, "node")
    _start_background(settings)
    _banner(settings)
    from dicom_node.scp import serve_forever

    serve_forever(settings)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker in the foreground until interrupted."""
    settings = get_settings()
    concurrency = settings.worker.concurrency if args.concurrency is None else args.concurrency
    if concurrency < 1:
        raise UsageError(f"worker concurrency {concurrency} is below 1", "give 1 or more")
    lock = None
    if args.parent_pid is not None:
        from common.lifeline import exit_with_parent
        from common.pidlock import SERVE_WORKER_LOCK, PidLock

        exit_with_parent(args.parent_pid)  # never outlive `serve`, however it ends
        settings.storage.ensure_dirs()
        lock = PidLock(settings.storage.data_dir / SERVE_WORKER_LOCK)
        if not lock.acquire():
            holder = lock.holder()
            print(f"deepcovid worker: {lock.path} is held by process {holder}", file=sys.stderr)
            return 1
    prepare(settings, "worker")
    from common.tasks import ANALYSIS_QUEUE
    from worker.celery_app import app

    app.worker_main(
        [
            "worker",
            f"--loglevel={settings.monitoring.log_level}",
            f"--concurrency={concurrency}",
            f"--queues={ANALYSIS_QUEUE}",
            "--without-gossip",
            "--without-mingle",
            f"--hostname=deepcovid-{os.getpid()}@%h",
        ]
    )
    del lock  # held (open) until the worker has stopped
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The listener here and a worker in a child process; stop both on SIGINT/SIGTERM.

    One ``serve`` per data folder (``serve.lock``); a worker an earlier ``serve`` left running
    is stopped first (``serve-worker.lock``), and the worker started here stops by itself if
    this process dies (``--parent-pid``), so there is always exactly one.
    """
    settings = get_settings()
    prepare(settings, "node")
    from common.pidlock import SERVE_LOCK, SERVE_WORKER_LOCK, PidLock, stop_holder

    serve_lock = PidLock(settings.storage.data_dir / SERVE_LOCK)
    if not serve_lock.acquire():
        print(
            f"deepcovid serve: another serve (process {serve_lock.holder()}) is running on "
            f"{settings.storage.data_dir}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    orphan = stop_holder(PidLock(settings.storage.data_dir / SERVE_WORKER_LOCK))
    if orphan is not None:
        logging.getLogger(__name__).warning(
            "stopped worker process %s left running by an earlier serve", orphan
        )
    # Its own process group, so stopping it reaches Celery's pool children too.
    worker = subprocess.Popen(
        [sys.executable, "-m", "deepcovid.cli", "worker", "--parent-pid", str(os.getpid())],
        start_new_session=True,
    )

    def _stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    _start_background(settings)
    _banner(settings)
    from dicom_node.scp import serve_forever

    try:
        serve_forever(settings)
    except KeyboardInterrupt:
        pass
    finally:
        stop_process_group(worker)
        serve_lock.release()
    return 0
