"""The ``deepcovid`` command: argument parsing and printing only.

Each command group lives in its own module under :mod:`deepcovid.commands` and exposes
``register(subparsers)``, which adds its sub-commands and sets ``func`` on each parser; the logic is
in the library packages (``dicom_node``, ``worker``, ``models``, ``training``).

Errors a user can fix end as one line, ``deepcovid <command>: <problem>; <fix>``, and a non-zero
status (2 for a wrong argument, 1 for an environment that is not right):
:func:`common.commandline.user_error` says which exceptions those are (one handler, shared with
``python -m training``). Anything else is a bug and keeps its traceback. ``--debug`` (anywhere
on the line) or ``DEEPCOVID_LOG_LEVEL=DEBUG`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from common.commandline import (
    DEBUG_FLAG,
    debugging,
    run_reporting_errors,
    without_debug_flag,
)
from deepcovid import __version__

COMMAND_MODULES = (
    "deepcovid.commands.service",  # serve, node, worker
    "deepcovid.commands.send",  # send
    "deepcovid.commands.jobs",  # jobs list/show/reanalyse/resend/retry-failed
    "deepcovid.commands.studies",  # studies list/show (study-level results)
    "deepcovid.commands.users",  # users add/list/remove (operator console accounts)
    "deepcovid.commands.tokens",  # tokens add/list/remove (DICOMweb senders)
    "deepcovid.commands.db",  # db upgrade
    "deepcovid.commands.config",  # config show/docs
    "deepcovid.commands.models",  # models list/show/activate
    "deepcovid.commands.training",  # train, evaluate, compare, threshold
    "deepcovid.commands.demo",  # demo
    "deepcovid.commands.doctor",  # doctor
)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = debugging(args_list)
    # ``--debug`` may follow the command (``deepcovid jobs list --debug``): take it out here.
    parser = build_parser()
    args = parser.parse_args(without_debug_flag(args_list))
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return run_reporting_errors(lambda: func(args), command_name(args), debug=debug)


def command_name(args: argparse.Namespace) -> str:
    """``deepcovid jobs list``: the program, the command and its sub-command, for messages."""
    parts = ["deepcovid", str(args.command)]
    sub = getattr(args, f"{args.command}_command", None)
    if sub:
        parts.append(str(sub))
    return " ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
