"""Start-up steps shared by every service: logging, folders, database schema, recovery."""

from __future__ import annotations

import logging
import logging.handlers
import sys

from deepcovid.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


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
    handler = logging.handlers.RotatingFileHandler(
        settings.log_dir / f"{service}.log", maxBytes=20_000_000, backupCount=5
    )
    handler.setFormatter(formatter)
    root.addHandler(handler)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    root._deepcovid_configured = True  # type: ignore[attr-defined]


def prepare(settings: Settings, service: str) -> None:
    """Folders, logging and the job-store schema, in that order, before a service runs."""
    settings.ensure_dirs()
    setup_logging(settings, service)
    from worker.store.migrate import upgrade

    revision = upgrade(settings.db_url)
    logging.getLogger(__name__).info("%s: job store at revision %s", service, revision)
