"""A version's scores on one split of a manifest: what ``evaluate`` and ``threshold`` start from.

Both load the version, open the manifest (default: the one its card names), load the split's
images with the card's preprocessing, and score them on the device as serving would.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from training.commands.inputs import load_version, note_other_manifest, open_manifest, split_rows
from training.manifest import Manifest

if TYPE_CHECKING:
    import torch
    from torch import nn

    from models.card import ModelCard
    from models.registry import Registry
    from training.dataset import SplitData
    from training.evaluate import Scored


@dataclass(frozen=True)
class ScoredSplit:
    """A version, the split it was scored on, and the scores."""

    registry: Registry
    model: nn.Module
    card: ModelCard
    manifest: Manifest
    data: SplitData
    scored: Scored
    device: torch.device


def score_version(
    args: argparse.Namespace, registry_root: Path, version: str | None, split: str
) -> ScoredSplit:
    """Score ``split`` with ``version`` (default: the active one) per the command's flags:
    ``--manifest``, ``--data-root``, ``--device``, ``--threads``, ``--load-workers``."""
    from models.registry import Registry
    from training.dataset import load_split
    from training.evaluate import score_split
    from training.predict import setup_device

    registry = Registry(registry_root)
    model, card = load_version(registry, version)
    manifest = open_manifest(args.manifest, args.data_root, card.training_manifest, registry_root)
    rows = split_rows(manifest, split)
    note_other_manifest(manifest, card)
    device = setup_device(args.device, args.threads)
    data = load_split(rows, card.preprocess, args.load_workers)
    scored = score_split(model, card, data, device)
    return ScoredSplit(registry, model, card, manifest, data, scored, device)
