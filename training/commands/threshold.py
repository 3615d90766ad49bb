"""``threshold``: choose a version's operating points again and store them in its card.

For a site's own labelled films, or after the images were re-encoded: the thresholds must come
from the images and numerics serving will see. Both named points are chosen
(:mod:`training.operating_points`): ``paper`` (sensitivity >= 98 %), which stays the card's
``threshold``, and ``clinical`` (highest specificity with sensitivity >= 90 %), each with a
bootstrap 95 % interval; the setting ``threshold_policy`` picks the one serving uses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.errors import UsageError
from models.operating_point import N_BOOT, OperatingPoint, describe
from training.commands.inputs import add_manifest_arguments, add_registry_argument, log
from training.commands.scoring import score_version

NAME = "threshold"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``threshold``; its ``func(args, registry_root, argv0)`` runs it."""
    parser = subparsers.add_parser(
        NAME,
        help="choose a version's operating points (paper 98 %% and clinical 90 %% sensitivity) "
        "again on labelled films (default val) and store both in its card",
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
        help="split the points are chosen on (default val; any the manifest names, such as a "
        "site's own labelled films); it needs COVID-19 and non-COVID images",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=N_BOOT,
        help=f"bootstrap resamples for the points' 95 %% intervals (default {N_BOOT}; 0: none)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--load-workers", type=int, default=4)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the points, leave the card unchanged"
    )
    add_registry_argument(parser)


def run(args: argparse.Namespace, registry_root: Path, argv0: str = "deepcovid") -> int:
    """Score the split, choose both points, store them in the card (unless ``--dry-run``)."""
    from training.release import rechoose_threshold

    if args.split == "test":
        log(
            "note: a threshold chosen on the test split makes that split's figures optimistic; "
            "report them on another split"
        )
    found = score_version(args, registry_root, args.model, args.split)
    card, manifest, scored = found.card, found.manifest, found.scored
    try:
        updated = rechoose_threshold(
            card,
            scored,
            args.split,
            f"{manifest.path.name}, sha256 {manifest.sha256[:12]}",
            n_boot=args.bootstrap,
        )
    except ValueError as exc:
        raise UsageError(
            f"split {args.split!r}: {exc}", "choose a split with both kinds of films (--split)"
        ) from exc
    for name, point in updated.operating_points.items():
        before = card.operating_points.get(name)
        was = f"{before.threshold:.6f}" if before else "none"
        print(f"{card.version}: {point_summary(name, point)} (was {was})")
    print(
        f"{card.version}: card threshold (paper point) {card.threshold:.6f} -> "
        f"{updated.threshold:.6f}"
    )
    if args.dry_run:
        print("dry run: the card is unchanged")
    else:
        found.registry.replace_card(updated)
        print(
            f"stored both points in {card.version}'s card; the setting threshold_policy "
            "(paper | clinical) picks the one serving uses"
        )
    return 0


def point_summary(name: str, point: OperatingPoint) -> str:
    """One line: the point, its threshold, sensitivity and specificity with their intervals."""

    def ci(interval: tuple[float, float] | None, scale: float = 1.0, digits: int = 1) -> str:
        if interval is None:
            return ""
        return f" ({interval[0] * scale:.{digits}f}-{interval[1] * scale:.{digits}f})"

    return (
        f"{describe(name)}: threshold {point.threshold:.6f}{ci(point.threshold_ci, digits=4)}, "
        f"sensitivity {100 * (point.sensitivity or 0):.1f} %{ci(point.sensitivity_ci, 100)}, "
        f"specificity {100 * (point.specificity or 0):.1f} %{ci(point.specificity_ci, 100)} "
        f"on {point.n_pos} COVID-19 / {point.n_neg} non-COVID images"
    )
