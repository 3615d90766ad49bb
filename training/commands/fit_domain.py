"""``fit-domain``: fit (or fit again) the out-of-distribution check of a saved version.

``train`` fits the check itself before saving (:func:`training.ood_fit.fit_for_release`); this
command is for versions saved without one, or for fitting it on other images. It is registered
as ``deepcovid models fit-domain`` (the registry's commands) and ``python -m training
fit-domain``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands.inputs import (
    add_manifest_arguments,
    add_registry_argument,
    load_version,
    note_other_manifest,
    open_manifest,
    split_rows,
)

NAME = "fit-domain"


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], *, registry: bool = True
) -> argparse.ArgumentParser:
    """Add ``fit-domain`` (``registry=False`` where a parent parser has ``--registry``); its
    ``func(args, registry_root, argv0)`` runs it."""
    parser = subparsers.add_parser(
        NAME,
        help="fit VERSION's domain check (train features, threshold on val) and store it",
    )
    add_arguments(parser, registry=registry)
    parser.set_defaults(func=run)
    return parser


def add_arguments(parser: argparse.ArgumentParser, *, registry: bool = True) -> None:
    """Flags of ``fit-domain``."""
    parser.add_argument("version", nargs="?", default=None, help="version (default: active)")
    add_manifest_arguments(parser)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--load-workers", type=int, default=4)
    if registry:
        add_registry_argument(parser)


def run(args: argparse.Namespace, registry_root: Path, argv0: str = "deepcovid") -> int:
    """Fit the check on the manifest's train and val splits; store it beside the weights."""
    from models.ood import remove_stale_domain_files, save_domain_check
    from models.registry import Registry
    from training.dataset import load_split
    from training.ood_fit import fit_on_splits
    from training.predict import setup_device

    registry = Registry(registry_root)
    model, card = load_version(registry, args.version)
    if card.is_ensemble:
        from common.errors import UsageError

        raise UsageError(
            f"{card.version} is an ensemble: its domain check is its members' checks",
            "fit each member's check (`fit-domain MEMBER`), then build the ensemble again",
        )
    manifest = open_manifest(args.manifest, args.data_root, card.training_manifest, registry_root)
    train_rows, val_rows = split_rows(manifest, "train"), split_rows(manifest, "val")
    note_other_manifest(manifest, card)
    device = setup_device(args.device, args.threads)
    # The model's own preprocessing, as train fits the check (and serving scores images).
    train = load_split(train_rows, card.preprocess, args.load_workers)
    val = load_split(val_rows, card.preprocess, args.load_workers)
    fitted = fit_on_splits(model, card, train, val, manifest, device)
    folder = registry.path(card.version)
    updated = save_domain_check(folder, fitted, card)
    registry.replace_card(updated)  # the file first, then the card
    remove_stale_domain_files(folder, keep=fitted.spec.file)
    spec = fitted.spec
    print(
        f"{card.version}: domain check {spec.file} ({spec.feature_dim}-d features, "
        f"{spec.components} components, shrinkage {spec.shrinkage:.4f}), threshold "
        f"{spec.threshold:.4f}; pass rates {spec.pass_rates}"
    )
    return 0
