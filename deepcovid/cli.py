"""The ``deepcovid`` command: argument parsing and printing only.

Each command group lives in its own module under :mod:`deepcovid.commands` and exposes
``register(subparsers)``, which adds its sub-commands and sets ``func`` on each parser; the logic is
in the library packages (``dicom_node``, ``worker``, ``models``, ``training``).

Errors a user can fix end as one line, ``deepcovid <command>: <problem>; <fix>``, and a non-zero
status (2 for a wrong argument, 1 for an environment that is not right): :func:`user_error` says
which exceptions those are. Anything else is a bug and keeps its traceback. ``--debug`` (anywhere
on the line) or ``DEEPCOVID_LOG_LEVEL=DEBUG`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence

from common.errors import UserError
from deepcovid import __version__

COMMAND_MODULES = (
    "deepcovid.commands.service",  # serve, node, worker
    "deepcovid.commands.send",  # send
    "deepcovid.commands.jobs",  # jobs list/show/reanalyse/resend/retry-failed
    "deepcovid.commands.users",  # users add/list/remove (operator console accounts)
    "deepcovid.commands.db",  # db upgrade
    "deepcovid.commands.config",  # config show/docs
    "deepcovid.commands.models",  # models list/show/activate
    "deepcovid.commands.training",  # train, evaluate, compare, threshold
    "deepcovid.commands.demo",  # demo
    "deepcovid.commands.doctor",  # doctor
)

DEBUG_FLAG = "--debug"


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every command group registered."""
    parser = argparse.ArgumentParser(
        prog="deepcovid",
        description="DICOM node that screens chest X-rays for COVID-19 (Deep-COVID) and sends "
        "SR, heatmap overlay, presentation state and Parametric Map results back to the PACS.",
    )
    parser.add_argument("--version", action="version", version=f"deepcovid-node {__version__}")
    parser.add_argument(
        DEBUG_FLAG,
        action="store_true",
        help="show the traceback of errors (also DEEPCOVID_LOG_LEVEL=DEBUG); may follow the "
        "command too",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = debugging(args_list)
    # ``--debug`` may follow the command (``deepcovid jobs list --debug``): take it out here.
    parser = build_parser()
    args = parser.parse_args([a for a in args_list if a != DEBUG_FLAG])
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        result = func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        found = user_error(exc)
        if found is None or debug:
            raise
        message, status = found
        print(f"{command_name(args)}: {message}", file=sys.stderr)
        return status
    return int(result or 0)


def command_name(args: argparse.Namespace) -> str:
    """``deepcovid jobs list``: the program, the command and its sub-command, for messages."""
    parts = ["deepcovid", str(args.command)]
    sub = getattr(args, f"{args.command}_command", None)
    if sub:
        parts.append(str(sub))
    return " ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
