"""``compare``: Table 6 and overlaid ROC/PR curves of several versions on one split."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from training.commands import checks
from training.commands.inputs import (
    add_manifest_arguments,
    add_registry_argument,
    card_of,
    load_version,
    open_manifest,
    split_rows,
)

if TYPE_CHECKING:
    from models.preprocessing import PreprocessSpec
    from training.dataset import SplitData

NAME = "compare"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``compare``; its ``func(args, registry_root, argv0)`` runs it."""
    parser = subparsers.add_parser(
        NAME, help="compare model versions on one split (Table 6, overlaid ROC/PR)"
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``compare``."""
    parser.add_argument("versions", nargs="+", help="model versions to compare")
    parser.add_argument(
        "--split", default="test", help="a split of the manifest (default test; any it names)"
    )
    add_manifest_arguments(parser, manifest_help="default: the first version's card")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--load-workers", type=int, default=4)
    checks.add_arguments(parser)
    add_registry_argument(parser)


def run(args: argparse.Namespace, registry_root: Path, argv0: str = "deepcovid") -> int:
    """Score every version on the split (images loaded once per preprocessing), write the table."""
    from models.registry import Registry
    from training.compare import compare_row, write_comparison
    from training.dataset import load_split
    from training.evaluate import score_split
    from training.predict import setup_device

    registry = Registry(registry_root)
    cards = [card_of(registry, version) for version in args.versions]  # all known: then work
    first = cards[0].training_manifest
    manifest = open_manifest(args.manifest, args.data_root, first, registry_root)
    rows_meta = split_rows(manifest, args.split)
    device = setup_device(args.device, args.threads)
    cache: dict[PreprocessSpec, SplitData] = {}
    rows = []
    for version in args.versions:
        model, card = load_version(registry, version)
        if card.preprocess not in cache:
            cache[card.preprocess] = load_split(rows_meta, card.preprocess, args.load_workers)
        scored = score_split(model, card, cache[card.preprocess], device)
        found = checks.run(args, model, card, cache[card.preprocess], scored, device)
        rows.append(
            compare_row(
                version,
                card.architecture,
                card.threshold,
                scored,
                args.bootstrap,
                trained_sources=card.source_prevalence or None,
                probes=found.probes,
                localisation=found.localisation,
            )
        )
    out = args.out or Path("runs") / "reports" / ("compare-" + "-".join(args.versions))
    write_comparison(out, args.split, rows, len(rows_meta))
    for r in rows:
        print(
            f"{r['version']} ({r['architecture']}): AUC {r['auc']:.4f}, within-source AUC "
            f"{checks.fmt(r['within_source_auc'])}, sensitivity "
            f"{r['sensitivity']:.4f}, specificity {r['specificity']:.4f}"
        )
    print(f"comparison written to {out}")
    return 0
