"""``threshold``: choose a version's operating threshold again and store it in its card.

For a site's own validation images, or after the images were re-encoded: the threshold must come
from the images and numerics serving will see.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands.inputs import add_manifest_arguments, add_registry_argument, log
from training.commands.scoring import score_version

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
    from training.release import rechoose_threshold

    if args.split == "test":
        log(
            "note: a threshold chosen on the test split makes that split's figures optimistic; "
            "report them on another split"
        )
    found = score_version(args, registry_root, args.model, args.split)
    card, manifest, scored = found.card, found.manifest, found.scored
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
        found.registry.replace_card(updated)
    return 0
