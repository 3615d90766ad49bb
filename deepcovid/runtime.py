"""Start-up steps shared by every service: logging, folders, database schema, recovery."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from deepcovid.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
UMASK = 0o077
"""Files and folders a service creates are its owner's only (0600 / 0700): received images,
results, logs and the job store all concern patients."""


def setup_logging(settings: Settings, service: str) -> None:
    """Log to stderr and to ``log_dir/<service>.log`` (rotated). Messages carry UIDs only."""
    root = logging.getLogger()
    if getattr(root, "_deepcovid_configured", False):
        return
    root.setLevel(settings.log_level.upper())
    formatter = logging.Formatter(LOG_FORMAT)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    root.addHandler(stream)
    assert settings.log_dir is not None
    settings.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = settings.log_dir / f"{service}.log"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # owner-only file
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=20_000_000, backupCount=5)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    root._deepcovid_configured = True  # type: ignore[attr-defined]


def prepare(settings: Settings, service: str) -> None:
    """Umask, folders, logging and the job-store schema, in that order, before a service runs."""
    os.umask(UMASK)
    settings.ensure_dirs()
    setup_logging(settings, service)
    from worker.store.migrate import upgrade

    revision = upgrade(settings.db_url)
    logging.getLogger(__name__).info("%s: job store at revision %s", service, revision)
