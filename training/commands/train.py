"""``train``: train a model on a manifest and save it as a new registry version.

The flags of the training run are generated from :class:`training.config.TrainConfig`'s fields
(:mod:`training.flags`); the ones here say where the run and the version go.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path

from common.errors import UsageError
from training import flags
from training.commands.inputs import add_registry_argument, load_manifest, log, split_rows
from training.config import FLAG_GROUPS, TrainConfig
from training.portable import Anchors, portable_card

NAME = "train"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``train``; its ``func(args, registry_root, argv0)`` runs it."""
    parser = subparsers.add_parser(
        NAME,
        help="train a model on a manifest and save it as a new registry version",
        description="Train per the paper's protocol (every choice a flag), choose the threshold "
        "on val, save a new version with its model card (activated only with --activate).",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field, then where the run and the version go."""
    flags.add_arguments(parser, TrainConfig, FLAG_GROUPS)
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="checkpoints folder (default runs/<time>-<arch>)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from RUN_DIR/last.pt if it exists"
    )
    parser.add_argument("--version", default="", help="version name (default: next vNNNN)")
    parser.add_argument("--activate", action="store_true", help="make the new version active")
    parser.add_argument("--notes", default="", help="free text for the model card")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_registry_argument(parser)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` the parsed flags describe; a bad combination is a usage error."""
    try:
        config: TrainConfig = flags.from_args(TrainConfig, args)
    except ValueError as exc:  # a message, not a traceback
        raise UsageError(str(exc), "see `train --help` for the flags' ranges") from exc
    return config


def run(args: argparse.Namespace, registry_root: Path, argv0: str = "deepcovid") -> int:
    """Load the manifest, train, pick the threshold, fit the OOD check, save (maybe activate)."""
    from models.registry import round_to_dtype
    from training.dataset import load_split
    from training.ood_fit import fit_for_release
    from training.predict import predict_logits, probabilities, setup_device
    from training.release import make_card, save_version
    from training.trainer import train

    cfg = config_from_args(args)
    manifest = load_manifest(cfg.manifest, cfg.data_root)
    train_rows, val_rows = split_rows(manifest, "train"), split_rows(manifest, "val")
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    run_dir = args.run_dir or Path("runs") / (
        dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{cfg.arch}"
    )
    log(f"manifest {manifest.path} ({manifest.sha256[:12]}): {json.dumps(manifest.counts())}")
    t0 = time.perf_counter()
    spec = cfg.preprocess_spec()  # the one the trainer uses and the card records
    train_data = load_split(train_rows, spec, cfg.load_workers)
    val_data = load_split(val_rows, spec, cfg.load_workers)
    log(
        f"loaded {len(train_data)} train / {len(val_data)} val images "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    result = train(
        cfg,
        train_data,
        val_data,
        run_dir,
        resume=args.resume,
        progress=not args.no_progress,
        log=log,
    )
    round_to_dtype(result.model, cfg.weights_dtype)  # the card describes the stored network
    device = setup_device(cfg.device, cfg.threads)  # IEEE fp32 for the threshold, as serving
    logits = predict_logits(result.model.to(device), val_data.gray, spec, device)
    result.model.cpu()
    card = make_card(
        cfg,
        result,
        manifest,
        val_data.labels.numpy(),
        probabilities(logits),
        command=f"{argv0} {shlex.join(sys.argv[1:])}",
        version=args.version,
        notes=args.notes,
    )
    anchors = Anchors(registry=registry_root, manifest_dir=manifest.path.parent)
    card = portable_card(card, anchors, manifest.path)
    # The OOD check is saved with the version, so it appears in the registry complete.
    card, extra = fit_for_release(result.model, card, train_data, val_data, manifest, device)
    version = save_version(
        registry_root, result.model, card, activate=args.activate, extra_files=extra
    )
    val = {k: round(m.value, 4) for k, m in card.metrics.items()}
    print(
        f"saved version {version} in {registry_root}{' (active)' if args.activate else ''}: "
        f"best epoch {result.best_epoch}/{len(result.history)} ({result.stopped_because}), "
        f"threshold {card.threshold:.4f}, {json.dumps(val)}, "
        f"training {result.training_seconds:.0f} s"
    )
    return 0
