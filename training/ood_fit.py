"""The domain check at training time, and ``fit-domain`` for versions saved without one.

:func:`fit_for_release` is the hook ``train`` calls before saving a version: it fits the check
(:func:`models.ood.fit_domain_check`: statistics on the train split, threshold on val) and
returns the card with its ``domain_check`` entry plus the statistics file to save beside the
weights, so the version appears in the registry complete. ``fit-domain VERSION`` adds (or
replaces) the check of an existing version from a manifest.


Module-level imports stay light (no torch): ``deepcovid`` registers these flags at start-up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from models.card import ModelCard
    from models.ood import FittedDomainCheck
    from training.dataset import SplitData
    from training.manifest import Manifest


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fit_on_splits(
    model: nn.Module,
    card: ModelCard,
    train: SplitData,
    val: SplitData,
    manifest: Manifest,
    device: torch.device | str = "cpu",
) -> FittedDomainCheck:
    """Fit the check of ``model`` on a manifest's train split, threshold on its val split."""
    from models.card import utc_now_iso
    from models.ood import fit_domain_check

    fitted_on = (
        f"{manifest.path.name} (sha256 {manifest.sha256[:12]}): statistics on the train split "
        f"({len(train)} images), threshold on the val split ({len(val)} images)"
    )
    return fit_domain_check(
        model,
        card,
        train.gray,
        train.labels,
        val.gray,
        device=device,
        fitted_on=fitted_on,
        created=utc_now_iso(),
    )


def fit_for_release(
    model: nn.Module,
    card: ModelCard,
    train: SplitData,
    val: SplitData,
    manifest: Manifest,
    device: torch.device | str = "cpu",
) -> tuple[ModelCard, dict[str, bytes]]:
    """``card`` with a domain check and the file to store with the version (``extra_files``).

    A check that cannot be fitted (e.g. a tiny manifest) must not lose a finished training
    run: the version is then saved without one, with a warning.
    """
    try:
        fitted = fit_on_splits(model, card, train, val, manifest, device)
    except (ValueError, RuntimeError) as exc:
        _log(f"warning: no domain check for this version: {exc}")
        return card, {}
    spec = fitted.spec
    _log(
        f"domain check: threshold {spec.threshold:.3f} ({spec.feature_dim}-d features, "
        f"{spec.components} components, shrinkage {spec.shrinkage:.3f}); pass rates "
        f"{spec.pass_rates}"
    )
    return card.replace(domain_check=spec), {spec.file: fitted.data}


def add_fit_domain_arguments(parser: argparse.ArgumentParser, *, registry: bool = True) -> None:
    """Flags of ``fit-domain`` (``registry=False`` where a parent parser has ``--registry``)."""
    from training.cli import add_registry_argument

    parser.add_argument("version", nargs="?", default=None, help="version (default: active)")
    parser.add_argument("--manifest", default=None, help="default: the one named in the card")
    parser.add_argument("--data-root", default=None, help="folder image paths are relative to")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--load-workers", type=int, default=4)
    if registry:
        add_registry_argument(parser)


def run_fit_domain(args: argparse.Namespace, registry_root: Path, argv0: str = "deepcovid") -> int:
    """``fit-domain``: fit a version's domain check and store it beside its weights."""
    from models.ood import remove_stale_domain_files, save_domain_check
    from models.registry import Registry
    from training.cli import _open_manifest, _setup_device
    from training.dataset import load_split

    registry = Registry(registry_root)
    model, card = registry.load(args.version)
    manifest = _open_manifest(args.manifest, args.data_root, card.training_manifest)
    if card.training_manifest_sha256 and manifest.sha256 != card.training_manifest_sha256:
        _log(
            f"note: manifest {manifest.path} differs from the one the model was trained on "
            f"(sha256 {manifest.sha256[:12]} vs {card.training_manifest_sha256[:12]})"
        )
    device = _setup_device(args.device, args.threads)
    train = load_split(manifest.split("train"), card.input_size, args.load_workers)
    val = load_split(manifest.split("val"), card.input_size, args.load_workers)
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
