"""The node's own audit log: one JSON object per line in ``log_dir/audit.log``.

Apart from the application log, so that a security review can read (and a SIEM can ingest)
access decisions and what people did without the noise of processing messages, and so that
rotating or shipping one never loses the other. Two line shapes, as ``docs/security.md`` shows:

- the listener's decisions (``event`` ``association``: outcome ``accepted`` or ``rejected``;
  ``tls_handshake``: ``rejected``, AE titles ``null``)::

    {"time": "2026-11-27T14:05:31.123456+00:00", "event": "association",
     "calling_ae": "INTRUDER", "called_ae": "DEEPCOVID", "peer_address": "10.0.0.7",
     "peer_port": 51234, "outcome": "rejected", "reason": "calling AE title not allowed"}

- what people did (``login``, ``logout``, ``action``, ``user``), ``via`` ``console`` or ``cli``::

    {"time": "...", "event": "action", "user": "alice", "role": "admin", "via": "console",
     "peer_address": "10.0.0.9", "outcome": "accepted", "action": "reanalyse",
     "target": "1.2.826.0.1.3680043.8.498.1", "reason": "job 12 queued for analysis again"}

Instances received or sent, deleted studies and the listener's start and stop are not written
here (they are in the job store's timeline, and go to the DICOM audit trail): this file holds no
patient data, only AE titles, addresses, user names, UIDs and fixed reasons.

The log has its own :class:`logging.Logger` outside the logging hierarchy (``propagate`` off),
so nothing written here reaches the application log's handlers and vice versa. The file is
created with mode 0600 and rotated at 20 MB (10 files kept).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
from pathlib import Path
from typing import Any

from audit import events as ev

FILE_NAME = "audit.log"
FILE_MODE = 0o600
MAX_BYTES = 20_000_000
BACKUP_COUNT = 10


def json_line(event: ev.AuditEvent) -> dict[str, Any] | None:
    """The JSON object this log writes for ``event``, or None for events it does not record."""
    time = event.time.isoformat()
    match event:
        case ev.AssociationAccepted() | ev.AssociationRejected():
            rejected = isinstance(event, ev.AssociationRejected)
            return {
                "time": time,
                "event": "association",
                "calling_ae": event.calling_ae,
                "called_ae": event.called_ae,
                "peer_address": event.peer_address,
                "peer_port": event.peer_port,
                "outcome": "rejected" if rejected else "accepted",
                "reason": event.reason if isinstance(event, ev.AssociationRejected) else "",
            }
        case ev.TlsHandshakeFailed():
            return {
                "time": time,
                "event": "tls_handshake",
                "calling_ae": None,
                "called_ae": None,
                "peer_address": event.peer_address,
                "peer_port": event.peer_port,
                "outcome": "rejected",
                "reason": event.reason,
            }
        case ev.LoginSucceeded():
            return _person(event, "login", event.user, event.role, event.via, event.peer_address)
        case ev.LoginFailed():
            return _person(
                event, "login", event.user, None, event.via, event.peer_address,
                outcome="rejected", reason=event.reason,
            )  # fmt: skip
        case ev.LoggedOut():
            return _person(event, "logout", event.user, event.role, event.via, event.peer_address)
        case ev.UserAction():
            return _person(
                event, "action", event.user, event.role, event.via, event.peer_address,
                outcome="accepted" if event.accepted else "rejected",
                action=event.action, target=event.target, reason=event.reason,
            )  # fmt: skip
        case ev.AccountChanged():
            return _person(
                event, "user", event.user, None, event.via, None,
                action=event.action, target=event.account, reason=event.reason,
            )  # fmt: skip
    return None


def _person(
    event: ev.AuditEvent,
    name: str,
    user: str,
    role: str | None,
    via: str,
    peer_address: str | None,
    *,
    outcome: str = "accepted",
    action: str | None = None,
    target: str | None = None,
    reason: str = "",
) -> dict[str, Any]:
    return {
        "time": event.time.isoformat(),
        "event": name,
        "user": user,
        "role": role,
        "via": via,
        "peer_address": peer_address,
        "outcome": outcome,
        "action": action,
        "target": target,
        "reason": reason,
    }


class JsonLogSink:
    """Appends audit lines to one file; thread-safe (pynetdicom calls from many threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file owner-only before the handler opens it (its mode follows the umask).
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE))
        self._handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        # A Logger made directly is not registered with logging.getLogger: no parent, no
        # configuration by others; each sink writes to its own file only.
        self._logger = logging.Logger("deepcovid.audit", logging.INFO)
        self._logger.propagate = False
        self._logger.addHandler(self._handler)

    @classmethod
    def in_dir(cls, log_dir: Path) -> JsonLogSink:
        """The audit log in ``log_dir`` (``audit.log``)."""
        return cls(log_dir / FILE_NAME)

    def write(self, event: ev.AuditEvent) -> None:
        """Append the event's line, if this log records it."""
        line = json_line(event)
        if line is not None:
            self._logger.info(json.dumps(line, ensure_ascii=True))

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Lines are written as they come; flush the file's buffer."""
        del timeout_s
        self._handler.flush()
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush and close the file."""
        del timeout_s
        self._logger.removeHandler(self._handler)
        self._handler.close()

    def __repr__(self) -> str:
        return f"JsonLogSink({self.path})"


def read_events(path: Path) -> list[dict[str, object]]:
    """Every line of an audit file, in order (for tests and tools)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
