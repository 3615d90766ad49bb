"""``python -m training train|evaluate|compare|threshold|fit-domain``: without the settings object.

For machines that have only the training stack (a GPU box with torch, torchvision, scikit-learn,
matplotlib): ``PYTHONPATH=. python -m training train --manifest ... --registry ...``. The same
handlers back ``deepcovid train|evaluate|compare|threshold|fit-domain``. Errors a user can fix
print one line and exit 2 (a wrong argument) or 1; ``DEEPCOVID_LOG_LEVEL=DEBUG`` shows their
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from common.errors import UserError
from common.paths import SHIPPED_REGISTRY
from training import cli


def main(argv: list[str] | None = None) -> int:
    """Parse and dispatch; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m training")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register_commands(sub)
    args = parser.parse_args(argv)
    registry = args.registry or SHIPPED_REGISTRY
    try:
        return int(args.func(args, registry, "python -m training"))
    except UserError as exc:  # one line, as `deepcovid` prints it (traceback: DEBUG logging)
        if os.environ.get("DEEPCOVID_LOG_LEVEL", "").upper() == "DEBUG":
            raise
        print(f"python -m training {args.command}: {exc}", file=sys.stderr)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
