"""Arguments and handlers of ``train``, ``evaluate`` and ``compare``.

Shared by ``deepcovid`` (:mod:`deepcovid.commands.training`) and ``python -m training`` (which runs
on machines with only torch, torchvision, scikit-learn and matplotlib: no settings object, no
DICOM libraries). Handlers parse, call the library, and print; the logic lives in the modules.

What a user can get wrong (a missing manifest, an unknown version or split, a bad flag
combination) is raised as :class:`common.errors.UsageError`, which both command lines print as one
line. Paths written into cards and reports are made portable (:mod:`training.portable`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import UsageError, UserError
from models.files import WEIGHTS_DTYPES
from training.config import SELECT_BY, SOURCE_SAMPLING, AugmentSpec, TrainConfig
from training.manifest import Manifest, ManifestRow, read_manifest
from training.portable import Anchors, portable_card, portable_path

if TYPE_CHECKING:
    import torch
    from torch import nn

    from models.card import ModelCard
    from models.preprocessing import PreprocessSpec
    from models.registry import Registry
    from training.dataset import SplitData
    from training.evaluate import Scored
    from training.shortcuts import ShortcutChecks

_DEFAULTS = TrainConfig(manifest="")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_registry_argument(parser: argparse.ArgumentParser) -> None:
    """``--registry``: where versions live (default: settings' registry, or the shipped one)."""
    parser.add_argument(
        "--registry",
        type=Path,
        default=None,
        help="model registry folder (default: the configured one, else the shipped registry)",
    )


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``train``: one per :class:`training.config.TrainConfig` field."""
    d = _DEFAULTS
    a = d.aug
    parser.add_argument("--manifest", required=True, help="manifest CSV (path,label,split,...)")
    parser.add_argument(
        "--data-root", help="folder image paths are relative to (default: manifest's)"
    )
    parser.add_argument("--arch", default=d.arch, help=f"architecture (default {d.arch})")
    parser.add_argument(
        "--init", default=d.init, help="none | imagenet | path of a state dict (default none)"
    )
    parser.add_argument(
        "--head-bias",
        type=float,
        default=None,
        help="initial bias of the classification head (SqueezeNet from scratch: 1.0 keeps its "
        "ReLU head alive; default: torchvision's 0)",
    )
    parser.add_argument(
        "--finetune",
        default=d.finetune,
        choices=("auto", "last", "all"),
        help="layers trained; auto: last layer with pretrained init, all without (the paper)",
    )
    parser.add_argument("--input-size", type=int, default=d.input_size)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--optimizer", default=d.optimizer, choices=("adam", "adamw", "sgd"))
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    parser.add_argument("--schedule", default=d.schedule, choices=("constant", "cosine"))
    parser.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs)
    parser.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    parser.add_argument(
        "--augment",
        default=d.augment,
        choices=("covid", "all", "none"),
        help="which images are augmented (the paper: covid)",
    )
    parser.add_argument(
        "--covid-copies",
        type=int,
        default=d.covid_copies,
        help="visits of each COVID-19 image per epoch, each differently augmented (paper: 5)",
    )
    parser.add_argument(
        "--oversample",
        action=argparse.BooleanOptionalAction,
        default=d.oversample,
        help="balance the classes by resampling the smaller one",
    )
    parser.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=a.hflip)
    parser.add_argument("--rotate-deg", type=float, default=a.rotate_deg)
    parser.add_argument(
        "--scale", type=float, nargs=2, default=list(a.scale), metavar=("MIN", "MAX")
    )
    parser.add_argument("--shear-deg", type=float, default=a.shear_deg)
    parser.add_argument("--translate", type=float, default=a.translate)
    parser.add_argument("--brightness", type=float, default=a.brightness)
    parser.add_argument("--contrast", type=float, default=a.contrast)
    parser.add_argument("--gamma", type=float, default=a.gamma)
    _add_shortcut_arguments(parser)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", default=d.device, help="auto | cpu | cuda[:N]")
    parser.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=d.amp, help="bf16 autocast on CUDA"
    )
    parser.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=d.channels_last
    )
    parser.add_argument(
        "--target-sensitivity",
        type=float,
        default=d.target_sensitivity,
        help="operating point chosen on val (paper: 0.98)",
    )
    parser.add_argument(
        "--select-by",
        default=d.select_by,
        choices=SELECT_BY,
        help="best checkpoint by val AUC, pooled within-source AUC (robust to source "
        "recognition), or loss (default auc)",
    )
    parser.add_argument("--patience", type=int, default=d.patience, help="early stop (0: off)")
    parser.add_argument(
        "--weights-dtype",
        default=d.weights_dtype,
        choices=WEIGHTS_DTYPES,
        help="how the registry stores the weights; float16 halves the file, and the model is "
        "rounded to it before the threshold and val metrics are computed (default float32)",
    )
    parser.add_argument("--time-limit-s", type=float, default=None, help="training time budget")
    parser.add_argument(
        "--fit-epochs-to-time",
        action="store_true",
        help="with --time-limit-s: after epoch 2 lower --epochs to what fits the budget",
    )
    parser.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    parser.add_argument("--load-workers", type=int, default=d.load_workers)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
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


def _add_shortcut_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags against source shortcuts (docs/training.md, "Training against shortcuts")."""
    d = _DEFAULTS
    a = d.aug
    g = parser.add_argument_group(
        "training against shortcuts",
        "augmentations that erase source cues, source-balanced sampling, hard negatives, a "
        "source adversary; all off by default (the paper's recipe)",
    )
    g.add_argument(
        "--border-crop",
        type=float,
        default=a.border_crop,
        metavar="FRAC",
        help="crop 0..FRAC at each edge, resize back (0: off)",
    )
    g.add_argument(
        "--border-erase",
        type=int,
        default=a.border_erase,
        metavar="N",
        help="N rectangles per image touching the edges, filled with random gray (0: off)",
    )
    g.add_argument(
        "--border-erase-size",
        type=float,
        default=a.border_erase_size,
        metavar="FRAC",
        help=f"largest depth of an erased rectangle, fraction of the side ({a.border_erase_size})",
    )
    g.add_argument(
        "--downscale",
        type=float,
        default=a.downscale,
        metavar="MIN",
        help="resolution change: shrink by a factor in [MIN, 1], enlarge back (1: off)",
    )
    g.add_argument(
        "--blur-sigma",
        type=float,
        default=a.blur_sigma,
        metavar="PX",
        help="Gaussian blur, sigma in [0, PX] pixels (0: off)",
    )
    g.add_argument(
        "--jpeg-quality",
        type=int,
        default=a.jpeg_quality,
        metavar="Q",
        help="JPEG re-compression at quality in [Q, 95] (0: off; CPU, slower)",
    )
    g.add_argument(
        "--jpeg-p",
        type=float,
        default=a.jpeg_p,
        help=f"probability of JPEG re-compression per augmented image ({a.jpeg_p})",
    )
    g.add_argument(
        "--noise-std",
        type=float,
        default=a.noise_std,
        help="Gaussian noise, std in [0, STD] of the [0, 1] range (0: off)",
    )
    g.add_argument(
        "--source-sampling",
        default=d.source_sampling,
        choices=SOURCE_SAMPLING,
        help="spread each epoch over sources: equally, by --source-temperature, or not (none)",
    )
    g.add_argument(
        "--source-temperature",
        type=float,
        default=d.source_temperature,
        metavar="T",
        help="source shares proportional to n_images**(1/T) (1: as the data; larger: flatter)",
    )
    g.add_argument(
        "--hard-negative-weight",
        type=float,
        default=d.hard_negative_weight,
        help="loss weight of hard negatives: non-COVID disease findings of "
        "--hard-negative-sources (1: as others)",
    )
    g.add_argument(
        "--hard-negative-copies",
        type=int,
        default=d.hard_negative_copies,
        help="visits of each hard negative per epoch (1: as others)",
    )
    g.add_argument(
        "--hard-negative-sources",
        nargs="+",
        default=list(d.hard_negative_sources),
        metavar="SOURCE",
        help=f"sources whose non-COVID pneumonias are hard negatives "
        f"({' '.join(d.hard_negative_sources)})",
    )
    g.add_argument(
        "--adversary-weight",
        type=float,
        default=d.adversary_weight,
        help="source-adversarial head: gradient-reversal strength (0: off)",
    )
    g.add_argument(
        "--lung-crop",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="PreprocessSpec.lung_crop: crop to the lung fields (needs a spec that has it)",
    )
    g.add_argument(
        "--lung-mask",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="PreprocessSpec.lung_mask (needs a spec that has it)",
    )
    g.add_argument(
        "--equalise",
        choices=("none", "hist", "clahe"),
        default=None,
        help="PreprocessSpec.equalise (needs a spec that has it)",
    )


def _preprocess_from_args(args: argparse.Namespace) -> dict[str, object]:
    """PreprocessSpec fields given on the command line (absent ones keep the spec's default)."""
    given = {
        "lung_crop": getattr(args, "lung_crop", None),
        "lung_mask": getattr(args, "lung_mask", None),
        "equalise": getattr(args, "equalise", None),
    }
    return {k: v for k, v in given.items() if v is not None}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` the parsed flags describe."""
    aug = AugmentSpec(
        hflip=args.hflip,
        rotate_deg=args.rotate_deg,
        scale=(float(args.scale[0]), float(args.scale[1])),
        shear_deg=args.shear_deg,
        translate=args.translate,
        brightness=args.brightness,
        contrast=args.contrast,
        gamma=args.gamma,
        border_crop=args.border_crop,
        border_erase=args.border_erase,
        border_erase_size=args.border_erase_size,
        downscale=args.downscale,
        blur_sigma=args.blur_sigma,
        jpeg_quality=args.jpeg_quality,
        jpeg_p=args.jpeg_p,
        noise_std=args.noise_std,
    )
    return TrainConfig(
        manifest=str(args.manifest),
        data_root=str(args.data_root) if args.data_root else None,
        arch=args.arch,
        init=args.init,
        head_bias=args.head_bias,
        finetune=args.finetune,
        input_size=args.input_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
        schedule=args.schedule,
        warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing,
        augment=args.augment,
        covid_copies=args.covid_copies,
        oversample=args.oversample,
        source_sampling=args.source_sampling,
        source_temperature=args.source_temperature,
        hard_negative_sources=tuple(args.hard_negative_sources),
        hard_negative_weight=args.hard_negative_weight,
        hard_negative_copies=args.hard_negative_copies,
        adversary_weight=args.adversary_weight,
        preprocess=_preprocess_from_args(args),
        aug=aug,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        target_sensitivity=args.target_sensitivity,
        select_by=args.select_by,
        patience=args.patience,
        time_limit_s=args.time_limit_s,
        fit_epochs_to_time=args.fit_epochs_to_time,
        eval_batch_size=args.eval_batch_size,
        load_workers=args.load_workers,
        threads=args.threads,
        weights_dtype=args.weights_dtype,
    )


def _command_line(argv0: str) -> str:
    return f"{argv0} {shlex.join(sys.argv[1:])}"


def run_train(args: argparse.Namespace, registry_root: Path, argv0: str = "deepcovid") -> int:
    """``train``: load the manifest, train, pick the threshold, save (and maybe activate)."""
    from training.dataset import load_split
    from training.predict import predict_logits, probabilities
    from training.release import make_card, save_version
    from training.trainer import train

    try:
        cfg = config_from_args(args)
    except ValueError as exc:  # a bad flag combination: a message, not a traceback
        raise UsageError(str(exc), "see `train --help` for the flags' ranges") from exc
    manifest = _read_manifest(cfg.manifest, cfg.data_root)
    train_rows, val_rows = _split_rows(manifest, "train"), _split_rows(manifest, "val")
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    run_dir = args.run_dir or Path("runs") / (
        dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{cfg.arch}"
    )
    _log(f"manifest {manifest.path} ({manifest.sha256[:12]}): {json.dumps(manifest.counts())}")
    t0 = time.perf_counter()
    spec = cfg.preprocess_spec()  # the one the trainer uses and the card records
    train_data = load_split(train_rows, spec, cfg.load_workers)
    val_data = load_split(val_rows, spec, cfg.load_workers)
    _log(
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
        log=_log,
    )
    from models.registry import round_to_dtype

    round_to_dtype(result.model, cfg.weights_dtype)  # the card describes the stored network
    device = _setup_device(cfg.device, cfg.threads)  # IEEE fp32 for the threshold, as serving
    logits = predict_logits(result.model.to(device), val_data.gray, spec, device)
    result.model.cpu()
    card = make_card(
        cfg,
        result,
        manifest,
        val_data.labels.numpy(),
        probabilities(logits),
        command=_command_line(argv0),
        version=args.version,
        notes=args.notes,
    )
    from training.ood_fit import fit_for_release  # the domain check is saved with the version

    anchors = Anchors(registry=registry_root, manifest_dir=manifest.path.parent)
    card = portable_card(card, anchors, manifest.path)
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


def add_shortcut_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the shortcut checks (probes, heatmap localisation) that ``evaluate`` and
    ``compare`` share."""
    parser.add_argument("--occlusion-window", type=int, default=32)
    parser.add_argument("--occlusion-stride", type=int, default=8)
    parser.add_argument(
        "--no-probes",
        action="store_true",
        help="skip the shortcut probes (every image scored again with the lungs hidden and "
        "with only the lungs shown)",
    )
    parser.add_argument(
        "--localisation-sample",
        type=int,
        default=40,
        metavar="N",
        help="images (stratified by class and source) whose occlusion map is computed to "
        "measure the evidence inside the lung fields; 0 skips it (default 40)",
    )
    parser.add_argument(
        "--localisation-seed", type=int, default=0, help="seed of the localisation sample"
    )


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``evaluate``."""
    parser.add_argument("--model", default=None, help="version to evaluate (default: active)")
    parser.add_argument(
        "--split",
        default="test",
        help="a split of the manifest: train, val, test or any other it names (default test)",
    )
    parser.add_argument(
        "--manifest", default=None, help="manifest CSV (default: the one named in the model card)"
    )
    parser.add_argument("--data-root", default=None, help="folder image paths are relative to")
    parser.add_argument("--out", type=Path, default=None, help="report folder")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--bootstrap", type=int, default=2000, help="AUC bootstrap resamples")
    parser.add_argument("--occlusion-images", type=int, default=12, help="heatmaps in the grid")
    add_shortcut_arguments(parser)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--load-workers", type=int, default=4)
    parser.add_argument(
        "--record-in-card",
        action="store_true",
        help="also store the split's metrics (overall and per source) in the version's card",
    )
    add_registry_argument(parser)


def _open_manifest(
    path: str | None, data_root: str | None, card_manifest: str, registry_root: Path | None = None
) -> Manifest:
    """The manifest given, else the one the model card names (its portable path resolved
    against the registry, the working folder and the repository)."""
    if path:
        return _read_manifest(path, data_root)
    if not card_manifest:
        raise UsageError("the model card names no manifest", "pass --manifest")
    from training.portable import resolve_portable

    found = resolve_portable(card_manifest, registry_root)
    if found is None or not found.is_file():
        raise UsageError(
            f"the manifest the model card names ({card_manifest}) is not on this machine",
            "pass --manifest with its copy here (the card's sha256 tells whether it is the same)",
        )
    return _read_manifest(str(found), data_root)


def _read_manifest(path: str, data_root: str | None) -> Manifest:
    """:func:`read_manifest`, a missing or malformed file being a usage error."""
    try:
        return read_manifest(path, data_root)
    except FileNotFoundError as exc:
        raise UsageError(str(exc), "pass --manifest with the path of a manifest CSV") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        fix = "fix the manifest (docs/training.md, 'Data: the manifest')"
        raise UsageError(str(exc), fix) from exc


def _split_rows(manifest: Manifest, split: str) -> list[ManifestRow]:
    """The rows of ``split``; a split the manifest lacks is a usage error naming those it has."""
    try:
        return manifest.split(split)
    except ValueError as exc:
        raise UsageError(str(exc), "choose one of them with --split") from exc


def _load_version(registry: Registry, version: str | None) -> tuple[nn.Module, ModelCard]:
    """Model and card of ``version`` (default: the active one); an unknown version is a usage
    error, weights that do not match their card an error of the registry's files."""
    from models.registry import RegistryError, WeightsIntegrityError

    try:
        return registry.load(version)
    except WeightsIntegrityError as exc:
        raise UserError(str(exc), "copy the version again or choose another") from exc
    except RegistryError as exc:
        raise UsageError(str(exc), "name one of the registry's versions") from exc


def _card_of(registry: Registry, version: str) -> ModelCard:
    """The card of ``version``; an unknown version is a usage error."""
    from models.registry import RegistryError

    try:
        return registry.card(version)
    except RegistryError as exc:
        raise UsageError(str(exc), "name one of the registry's versions") from exc


def _fmt(value: float | None) -> str:
    """A metric for the one-line summary: 4 decimals, ``n/a`` for JSON's null."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _setup_device(name: str, threads: int | None) -> torch.device:
    import torch

    from training.predict import resolve_device

    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(name)
    if device.type == "cuda":
        # Evaluation in IEEE fp32, as serving does (TF32 would move probabilities).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


def _shortcut_checks(
    args: argparse.Namespace,
    model: nn.Module,
    card: ModelCard,
    data: SplitData,
    scored: Scored,
    device: torch.device,
) -> ShortcutChecks:
    """The probes and the localisation sample as the shortcut flags ask, timed in the log."""
    from training.shortcuts import shortcut_checks

    t0 = time.perf_counter()
    checks = shortcut_checks(
        model,
        card,
        data,
        scored,
        device,
        probes=not args.no_probes,
        localisation_sample=args.localisation_sample,
        localisation_seed=args.localisation_seed,
        window=args.occlusion_window,
        stride=args.occlusion_stride,
        log=_log,
    )
    _log(f"{card.version}: shortcut probes and localisation in {time.perf_counter() - t0:.1f} s")
    return checks


def run_evaluate(args: argparse.Namespace, registry_root: Path, argv0: str = "deepcovid") -> int:
    """``evaluate``: score a split with a version and write the report folder."""
    from models.registry import Registry
    from training.dataset import load_split
    from training.evaluate import compute_metrics, json_safe, score_split
    from training.heatmaps import occlusion_examples
    from training.report import write_predictions, write_report

    registry = Registry(registry_root)
    model, card = _load_version(registry, args.model)
    manifest = _open_manifest(args.manifest, args.data_root, card.training_manifest, registry_root)
    rows = _split_rows(manifest, args.split)
    if card.training_manifest_sha256 and manifest.sha256 != card.training_manifest_sha256:
        _log(
            f"note: manifest {manifest.path} differs from the one the model was trained on "
            f"(sha256 {manifest.sha256[:12]} vs {card.training_manifest_sha256[:12]})"
        )
    device = _setup_device(args.device, args.threads)
    data = load_split(rows, card.preprocess, args.load_workers)
    scored = score_split(model, card, data, device)
    metrics = compute_metrics(scored, card, manifest, args.split, n_boot=args.bootstrap)
    anchors = Anchors(registry=registry_root, manifest_dir=manifest.path.parent)
    metrics["manifest"] = portable_path(manifest.path, anchors, manifest=False)
    shortcuts = _shortcut_checks(args, model, card, data, scored, device)
    metrics.update(json_safe({"probes": shortcuts.probes, "localisation": shortcuts.localisation}))
    occ = occlusion_examples(
        model,
        card,
        data,
        scored.probs,
        count=args.occlusion_images,
        window=args.occlusion_window,
        stride=args.occlusion_stride,
        device=device,
        masks=shortcuts.masks,
        cache=shortcuts.maps,
    )
    out = args.out or Path("runs") / "reports" / f"{card.version}-{args.split}"
    files = write_report(out, metrics, portable_card(card, anchors), occ)
    files.append(write_predictions(out, scored, card.threshold))
    if args.record_in_card:
        from training.release import record_metrics

        record_metrics(registry, card, scored, args.split, args.bootstrap)
    op = metrics["operating_point"]
    print(
        f"{card.version} on {args.split} ({metrics['n']} images): AUC {metrics['auc']:.4f} "
        f"(95 % CI {metrics['auc_ci_bootstrap'][0]:.4f}-{metrics['auc_ci_bootstrap'][1]:.4f}), "
        f"within-source AUC {_fmt(metrics['within_source']['pooled_auc'])}, source-only "
        f"baseline AUC {_fmt(metrics['source_only_auc'])}, "
        f"at threshold {card.threshold:.4f}: sensitivity {op['sensitivity']:.4f}, "
        f"specificity {op['specificity']:.4f}; report {out} ({len(files)} files)"
    )
    return 0


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``compare``."""
    parser.add_argument("versions", nargs="+", help="model versions to compare")
    parser.add_argument(
        "--split", default="test", help="a split of the manifest (default test; any it names)"
    )
    parser.add_argument("--manifest", default=None, help="default: the first version's card")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--load-workers", type=int, default=4)
    add_shortcut_arguments(parser)
    add_registry_argument(parser)


def run_compare(args: argparse.Namespace, registry_root: Path, argv0: str = "deepcovid") -> int:
    """``compare``: Table 6 and overlaid curves of several versions on one split."""
    from models.registry import Registry
    from training.compare import compare_row, write_comparison
    from training.dataset import load_split
    from training.evaluate import score_split

    registry = Registry(registry_root)
    cards = [_card_of(registry, version) for version in args.versions]  # all known: then work
    manifest = _open_manifest(
        args.manifest, args.data_root, cards[0].training_manifest, registry_root
    )
    rows_meta = _split_rows(manifest, args.split)
    device = _setup_device(args.device, args.threads)
    cache: dict[PreprocessSpec, SplitData] = {}
    rows = []
    for version in args.versions:
        model, card = _load_version(registry, version)
        if card.preprocess not in cache:
            cache[card.preprocess] = load_split(rows_meta, card.preprocess, args.load_workers)
        scored = score_split(model, card, cache[card.preprocess], device)
        checks = _shortcut_checks(args, model, card, cache[card.preprocess], scored, device)
        rows.append(
            compare_row(
                version,
                card.architecture,
                card.threshold,
                scored,
                args.bootstrap,
                trained_sources=card.source_prevalence or None,
                probes=checks.probes,
                localisation=checks.localisation,
            )
        )
    out = args.out or Path("runs") / "reports" / ("compare-" + "-".join(args.versions))
    write_comparison(out, args.split, rows, len(rows_meta))
    for r in rows:
        print(
            f"{r['version']} ({r['architecture']}): AUC {r['auc']:.4f}, within-source AUC "
            f"{_fmt(r['within_source_auc'])}, sensitivity "
            f"{r['sensitivity']:.4f}, specificity {r['specificity']:.4f}"
        )
    print(f"comparison written to {out}")
    return 0


def add_threshold_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``threshold``."""
    parser.add_argument("--model", default=None, help="version (default: active)")
    parser.add_argument("--manifest", default=None, help="default: the one named in the card")
    parser.add_argument("--data-root", default=None)
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


def run_threshold(args: argparse.Namespace, registry_root: Path, argv0: str = "deepcovid") -> int:
    """``threshold``: choose the operating threshold of a version again and store it in its card.

    For a site's own validation images, or after the images were re-encoded: the threshold must
    come from the images and numerics serving will see.
    """
    from models.registry import CARD_FILE, Registry
    from training.dataset import load_split
    from training.evaluate import score_split
    from training.release import rechoose_threshold

    registry = Registry(registry_root)
    model, card = _load_version(registry, args.model)
    manifest = _open_manifest(args.manifest, args.data_root, card.training_manifest, registry_root)
    rows = _split_rows(manifest, args.split)
    if args.split == "test":
        _log(
            "note: a threshold chosen on the test split makes that split's figures optimistic; "
            "report them on another split"
        )
    device = _setup_device(args.device, args.threads)
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
        updated.save(registry.path(card.version) / CARD_FILE)
    return 0


def register_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``train``, ``evaluate``, ``compare``, ``threshold``, ``fit-domain``;
    ``func(args, registry_root, argv0)`` runs one."""
    p = subparsers.add_parser(
        "train",
        help="train a model on a manifest and save it as a new registry version",
        description="Train per the paper's protocol (every choice a flag), choose the threshold "
        "on val, save a new version with its model card (activated only with --activate).",
    )
    add_train_arguments(p)
    p.set_defaults(func=run_train)
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a model version on a split and write a report folder",
        description="metrics.json + report.md + figures: sensitivity/specificity over thresholds "
        "with 95 % CIs, ROC/PR, confusion matrix, score histograms, per-source metrics, "
        "occlusion heatmaps.",
    )
    add_evaluate_arguments(p)
    p.set_defaults(func=run_evaluate)
    p = subparsers.add_parser(
        "compare",
        help="compare model versions on one split (Table 6, overlaid ROC/PR)",
    )
    add_compare_arguments(p)
    p.set_defaults(func=run_compare)
    p = subparsers.add_parser(
        "threshold",
        help="choose a version's operating threshold again (on val) and store it in its card",
    )
    add_threshold_arguments(p)
    p.set_defaults(func=run_threshold)
    from training.ood_fit import add_fit_domain_arguments, run_fit_domain

    p = subparsers.add_parser(
        "fit-domain",
        help="fit a version's domain check (features of train, threshold on val) and store it",
    )
    add_fit_domain_arguments(p)
    p.set_defaults(func=run_fit_domain)
