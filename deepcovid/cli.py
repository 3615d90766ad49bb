"""The ``deepcovid`` command: argument parsing and printing only.

Each command group lives in its own module under :mod:`deepcovid.commands` and exposes
``register(subparsers)``, which adds its sub-commands and sets ``func`` on each parser; the logic is
in the library packages (``dicom_node``, ``worker``, ``models``, ``training``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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
)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every command group registered."""
    parser = argparse.ArgumentParser(
        prog="deepcovid",
        description="DICOM node that screens chest X-rays for COVID-19 (Deep-COVID) and sends "
        "SR, heatmap and Parametric Map results back to the PACS.",
    )
    parser.add_argument("--version", action="version", version=f"deepcovid-node {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    result = func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
