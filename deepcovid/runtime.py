"""Start-up steps shared by every service: umask, folders, logging, database schema."""

from __future__ import annotations

import logging
import os

from common.logs import setup_logging
from common.settings import Settings
from store.migrate import upgrade

UMASK = 0o077
"""Files and folders a service creates are its owner's only (0600 / 0700): received images,
results, logs and the job store all concern patients."""


def prepare(settings: Settings, service: str) -> None:
    """Umask, folders, logging and the job-store schema, in that order, before a service runs."""
    os.umask(UMASK)
    settings.ensure_dirs()
    setup_logging(settings, service)
    revision = upgrade(settings.db_url)
    logging.getLogger(__name__).info("%s: job store at revision %s", service, revision)
