"""Fitting the out-of-distribution check (:mod:`models.ood`) of a trained model.

:func:`fit_for_release` is the hook ``train`` calls before saving a version: it fits the check
(:func:`models.ood.fit_domain_check`: statistics on the train split, threshold on val) and
returns the card with its ``domain_check`` entry plus the statistics file to save beside the
weights, so the version appears in the registry complete. ``fit-domain VERSION``
(:mod:`training.commands.fit_domain`) adds or replaces the check of an existing version with
:func:`fit_on_splits`.
"""

from __future__ import annotations

import sys
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
