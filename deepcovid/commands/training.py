"""`deepcovid train | evaluate | compare | threshold | cv | cv-compare`: training, reports,
comparison, CV.

The commands live in :mod:`training.commands` (one module each, shared with ``python -m
training``, which runs where the settings object is not installed); this module registers them
and resolves the registry folder from the settings when ``--registry`` is not given.
``fit-domain`` is a command of the registry: ``deepcovid models fit-domain``
(:mod:`deepcovid.commands.models`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace, Path, str], int]


def _registry_root(args: argparse.Namespace) -> Path:
    given = getattr(args, "registry", None)  # cv-compare reads folders, not the registry
    if given is not None:
        return Path(given)
    from common.settings import get_settings

    return Path(get_settings().model.registry_dir)


def _bind(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return handler(args, _registry_root(args), "deepcovid")

    return run


def register(subparsers: Any) -> None:
    """Add the training commands (:data:`training.commands.MODEL_COMMANDS`)."""
    from training.commands import MODEL_COMMANDS

    for command in MODEL_COMMANDS:
        command.register(subparsers)
        parser = subparsers.choices[command.NAME]
        parser.set_defaults(func=_bind(parser.get_default("func")))
