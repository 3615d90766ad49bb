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
from typing import TYPE_CHECKING

from common.errors import UsageError
from models.operating_point import N_BOOT, OperatingPoint, describe
from training.commands.inputs import add_manifest_arguments, add_registry_argument, log
from training.commands.scoring import score_version

if TYPE_CHECKING:
    from models.card import ModelCard
    from models.registry import Registry

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
    parser.add_argument(
        "--predictions",
        type=Path,
        default=None,
        metavar="CSV",
        help="choose the points on these labelled predictions instead of scoring a split: a CSV "
        "with columns label (covid | non_covid) and probability, such as the out-of-fold "
        "predictions `cv` writes (oof.csv)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="with --predictions: use the rows of this seed (needed when the file has several)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--load-workers", type=int, default=4)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the points, leave the card unchanged"
    )
    add_registry_argument(parser)


def run(args: argparse.Namespace, registry_root: Path, argv0: str = "deepcovid") -> int:
    """Score the split (or read ``--predictions``), choose both points, store them in the card
    (unless ``--dry-run``)."""
    from training.release import rechoose_threshold

    if args.predictions is not None:
        return _from_predictions(args, registry_root)
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
    _report_and_store(found.registry, card, updated, args.dry_run)
    return 0


def _from_predictions(args: argparse.Namespace, registry_root: Path) -> int:
    """``--predictions``: the points of a labelled predictions file, stored in the card."""
    from models.registry import Registry
    from training.commands.inputs import card_of
    from training.operating_points import card_with_points, operating_points

    registry = Registry(registry_root)
    version = args.model or registry.active_version()
    if version is None:
        raise UsageError(f"no active model version in {registry_root}", "pass --model")
    card = card_of(registry, version)
    labels, probabilities, note = read_predictions(args.predictions, args.seed)
    try:
        points = operating_points(labels, probabilities, n_boot=args.bootstrap, data=note)
    except ValueError as exc:
        raise UsageError(f"{args.predictions}: {exc}", "use predictions of both classes") from exc
    _report_and_store(registry, card, card_with_points(card, points), args.dry_run)
    return 0


def read_predictions(path: Path, seed: int | None) -> tuple[list[int], list[float], str]:
    """Labels (1 = COVID-19), probabilities and a description of ``path``'s rows (of ``seed``
    when given; a file with several seeds needs one)."""
    import csv
    import hashlib

    from training.manifest import LABELS

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", "pass an existing CSV") from exc
    rows = list(csv.DictReader(data.decode("utf-8").splitlines()))
    if not rows or not {"label", "probability"} <= set(rows[0]):
        raise UsageError(
            f"{path} has no rows with columns label and probability",
            "pass a predictions CSV such as cv's oof.csv",
        )
    seeds = sorted({r["seed"] for r in rows if r.get("seed", "") != ""}, key=int)
    if seed is not None:
        rows = [r for r in rows if r.get("seed") == str(seed)]
        if not rows:
            raise UsageError(f"{path} has no rows of seed {seed}", f"seeds there: {seeds}")
    elif len(seeds) > 1:
        raise UsageError(f"{path} holds predictions of seeds {seeds}", "choose one with --seed")
    try:
        labels = [LABELS.index(r["label"]) for r in rows]
        probabilities = [float(r["probability"]) for r in rows]
    except ValueError as exc:
        raise UsageError(
            f"{path}: {exc}", f"labels must be one of {', '.join(LABELS)}; probabilities numbers"
        ) from exc
    which = f", seed {seed}" if seed is not None else ""
    note = f"the predictions in {path.name} (sha256 {hashlib.sha256(data).hexdigest()[:12]}{which})"
    return labels, probabilities, note


def _report_and_store(
    registry: Registry, card: ModelCard, updated: ModelCard, dry_run: bool
) -> None:
    """Print the points chosen and, unless ``dry_run``, store ``updated`` in the registry."""
    for name, point in updated.operating_points.items():
        before = card.operating_points.get(name)
        was = f"{before.threshold:.6f}" if before else "none"
        print(f"{card.version}: {point_summary(name, point)} (was {was})")
    print(
        f"{card.version}: card threshold (paper point) {card.threshold:.6f} -> "
        f"{updated.threshold:.6f}"
    )
    methods = {p.ci_method for p in updated.operating_points.values() if p.ci_method}
    for method in sorted(methods):
        print(f"intervals (95 %): {method}")
    if dry_run:
        print("dry run: the card is unchanged")
    else:
        registry.replace_card(updated)
        print(
            f"stored both points in {card.version}'s card; the setting threshold_policy "
            "(paper | clinical) picks the one serving uses"
        )


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
