"""``threshold``: choose a version's operating threshold again and store it in its card.

For a site's own validation images, or after the images were re-encoded: the threshold must come
from the images and numerics serving will see.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands.inputs import (
    add_manifest_arguments,
    add_registry_argument,
    load_version,
    log,
    open_manifest,
    split_rows,
)

NAME = "threshold"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``threshold``; its ``func(args, registry_root, argv0)`` runs it."""
    parser = subparsers.add_parser(
        NAME,
        help="choose a version's operating threshold again (on val) and store it in its card",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``threshold``."""
    parser.add_argument("--model", default=None, help="version (default: active)")
    add_manifest_arguments(parser)
    parser.add_argument(
        "--split",
        default="val",
        help="split the threshold is chosen on (default val; any the manifest names, such as a "
        "site's own validation set)",
    )
    parser.add_argument("--target-sensitivity", type=float, default=0.98)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--load-workers", type=int, default=4)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the threshold, leave the card unchanged"
    )
    add_registry_argument(parser)


def run(args: argparse.Namespace, registry_root: Path, argv0: str = "deepcovid") -> int:
    """Score the split, choose the threshold, store it in the card (unless ``--dry-run``)."""
    from models.registry import Registry
    from training.dataset import load_split
    from training.evaluate import score_split
    from training.predict import setup_device
    from training.release import rechoose_threshold

    registry = Registry(registry_root)
    model, card = load_version(registry, args.model)
    manifest = open_manifest(args.manifest, args.data_root, card.training_manifest, registry_root)
    rows = split_rows(manifest, args.split)
    if args.split == "test":
        log(
            "note: a threshold chosen on the test split makes that split's figures optimistic; "
            "report them on another split"
        )
    device = setup_device(args.device, args.threads)
    data = load_split(rows, card.preprocess, args.load_workers)
    scored = score_split(model, card, data, device)
    updated = rechoose_threshold(
        card,
        scored,
        args.split,
        args.target_sensitivity,
        f"{manifest.path.name}, sha256 {manifest.sha256[:12]}",
    )
    print(
        f"{card.version}: threshold {card.threshold:.6f} -> {updated.threshold:.6f} "
        f"({updated.threshold_method})"
    )
    if not args.dry_run:
        registry.replace_card(updated)
    return 0
