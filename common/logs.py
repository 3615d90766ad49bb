"""Logging for every service: escaped lines to stderr and a rotated file, quiet libraries."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import ClassVar

LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


class SafeFormatter(logging.Formatter):
    """Escapes control characters, so text a sender controls (an AE title with an ESC
    sequence, say) cannot forge log lines or drive a terminal."""

    _table: ClassVar[dict[int, str]] = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F] if c != 0x0A}

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).translate(self._table)


def setup_logging(service: str, *, level: str, log_dir: Path) -> None:
    """Log at ``level`` (``"INFO"``, any case) to stderr and to ``log_dir/<service>.log``
    (rotated). Messages carry UIDs only."""
    root = logging.getLogger()
    if getattr(root, "_deepcovid_configured", False):
        return
    root.setLevel(level.upper())
    formatter = SafeFormatter(LOG_FORMAT)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    root.addHandler(stream)
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = log_dir / f"{service}.log"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # owner-only file
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=20_000_000, backupCount=5)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # a line per copied module
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a line per migration plugin
    logging.getLogger("uvicorn").setLevel(logging.WARNING)  # the node announces its server
    # pydicom's validation warnings quote values a sender chose (UIDs, names): don't read them
    # with validation; the listener validates what it needs itself and logs UIDs only.
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    root._deepcovid_configured = True  # type: ignore[attr-defined]
