"""Start-up steps shared by every service (umask, folders, logging, the audit trail, database
schema, broker queue), and stopping a service started as a child process (``serve``'s worker,
``demo``'s service)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess

import audit
from audit.events import StudyDeleted, count_sop_classes
from common.logs import setup_logging
from common.settings import Settings
from store.broker import declare_queue
from store.migrate import upgrade

UMASK = 0o077
"""Files and folders a service creates are its owner's only (0600 / 0700): received images,
results, logs and the job store all concern patients."""


def prepare(settings: Settings, service: str) -> None:
    """Umask, folders, logging, the audit trail, the job-store schema and the embedded broker's
    queue, in that order, before a service runs."""
    os.umask(UMASK)
    settings.storage.ensure_dirs()
    setup_logging(service, level=settings.monitoring.log_level, log_dir=settings.storage.logs)
    configure_audit(settings)
    revision = upgrade(settings.storage.db_url)
    logging.getLogger(__name__).info("%s: job store at revision %s", service, revision)
    declare_queue(settings.storage.broker)


def configure_audit(settings: Settings) -> None:
    """Send this process's audit events to the JSON audit log and, when
    ``audit.syslog_host`` is set, to that Audit Record Repository (:mod:`audit`)."""
    protocol = settings.audit.syslog_protocol
    audit.configure(
        audit.open_recorder(
            ae_title=settings.listener.ae_title,
            log_dir=settings.storage.log_dir,
            syslog_host=settings.audit.syslog_host,
            syslog_port=settings.audit.syslog_port,
            syslog_protocol=protocol,
            ssl_context=settings.tls.client_context()
            if settings.audit.syslog_host and protocol == "tls"
            else None,
        )
    )


def audit_purged(study_instance_uid: str, sop_class_uids: list[str]) -> None:
    """Retention removed a job's files: a deleted-study audit event (``on_purged`` of
    :func:`store.lifecycle.purge_expired`; the files that held the Patient ID are gone)."""
    audit.record(
        StudyDeleted(
            study_instance_uid=study_instance_uid,
            sop_classes=count_sop_classes(sop_class_uids),
            patient_id=None,
        )
    )


def stop_process_group(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """SIGTERM a child's process group (Celery's warm shutdown), SIGKILL it after ``grace_s``.

    The child must have been started with ``start_new_session=True``: its group is then its
    own, and stopping it reaches its children (Celery's pool) without touching ours.
    """
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
