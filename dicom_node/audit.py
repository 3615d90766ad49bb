"""The audit log of the listener: who tried to associate, when, and what became of it.

One JSON object per line in ``log_dir/audit.log``, apart from the application log, so that a
security review can read (and a SIEM can ingest) access decisions without the noise of
processing messages, and so that rotating or shipping one never loses the other::

    {"time": "2026-11-27T14:05:31.123456+00:00", "event": "association",
     "calling_ae": "INTRUDER", "called_ae": "DEEPCOVID", "peer_address": "10.0.0.7",
     "peer_port": 51234, "outcome": "rejected", "reason": "calling AE title not allowed"}

``event`` is ``association`` (outcome ``accepted`` or ``rejected``) or ``tls_handshake``
(outcome ``rejected``: the peer did not complete DICOM TLS, e.g. no or an untrusted client
certificate; its AE titles are then unknown, ``null``). Lines carry AE titles, addresses and
fixed reasons only -- never patient data, which no association request contains.

People are audited too (:meth:`AuditLog.record_user`): ``login`` (``accepted``, or ``rejected``
for a wrong name or password, or too many attempts), ``logout``, and ``action`` (re-analyse,
resend, retry deliveries, model activation; ``rejected`` when refused: a viewer's attempt, a
missing CSRF token) from the operator console (``via`` ``console``) or the command line
(``cli``), and ``user`` (``deepcovid users add | remove``)::

    {"time": "...", "event": "action", "user": "alice", "role": "admin", "via": "console",
     "peer_address": "10.0.0.9", "outcome": "accepted", "action": "reanalyse",
     "target": "1.2.826.0.1.3680043.8.498.1", "reason": "job 12 queued for analysis again"}

``target`` is a SOP Instance UID, a model version or a user name, never patient data.

The log has its own :class:`logging.Logger` outside the logging hierarchy (``propagate`` off),
so nothing written here reaches the application log's handlers and vice versa. The file is
created with mode 0600 and rotated at 20 MB (10 files kept).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import os
from pathlib import Path
from typing import Literal

FILE_NAME = "audit.log"
FILE_MODE = 0o600
Outcome = Literal["accepted", "rejected"]


class AuditLog:
    """Appends audit events to one file; thread-safe (pynetdicom calls from many threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file owner-only before the handler opens it (its mode follows the umask).
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE))
        self._handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=20_000_000, backupCount=10, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        # A Logger made directly is not registered with logging.getLogger: no parent, no
        # configuration by others; each AuditLog writes to its own file only.
        self._logger = logging.Logger("deepcovid.audit", logging.INFO)
        self._logger.propagate = False
        self._logger.addHandler(self._handler)

    @classmethod
    def in_dir(cls, log_dir: Path) -> AuditLog:
        """The audit log in ``log_dir`` (``audit.log``)."""
        return cls(log_dir / FILE_NAME)

    def record(
        self,
        event: str,
        *,
        outcome: Outcome,
        reason: str = "",
        calling_ae: str | None = None,
        called_ae: str | None = None,
        peer_address: str | None = None,
        peer_port: int | None = None,
    ) -> None:
        """Write one event line (``time`` is now, UTC, ISO 8601)."""
        line = {
            "time": dt.datetime.now(dt.UTC).isoformat(),
            "event": event,
            "calling_ae": calling_ae,
            "called_ae": called_ae,
            "peer_address": peer_address,
            "peer_port": peer_port,
            "outcome": outcome,
            "reason": reason,
        }
        self._logger.info(json.dumps(line, ensure_ascii=True))

    def record_user(
        self,
        event: str,
        *,
        outcome: Outcome,
        user: str | None,
        via: str,
        role: str | None = None,
        action: str | None = None,
        target: str | None = None,
        reason: str = "",
        peer_address: str | None = None,
    ) -> None:
        """Write one line about what a person did: ``login``, ``logout``, ``action``, ``user``."""
        line = {
            "time": dt.datetime.now(dt.UTC).isoformat(),
            "event": event,
            "user": user,
            "role": role,
            "via": via,
            "peer_address": peer_address,
            "outcome": outcome,
            "action": action,
            "target": target,
            "reason": reason,
        }
        self._logger.info(json.dumps(line, ensure_ascii=True))

    def close(self) -> None:
        """Flush and close the file."""
        self._logger.removeHandler(self._handler)
        self._handler.close()


def read_events(path: Path) -> list[dict[str, object]]:
    """Every event of an audit file, in order (for tests and tools)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
