"""``cv``: cross-validate a training recipe on train + val (out-of-fold predictions, mean ± sd).

The recipe's flags are those of ``train`` (:class:`training.config.TrainConfig`'s fields, through
:mod:`training.flags`); the ones here say how the folds are made and where the results go. The
protocol is in :mod:`training.cv` and docs/training.md ("Model selection by cross-validation").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path

from training import flags
from training.commands.inputs import add_registry_argument, load_manifest, log
from training.commands.train import config_from_args
from training.config import FLAG_GROUPS, TrainConfig

NAME = "cv"

NEMA_CR = Path(__file__).resolve().parents[3] / "shared" / "data" / "dicom" / "RG1_UNCR.dcm"
"""The NEMA sample CR (a normal adult chest) beside the repository, scored by every fold model."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cv``; its ``func(args, registry_root, argv0)`` runs it."""
    parser = subparsers.add_parser(
        NAME,
        help="cross-validate a training recipe on train + val (out-of-fold metrics, mean ± sd)",
        description="Grouped, stratified K-fold over the manifest's train + val rows (test is "
        "never read): the recipe (the flags of `train`) is trained per fold and seed, selecting "
        "its epoch on an inner part of the training folds, and scores the held-out fold. Writes "
        "oof.csv, cv.json and cv.md to --out-dir.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``train``'s recipe, then the folds and where the results go."""
    flags.add_arguments(parser, TrainConfig, FLAG_GROUPS)
    group = parser.add_argument_group("cross-validation")
    group.add_argument("--folds", type=int, default=5, help="number of folds K (default 5)")
    group.add_argument(
        "--fold-seed", type=int, default=0, help="seed of the fold assignment (default 0)"
    )
    group.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="training seeds, each run on every fold (default: --seed)",
    )
    group.add_argument(
        "--out-dir", type=Path, default=None, help="results folder (default runs/cv/<time>-<arch>)"
    )
    group.add_argument(
        "--keep-models",
        action="store_true",
        help="save every fold model as an unactivated version of --registry",
    )
    group.add_argument(
        "--version-prefix",
        default="cv",
        help="kept versions are PREFIX-f<fold>-s<seed> (default cv)",
    )
    group.add_argument(
        "--nema-cr",
        type=Path,
        default=NEMA_CR,
        help="DICOM scored by every fold model (default: the shared NEMA sample CR; a missing "
        "file is skipped)",
    )
    group.add_argument(
        "--only-folds",
        type=int,
        nargs="+",
        default=None,
        metavar="F",
        help="train only these folds (0-based; others are reused from OUT_DIR or left out): a "
        "long run split over several calls with the same --out-dir",
    )
    group.add_argument(
        "--summarise",
        action="store_true",
        help="train nothing: write the summary of the fold runs OUT_DIR already holds for this "
        "recipe and folds (the last call after fold runs made in parallel)",
    )
    group.add_argument(
        "--no-resume",
        action="store_true",
        help="train every fold again (default: reuse the folds OUT_DIR/folds already holds for "
        "the same recipe and folds)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_registry_argument(parser)


def run(args: argparse.Namespace, registry_root: Path, argv0: str = "deepcovid") -> int:
    """Run the cross-validation and print its summary."""
    from common.errors import UsageError
    from training.cv import CVPlan, load_nema_image, run_cv
    from training.cv_metrics import CV_METRICS, format_mean_sd
    from training.folds import assign_folds, cv_rows

    cfg = config_from_args(args)
    if args.summarise and (args.no_resume or args.only_folds is not None):
        raise UsageError(
            "--summarise trains nothing, so it takes neither --no-resume nor --only-folds",
            "drop one of them",
        )
    if args.folds < 2:
        raise UsageError(f"--folds must be at least 2, got {args.folds}", "use --folds 5")
    manifest = load_manifest(cfg.manifest, cfg.data_root)
    out = args.out_dir or Path("runs") / "cv" / (
        dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{cfg.arch}"
    )
    plan = CVPlan(
        config=cfg,
        folds=args.folds,
        fold_seed=args.fold_seed,
        seeds=tuple(args.seeds) if args.seeds else (cfg.seed,),
        keep_models=registry_root if args.keep_models else None,
        version_prefix=args.version_prefix,
        nema_image=load_nema_image(args.nema_cr, log),
        command=f"{argv0} {shlex.join(sys.argv[1:])}",
    )
    try:  # too few groups for the folds, no train + val rows: before any training
        assign_folds(cv_rows(manifest), plan.folds, plan.fold_seed)
    except ValueError as exc:
        raise UsageError(str(exc), "use fewer --folds or a manifest with more groups") from exc
    report = run_cv(
        plan,
        manifest,
        out,
        resume=not args.no_resume,
        only_folds=() if args.summarise else args.only_folds,
        progress=not args.no_progress,
        log=log,
    )
    summary = report["summary"]
    cells = ", ".join(
        f"{label} {format_mean_sd(summary[key], key)}" for key, label in CV_METRICS.items()
    )
    ran = len(report["per_fold"])
    print(
        f"cross-validation of {cfg.arch} ({ran} of {plan.folds * len(plan.seeds)} fold runs, "
        f"{plan.folds} folds x {len(plan.seeds)} seeds): {cells}"
    )
    print(
        f"cost {report['cost']['seconds_per_fold_mean']:.0f} s per fold; results in {out}"
        + (f"; versions {json.dumps(report['versions'])}" if report["versions"] else "")
    )
    return 0
