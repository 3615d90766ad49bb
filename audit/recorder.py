"""One ``record(event)`` that hands every audit event to the sinks configured at start-up.

A service configures its process once, where it reads its settings (:func:`configure`: the log
folder, the syslog collector and its TLS context -- plain values, never the app's settings);
from then on every audit site calls :func:`record` with one event of :mod:`audit.events`:

    from audit import record
    from audit.events import LoginFailed

    record(LoginFailed(user=name, peer_address=client_ip, reason="wrong user name or password"))

Recording never raises and never blocks on the network: a sink that fails is logged (it is a
bug, or a full disk), and the syslog sink queues. Before :func:`configure`, and in a process
that audits nothing, events go nowhere.

Components that may run more than once in one process with different audit trails (a test's
listeners) take a :class:`Recorder` of their own instead (:func:`open_recorder`).
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from ssl import SSLContext

from audit.events import AuditEvent
from audit.sinks import Sink
from audit.sinks.json_log import JsonLogSink
from audit.sinks.syslog import SyslogSink
from common.syslog import Protocol

log = logging.getLogger(__name__)

EXIT_FLUSH_S = 2.0
"""How long a process that ends waits for queued audit messages to leave."""


class Recorder:
    """Fans each event out to its sinks, in order; thread-safe as the sinks are."""

    def __init__(self, sinks: Sequence[Sink] = ()) -> None:
        self.sinks = tuple(sinks)

    def record(self, event: AuditEvent) -> None:
        """Give ``event`` to every sink; a sink's failure is logged, not raised."""
        for sink in self.sinks:
            try:
                sink.write(event)
            except Exception:
                log.exception("audit event %s could not be written to %r", event.name, sink)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every sink has sent what it holds; False if one took longer."""
        return all([sink.flush(timeout_s) for sink in self.sinks])

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush and release every sink (each for up to ``timeout_s``)."""
        for sink in self.sinks:
            try:
                sink.close(timeout_s)
            except Exception:
                log.exception("audit sink %r did not close cleanly", sink)

    def __repr__(self) -> str:
        return f"Recorder({', '.join(map(repr, self.sinks)) or 'nowhere'})"


def open_recorder(
    *,
    ae_title: str,
    log_dir: Path | None = None,
    syslog_host: str | None = None,
    syslog_port: int | None = None,
    syslog_protocol: Protocol = "tls",
    ssl_context: SSLContext | None = None,
) -> Recorder:
    """A recorder writing the JSON audit log in ``log_dir`` (when given) and sending DICOM
    audit messages to ``syslog_host`` (when given; ``ssl_context`` for ``tls``; the port
    defaults to 514 for udp and tcp, 6514 for tls). ``ae_title`` names this node in them."""
    sinks: list[Sink] = []
    if log_dir is not None:
        sinks.append(JsonLogSink.in_dir(log_dir))
    if syslog_host:
        sinks.append(
            SyslogSink(
                syslog_host,
                syslog_port,
                syslog_protocol,
                ae_title=ae_title,
                ssl_context=ssl_context if syslog_protocol == "tls" else None,
            )
        )
    return Recorder(sinks)


_lock = threading.Lock()
_current = Recorder()
_exit_hook = False


def configure(recorder: Recorder) -> Recorder:
    """Make this process record with ``recorder`` (from :func:`open_recorder`) from now on.

    Replaces (and closes) the recorder configured before. What is still queued when the
    process ends is sent for up to :data:`EXIT_FLUSH_S` first.
    """
    global _current, _exit_hook
    with _lock:
        previous, _current = _current, recorder
        if not _exit_hook:
            atexit.register(close, EXIT_FLUSH_S)
            _exit_hook = True
    previous.close(EXIT_FLUSH_S)
    log.info("audit events go to %r", recorder)
    return recorder


def current() -> Recorder:
    """This process's recorder (one that records nothing before :func:`configure`)."""
    return _current


def record(event: AuditEvent) -> None:
    """Record ``event`` with this process's recorder."""
    _current.record(event)


def close(timeout_s: float = EXIT_FLUSH_S) -> None:
    """Flush and close this process's sinks; later events go nowhere.

    For process ends that skip ``atexit`` (a Celery pool child ends with ``os._exit``).
    """
    global _current
    with _lock:
        closing, _current = _current, Recorder()
    closing.close(timeout_s)
