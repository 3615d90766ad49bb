"""`deepcovid train | evaluate | compare | threshold | fit-domain`: training, reports, comparison,
threshold, domain check.

Argument definitions and handlers live in :mod:`training.cli` (shared with ``python -m training``,
which runs where the settings object is not installed); this module only registers them and
resolves the registry folder from the settings when ``--registry`` is not given.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace, Path, str], int]


def _registry_root(args: argparse.Namespace) -> Path:
    if args.registry is not None:
        return Path(args.registry)
    from common.settings import get_settings

    return Path(get_settings().model.registry_dir)


def _bind(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return handler(args, _registry_root(args), "deepcovid")

    return run


def register(subparsers: Any) -> None:
    """Add ``train``, ``evaluate``, ``compare``, ``threshold`` and ``fit-domain``."""
    from training import cli

    cli.register_commands(subparsers)
    for name in ("train", "evaluate", "compare", "threshold", "fit-domain"):
        parser = subparsers.choices[name]
        parser.set_defaults(func=_bind(parser.get_default("func")))
