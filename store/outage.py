"""A job store that does not answer, as the node's background loops report it.

The dispatcher and the reconciler run every second or two; while the database restarts (or is
away for longer) each run fails. A traceback per run buries the log -- a thousand lines for a
five-second PostgreSQL restart -- so they say it once when the store stops answering, stay
quiet (debug) while it is away, and say once when it answers again. Other errors keep their
tracebacks.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

UNREACHABLE_ERRORS: tuple[type[DBAPIError], ...] = (OperationalError, InterfaceError)
"""What the database driver raises when the server is down, restarting or unreachable
(SQLite: locked or unreadable); the next run may well succeed."""


def describe(exc: BaseException) -> str:
    """The driver's first line (``connection refused``, ``database is locked``), without the
    statement and its parameters that SQLAlchemy appends (they may hold UIDs and accession
    numbers)."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(cause).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(cause).__name__}: {first[:200]}" if first else type(cause).__name__


class OutageLog:
    """Logs the start and the end of a job store outage seen by one background loop."""

    def __init__(self, log: logging.Logger, loop: str) -> None:
        self.log = log
        self.loop = loop
        self.down = False

    def failed(self, exc: BaseException) -> None:
        """A run failed with one of :data:`UNREACHABLE_ERRORS`."""
        if self.down:
            self.log.debug("%s: job store still unreachable: %s", self.loop, describe(exc))
            return
        self.down = True
        self.log.warning(
            "%s: job store unreachable (%s); trying again on every run until it answers",
            self.loop,
            describe(exc),
        )

    def succeeded(self) -> None:
        """A run completed: the end of an outage, if there was one."""
        if self.down:
            self.down = False
            self.log.warning("%s: job store reachable again", self.loop)
