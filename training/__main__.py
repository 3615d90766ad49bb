"""``python -m training train|evaluate|compare|threshold|fit-domain``: without the settings object.

For machines that have only the training stack (a GPU box with torch, torchvision, scikit-learn,
matplotlib): ``PYTHONPATH=. python -m training train --manifest ... --registry ...``. The same
handlers back ``deepcovid train|evaluate|compare|threshold|fit-domain``.
"""

from __future__ import annotations

import argparse
import sys

from training import cli


def main(argv: list[str] | None = None) -> int:
    """Parse and dispatch; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m training")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register_commands(sub)
    args = parser.parse_args(argv)
    registry = args.registry or cli.SHIPPED_REGISTRY
    return int(args.func(args, registry, "python -m training"))


if __name__ == "__main__":
    sys.exit(main())
