"""One error handler for the command lines (``deepcovid ...`` and ``python -m training ...``).

Errors a user can fix end as one line, ``<command>: <problem>; <fix>``, and a non-zero status (2
for a wrong argument, 1 for an environment that is not right): :func:`user_error` says which
exceptions those are. Anything else is a bug and keeps its traceback, and so do user errors when
debugging is asked for (``--debug`` on the line, or ``DEEPCOVID_LOG_LEVEL=DEBUG``).

Standard library only at import time: the training machines run ``python -m training`` without
the service's dependencies.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Sequence

from common.errors import UserError

DEBUG_FLAG = "--debug"
"""Shows the traceback of user errors; may stand anywhere on the command line."""


def user_error(exc: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit status of an error the user can fix; None for a bug.

    Besides :class:`common.errors.UserError`: invalid settings, a missing or unreadable file
    named on the command line, a model registry that cannot serve the version asked for, a
    database that cannot be reached, and a port that is taken. Classes of libraries a command
    never imported cannot have been raised, so they are looked up in ``sys.modules`` rather than
    imported here (the CLI would otherwise load PyTorch to print an error).
    """
    if isinstance(exc, UserError):
        return str(exc), exc.status
    pydantic_core = sys.modules.get("pydantic_core")
    if pydantic_core is not None and isinstance(exc, pydantic_core.ValidationError):
        from common.settings import SETTINGS_FIX, settings_problem

        if exc.title == "Settings":
            return f"invalid settings: {settings_problem(exc)}; {SETTINGS_FIX}", 2
    registry = sys.modules.get("models.registry")
    if registry is not None and isinstance(exc, registry.RegistryError):
        return f"{exc}; `deepcovid models list` shows the versions there are", 2
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is not None and isinstance(exc, sqlalchemy_exc.OperationalError):
        from common.redact import redact_url

        reason = " ".join(str(exc.orig or exc).split())[:200]
        return (
            f"the job store cannot be used: {redact_url(reason)}; check DEEPCOVID_DATA_DIR or "
            "DEEPCOVID_DATABASE_URL, and run `deepcovid db upgrade`",
            1,
        )
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        name = exc.filename or ""
        text = f"{exc.strerror}: {name}" if exc.strerror else str(exc)
        return f"{text}; check the path", 2
    if isinstance(exc, PermissionError):
        return f"{exc.strerror or exc}: {exc.filename or ''}; check the permissions", 1
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (
            f"{exc.strerror or exc}: another program listens on the port; stop it or choose "
            "another port (DEEPCOVID_PORT, DEEPCOVID_MONITORING_PORT); `deepcovid doctor` "
            "checks the ports",
            1,
        )
    return None


def debugging(argv: Sequence[str]) -> bool:
    """Whether tracebacks are wanted: ``--debug`` on the line or DEBUG logging configured."""
    return DEBUG_FLAG in argv or os.environ.get("DEEPCOVID_LOG_LEVEL", "").upper() == "DEBUG"


def without_debug_flag(argv: Sequence[str]) -> list[str]:
    """``argv`` without :data:`DEBUG_FLAG` (which argparse's sub-commands do not know)."""
    return [a for a in argv if a != DEBUG_FLAG]


def run_reporting_errors(run: Callable[[], int | None], command: str, *, debug: bool) -> int:
    """``run()``'s exit status; a user error printed as ``<command>: <message>`` on stderr.

    Ctrl-C ends with 130 and no traceback. Other exceptions (bugs) propagate, and user errors
    too when ``debug``.
    """
    try:
        result = run()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        found = user_error(exc)
        if found is None or debug:
            raise
        message, status = found
        print(f"{command}: {message}", file=sys.stderr)
        return status
    return int(result or 0)
