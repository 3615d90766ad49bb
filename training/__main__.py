"""``python -m training train|evaluate|compare|threshold|cv|fit-domain``: no settings object.

For machines that have only the training stack (a GPU box with torch, torchvision, scikit-learn,
matplotlib): ``PYTHONPATH=. python -m training train --manifest ... --registry ...``. The same
commands (:mod:`training.commands`) back ``deepcovid train|evaluate|compare|threshold`` and
``deepcovid models fit-domain``, and the same handler (:mod:`common.commandline`) prints the
errors a user can fix as one line, exit status 2 (a wrong argument) or 1; ``--debug`` or
``DEEPCOVID_LOG_LEVEL=DEBUG`` shows their traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common.commandline import debugging, run_reporting_errors, without_debug_flag
from common.paths import SHIPPED_REGISTRY
from training.commands import register_commands

PROG = "python -m training"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse and dispatch; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=PROG)
    sub = parser.add_subparsers(dest="command", required=True)
    register_commands(sub)
    args = parser.parse_args(without_debug_flag(args_list))
    registry = getattr(args, "registry", None) or SHIPPED_REGISTRY
    return run_reporting_errors(
        lambda: args.func(args, registry, PROG),
        f"{PROG} {args.command}",
        debug=debugging(args_list),
    )


if __name__ == "__main__":
    sys.exit(main())
