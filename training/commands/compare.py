"""``compare``: Table 6 and overlaid ROC/PR curves of several versions on one split, with the
cross-validation figures of their recipes where ``--cv`` gives them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import UsageError
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
    parser.add_argument(
        "--cv",
        action="append",
        default=[],
        metavar="[VERSION=]DIR",
        help="a cross-validation folder (`cv --out-dir`) whose mean ± sd to show beside VERSION "
        "(without VERSION=: beside the fold models it kept); repeatable",
    )
    checks.add_arguments(parser)
    add_registry_argument(parser)


def cv_for_versions(specs: list[str], versions: list[str]) -> dict[str, dict[str, Any]]:
    """The CV columns of each version named by ``--cv`` (``VERSION=DIR``, or ``DIR`` for the
    versions it kept); a folder without a summary or a version not compared is a usage error."""
    from training.compare import cv_columns
    from training.cv_metrics import read_summary

    found: dict[str, dict[str, Any]] = {}
    for spec in specs:
        version, _, folder = spec.rpartition("=")
        try:
            report = read_summary(Path(folder))
        except (OSError, ValueError) as exc:
            raise UsageError(str(exc), "pass the --out-dir of a `cv` run") from exc
        named = [version] if version else [v for v in report.get("versions", []) if v in versions]
        if version and version not in versions:
            raise UsageError(
                f"--cv names {version!r}, which is not compared", "add it to the versions"
            )
        if not named:
            raise UsageError(
                f"the cross-validation in {folder} kept none of the compared versions",
                "name the version it stands for: --cv VERSION=DIR",
            )
        for name in named:
            found[name] = cv_columns(report, folder)
    return found


def run(args: argparse.Namespace, registry_root: Path, argv0: str = "deepcovid") -> int:
    """Score every version on the split (images loaded once per preprocessing), write the table."""
    from models.registry import Registry
    from training.compare import compare_row, write_comparison
    from training.dataset import load_split
    from training.evaluate import score_split
    from training.predict import setup_device

    registry = Registry(registry_root)
    cards = [card_of(registry, version) for version in args.versions]  # all known: then work
    cv = cv_for_versions(args.cv, args.versions)
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
        rows[-1]["cv"] = cv.get(version)
    out = args.out or Path("runs") / "reports" / ("compare-" + "-".join(args.versions))
    write_comparison(out, args.split, rows, len(rows_meta))
    for r in rows:
        print(
            f"{r['version']} ({r['architecture']}): {checks.auc_text(r)}, within-source AUC "
            f"{checks.fmt(r['within_source_auc'])}, {checks.rates_text(r)}"
        )
    print(f"comparison written to {out}")
    return 0
