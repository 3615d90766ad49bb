"""What the training commands read: the registry folder, a model version, a manifest and a split.

Each reader turns what a user can get wrong (a missing or malformed manifest, an unknown version
or split) into a :class:`common.errors.UsageError` naming the fix, which both command lines print
as one line. Module-level imports stay light (no torch): ``deepcovid`` registers the flags at
start-up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import UsageError, UserError
from training.manifest import Manifest, ManifestRow, read_manifest

if TYPE_CHECKING:
    from torch import nn

    from models.card import ModelCard
    from models.registry import Registry


def log(message: str) -> None:
    """A progress or warning line on stderr (stdout carries the command's result)."""
    print(message, file=sys.stderr, flush=True)


def add_registry_argument(parser: argparse.ArgumentParser) -> None:
    """``--registry``: where versions live (default: settings' registry, or the shipped one)."""
    parser.add_argument(
        "--registry",
        type=Path,
        default=None,
        help="model registry folder (default: the configured one, else the shipped registry)",
    )


def add_manifest_arguments(
    parser: argparse.ArgumentParser,
    manifest_help: str = "manifest CSV (default: the one named in the model card)",
) -> None:
    """``--manifest`` (default: the one a model card names) and ``--data-root``."""
    parser.add_argument("--manifest", default=None, help=manifest_help)
    parser.add_argument("--data-root", default=None, help="folder image paths are relative to")


def open_manifest(
    path: str | None, data_root: str | None, card_manifest: str, registry_root: Path | None = None
) -> Manifest:
    """The manifest given, else the one the model card names (its portable path resolved
    against the registry, the working folder and the repository)."""
    if path:
        return load_manifest(path, data_root)
    if not card_manifest:
        raise UsageError("the model card names no manifest", "pass --manifest")
    from training.portable import resolve_portable

    found = resolve_portable(card_manifest, registry_root)
    if found is None or not found.is_file():
        raise UsageError(
            f"the manifest the model card names ({card_manifest}) is not on this machine",
            "pass --manifest with its copy here (the card's sha256 tells whether it is the same)",
        )
    return load_manifest(str(found), data_root)


def load_manifest(path: str, data_root: str | None) -> Manifest:
    """:func:`training.manifest.read_manifest`, a missing or malformed file a usage error."""
    try:
        return read_manifest(path, data_root)
    except FileNotFoundError as exc:
        raise UsageError(str(exc), "pass --manifest with the path of a manifest CSV") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        fix = "fix the manifest (docs/training.md, 'Data: the manifest')"
        raise UsageError(str(exc), fix) from exc


def split_rows(manifest: Manifest, split: str) -> list[ManifestRow]:
    """The rows of ``split``; a split the manifest lacks is a usage error naming those it has."""
    try:
        return manifest.split(split)
    except ValueError as exc:
        raise UsageError(str(exc), "choose one of them with --split") from exc


def note_other_manifest(manifest: Manifest, card: ModelCard) -> None:
    """Say so when ``manifest`` is not the one ``card``'s model was trained on."""
    trained_on = card.training_manifest_sha256
    if trained_on and manifest.sha256 != trained_on:
        log(
            f"note: manifest {manifest.path} differs from the one the model was trained on "
            f"(sha256 {manifest.sha256[:12]} vs {trained_on[:12]})"
        )


def load_version(registry: Registry, version: str | None) -> tuple[nn.Module, ModelCard]:
    """Model and card of ``version`` (default: the active one); an unknown version is a usage
    error, weights that do not match their card an error of the registry's files."""
    from models.registry import RegistryError, WeightsIntegrityError

    try:
        return registry.load(version)
    except WeightsIntegrityError as exc:
        raise UserError(str(exc), "copy the version again or choose another") from exc
    except RegistryError as exc:
        raise UsageError(str(exc), "name one of the registry's versions") from exc


def card_of(registry: Registry, version: str) -> ModelCard:
    """The card of ``version``; an unknown version is a usage error."""
    from models.registry import RegistryError

    try:
        return registry.card(version)
    except RegistryError as exc:
        raise UsageError(str(exc), "name one of the registry's versions") from exc
