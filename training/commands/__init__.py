"""The training commands, one module each (as Celery's ``celery/bin/``): ``train``,
``evaluate``, ``compare``, ``threshold``, ``cv``, ``cv-compare`` and ``fit-domain``.

Each module holds its flags and a thin handler ``run(args, registry_root, argv0)`` that calls the
library (:mod:`training.trainer`, :mod:`training.evaluate`, ...); :mod:`.inputs` and
:mod:`.checks` hold what several of them read or share. Both command lines register them from
here: ``python -m training`` (:mod:`training.__main__`, no settings object) and ``deepcovid``
(:mod:`deepcovid.commands.training`; ``fit-domain`` there sits with the registry's commands,
``deepcovid models fit-domain``). Module-level imports stay light (no torch): ``deepcovid``
builds every parser at start-up.
"""

from __future__ import annotations

import argparse

from training.commands import compare, cv, cv_compare, evaluate, fit_domain, threshold, train

MODEL_COMMANDS = (train, evaluate, compare, threshold, cv, cv_compare)
"""The commands that make or measure versions and recipes (``deepcovid train`` ...
``cv-compare``)."""


def register_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], *, fit: bool = True
) -> None:
    """Add the :data:`MODEL_COMMANDS` and (``fit``) ``fit-domain``."""
    for command in MODEL_COMMANDS:
        command.register(subparsers)
    if fit:
        fit_domain.register(subparsers)
