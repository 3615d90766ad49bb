"""Cross-validation of a training recipe: out-of-fold predictions of train + val, and their metrics.

The recipe (a :class:`training.config.TrainConfig`) is trained once per fold of
:func:`training.folds.assign_folds` (and per training seed) with the same trainer as ``train``,
then scores the fold it never saw. Every train + val film thus gets one out-of-fold probability
per seed, from a model that neither trained nor selected on it; the test split is not read.

**Epoch selection.** The recipes select their epoch on a validation split (``select_by``,
``patience``). Using the held-out fold for that would let it choose among epochs, so its score
would be the best of several draws (the very flattery this protocol removes). A fixed epoch count
would change the recipe being measured (the shipped one keeps the best of 10 epochs by
within-source AUC). So each fold's model selects on an *inner* validation part carved from its
training folds (:func:`training.folds.inner_split`: grouped and stratified like the folds, one of
``max(K - 1, 3)`` parts, i.e. a fifth of train + val at K = 5), exactly as ``train`` selects on
val, and the held-out fold is scored once, after training. The price: a fold model fits on
3/5 of train + val (688 films of the shared manifest) where ``train`` fits on 932, so CV figures
are a little pessimistic for every recipe alike; the comparison between recipes stays fair.

Results are written per (fold, seed) as they finish (``folds/``), so an interrupted run continues
where it stopped (``resume``) when the recipe and the folds are the same. ``keep_models`` saves each
fold model as a registry version (unactivated; card threshold on its inner part, source shares of
its training folds), so an ensemble can be built from them.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.atomic import atomic_write
from training.config import TrainConfig
from training.cv_metrics import SUMMARY_FILE, calls_at, fold_metrics, summarise
from training.dataset import SplitData, load_split
from training.evaluate import json_safe
from training.folds import assign_folds, cv_rows, fold_counts, held_out, inner_split
from training.manifest import LABELS, Manifest, ManifestRow
from training.predict import predict_logits, probabilities, setup_device

Log = Callable[[str], None]

OOF_FILE = "oof.csv"
"""The out-of-fold predictions: one row per (train + val film, seed)."""
TABLE_FILE = "cv.md"
FOLDS_DIR = "folds"
RESULT_MODE = 0o644
"""Results are read by people and other tools (not secrets)."""


@dataclasses.dataclass(frozen=True)
class CVPlan:
    """What a cross-validation runs: the recipe, the folds and the training seeds."""

    config: TrainConfig
    folds: int = 5
    fold_seed: int = 0
    seeds: tuple[int, ...] = (0,)
    keep_models: Path | None = None
    """Registry to save each fold model in (None: not kept)."""
    version_prefix: str = "cv"
    nema_image: np.ndarray | None = None
    """The NEMA sample CR as a 2-D [0, 1] array (None: not scored)."""
    command: str = ""

    @property
    def inner_parts(self) -> int:
        """The inner validation part is one of this many parts of the training folds."""
        return max(self.folds - 1, 3)


@dataclasses.dataclass
class FoldResult:
    """One (fold, seed): its held-out metrics, predictions and cost."""

    fold: int
    seed: int
    metrics: dict[str, float]
    probabilities: list[float]
    """In the order of the held-out fold's rows."""
    seconds: dict[str, float]
    best_epoch: int
    epochs_run: int
    n_fit: int
    n_inner: int
    n_held: int
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_NOT_RECIPE = frozenset({"seed", "device", "threads", "load_workers", "eval_batch_size"})
"""Training settings that do not change what a fold run measures (``seed`` is keyed per file)."""

_WHERE = frozenset({"manifest", "data_root"})
"""Where the data lies: the manifest's sha256 identifies it, so a fold run on another machine
(the repository's data under another path, e.g. a GPU box) is the same run."""


def _plan_key(
    plan: CVPlan, manifest: Manifest, folds: Sequence[int], *, with_paths: bool = False
) -> str:
    """What a stored fold result must match to be reused: manifest (by sha256), folds and
    recipe. ``with_paths`` gives the key fold results stored before 2026-12-06 carry, which
    also held the manifest's path and the data root."""
    left_out = _NOT_RECIPE if with_paths else _NOT_RECIPE | _WHERE
    recipe = {k: v for k, v in plan.config.to_dict().items() if k not in left_out}
    text = json.dumps(
        {"manifest": manifest.sha256, "folds": list(folds), "recipe": recipe}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _subset(data: SplitData, index: Sequence[int]) -> SplitData:
    idx = torch.as_tensor(list(index), dtype=torch.long)
    return SplitData(data.gray[idx], data.labels[idx], [data.rows[i] for i in index])


def nema_probability(
    model: torch.nn.Module, image: np.ndarray | None, config: TrainConfig, device: torch.device
) -> float | None:
    """The model's COVID-19 probability for the NEMA CR (None when no image was given)."""
    if image is None:
        return None
    from models.preprocessing import prepare_gray

    spec = config.preprocess_spec()
    gray = prepare_gray(image, spec).unsqueeze(0)
    return float(probabilities(predict_logits(model.to(device), gray, spec, device))[0])


def load_nema_image(path: Path | None, log: Log) -> np.ndarray | None:
    """The NEMA sample CR through the serving path (:func:`models.dicom_pixels.dicom_to_array`);
    None, with a note, when it is absent or pydicom is not installed (training needs no DICOM)."""
    if path is None:
        return None
    if not path.is_file():
        log(f"note: no NEMA CR at {path}; its probability is not measured")
        return None
    try:
        import pydicom

        from models.dicom_pixels import dicom_to_array
    except ImportError:
        log("note: pydicom is not installed; the NEMA CR probability is not measured")
        return None
    return dicom_to_array(pydicom.dcmread(path))


def _train_fold(
    plan: CVPlan,
    manifest: Manifest,
    data: SplitData,
    folds: Sequence[int],
    fold: int,
    seed: int,
    run_dir: Path,
    log: Log,
    progress: bool,
    features: torch.Tensor | None = None,
) -> FoldResult:
    """Train on the other folds (selecting on an inner part), score the held-out fold.

    ``features``: the frozen backbone's output for every image of ``data`` (a head-only recipe
    without augmentation), computed once for all folds instead of once per fold.
    """
    from models.architectures import split_at_head
    from models.registry import round_to_dtype
    from training.trainer import train

    rows = data.rows
    training, held = held_out(folds, fold)
    fit, inner = inner_split(rows, training, plan.inner_parts, seed=plan.fold_seed)
    cfg = dataclasses.replace(plan.config, seed=seed)
    t0 = time.perf_counter()
    given = None if features is None else (features[fit], features[inner])
    result = train(
        cfg,
        _subset(data, fit),
        _subset(data, inner),
        run_dir,
        progress=progress,
        log=log,
        backbone_outputs=given,
    )
    round_to_dtype(result.model, cfg.weights_dtype)  # scored as it would be stored
    t1 = time.perf_counter()
    device = setup_device(cfg.device, cfg.threads)  # IEEE fp32, as serving
    spec = cfg.preprocess_spec()
    held_data = _subset(data, held)
    if features is not None and cfg.weights_dtype == "float32":  # the stored backbone, exactly
        head = split_at_head(result.model.eval(), cfg.arch)[1]
        with torch.inference_mode():
            probs = probabilities(head(features[held]).float())
    else:
        probs = probabilities(predict_logits(result.model.to(device), held_data.gray, spec, device))
    nema = nema_probability(result.model, plan.nema_image, cfg, device)
    t2 = time.perf_counter()
    version = None
    if plan.keep_models is not None:
        version = _keep(plan, manifest, cfg, result, data, fit, inner, fold, seed, device)
    result.model.cpu()
    metrics = fold_metrics(held_data.labels.numpy(), probs, held_data.rows, nema)
    return FoldResult(
        fold=fold,
        seed=seed,
        metrics=metrics,
        probabilities=[round(float(p), 6) for p in probs],
        seconds={
            "train": round(t1 - t0, 1),
            "predict": round(t2 - t1, 1),
            "total": round(time.perf_counter() - t0, 1),
        },
        best_epoch=result.best_epoch,
        epochs_run=len(result.history),
        n_fit=len(fit),
        n_inner=len(inner),
        n_held=len(held),
        version=version,
    )


def _keep(
    plan: CVPlan,
    manifest: Manifest,
    cfg: TrainConfig,
    result: Any,
    data: SplitData,
    fit: Sequence[int],
    inner: Sequence[int],
    fold: int,
    seed: int,
    device: torch.device,
) -> str:
    """Save the fold model as an unactivated registry version (with its domain check)."""
    from training.baseline import source_prevalence
    from training.ood_fit import fit_for_release
    from training.portable import Anchors, portable_card
    from training.release import make_card, save_version

    assert plan.keep_models is not None
    fit_data, inner_data = _subset(data, fit), _subset(data, inner)
    inner_probs = probabilities(
        predict_logits(result.model.to(device), inner_data.gray, cfg.preprocess_spec(), device)
    )
    name = f"{plan.version_prefix}-f{fold}-s{seed}"
    card = make_card(
        cfg,
        result,
        manifest,
        inner_data.labels.numpy(),
        inner_probs,
        command=plan.command,
        version=name,
        notes=(
            f"cross-validation fold model: fold {fold} of {plan.folds} (fold seed "
            f"{plan.fold_seed}) held out, trained on {len(fit)} films of the other folds, epoch "
            f"and threshold chosen on an inner part of them ({len(inner)} films; the card's "
            "'val' metrics are on that part)"
        ),
    )
    params = {**card.training_parameters, "fold": fold, "folds": plan.folds}
    params["fold_seed"] = plan.fold_seed  # with "seed": which fold model of which run
    card = card.replace(
        source_prevalence=source_prevalence(fit_data.rows), training_parameters=params
    )
    anchors = Anchors(registry=plan.keep_models, manifest_dir=manifest.path.parent)
    card = portable_card(card, anchors, manifest.path)
    card, extra = fit_for_release(result.model, card, fit_data, inner_data, manifest, device)
    return save_version(plan.keep_models, result.model, card, extra_files=extra)


def _frozen_features(cfg: TrainConfig, data: SplitData, log: Log) -> torch.Tensor | None:
    """The frozen backbone's output for every film, once, when the recipe trains only the head
    on unaugmented images of pretrained weights (a random backbone would differ per seed)."""
    from models.architectures import build_model
    from training.trainer import FrozenBackbone

    if not FrozenBackbone.applies(cfg) or cfg.init == "none":
        return None
    t0 = time.perf_counter()
    device = setup_device(cfg.device, cfg.threads)
    model = build_model(cfg.arch, init=cfg.init).to(device)
    out = FrozenBackbone.outputs(model, cfg, cfg.preprocess_spec(), device, data)
    log(
        f"frozen backbone: outputs of {len(data)} films computed once "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    return out.cpu()


def _fold_file(out_dir: Path, fold: int, seed: int) -> Path:
    return out_dir / FOLDS_DIR / f"fold{fold}-seed{seed}.json"


def _stored(path: Path, key: str, earlier: Collection[str] = ()) -> FoldResult | None:
    """The fold result stored at ``path`` for this plan (``key``), or None. One stored under an
    ``earlier`` key of the same plan is stored again under ``key``, so that it also matches
    where only ``key`` is known (a run on another machine, with the data under another path)."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    stored_key = data.pop("plan_key", None)
    if stored_key != key and stored_key not in earlier:
        return None
    metrics = {k: (math.nan if v is None else v) for k, v in data.pop("metrics").items()}
    result = FoldResult(metrics=metrics, **data)
    if stored_key != key:
        _store(path, result, key)
    return result


def _store(path: Path, result: FoldResult, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json_safe({**result.to_dict(), "plan_key": key})
    atomic_write(path, (json.dumps(payload) + "\n").encode(), mode=RESULT_MODE)


def run_cv(
    plan: CVPlan,
    manifest: Manifest,
    out_dir: Path,
    *,
    resume: bool = True,
    only_folds: Sequence[int] | None = None,
    progress: bool = False,
    log: Log = print,
) -> dict[str, Any]:
    """Run every (fold, seed) of ``plan`` on ``manifest``'s train + val; write the results.

    Writes ``oof.csv``, ``cv.json`` (per-fold metrics, their mean ± sd, the operating points of
    the pooled out-of-fold predictions, the cost) and ``cv.md``; returns the ``cv.json`` content.
    ``only_folds`` trains just those folds (the others are taken from earlier runs in ``out_dir``
    where there, else left out): a long cross-validation split over several calls, e.g. on a
    machine that limits each command's time; an empty ``only_folds`` trains nothing and loads no
    image (the summary of fold runs made by parallel calls). The summary says how many folds it
    rests on.
    """
    rows = cv_rows(manifest)
    folds = assign_folds(rows, plan.folds, plan.fold_seed)
    key = _plan_key(plan, manifest, folds)
    earlier = {_plan_key(plan, manifest, folds, with_paths=True)}
    counts = fold_counts(rows, folds, plan.folds)
    log(f"{len(rows)} train + val films in {plan.folds} folds: {json.dumps(counts)}")
    t0 = time.perf_counter()
    trains = only_folds is None or len(only_folds) > 0  # an empty list only summarises
    data = (
        load_split(rows, plan.config.preprocess_spec(), plan.config.load_workers)
        if trains
        else None
    )
    load_seconds = time.perf_counter() - t0
    if data is not None:
        log(f"loaded {len(data)} images in {load_seconds:.1f} s")
    if plan.config.threads:
        torch.set_num_threads(plan.config.threads)
    features = _frozen_features(plan.config, data, log) if data is not None else None
    results: list[FoldResult] = []
    for seed in plan.seeds:
        for fold in range(plan.folds):
            path = _fold_file(out_dir, fold, seed)
            done = _stored(path, key, earlier) if resume else None
            if done is None and only_folds is not None and fold not in only_folds:
                log(f"fold {fold + 1}/{plan.folds}, seed {seed}: not run yet, left out")
                continue
            if done is None:
                assert data is not None  # only_folds == () left every missing fold out above
                log(f"fold {fold + 1}/{plan.folds}, seed {seed}: training")
                run_dir = out_dir / "runs" / f"fold{fold}-seed{seed}"
                done = _train_fold(
                    plan, manifest, data, folds, fold, seed, run_dir, log, progress, features
                )
                _store(path, done, key)
            else:
                log(f"fold {fold + 1}/{plan.folds}, seed {seed}: done before, reused")
            m = done.metrics
            log(
                f"fold {fold + 1}/{plan.folds}, seed {seed}: AUC {m['auc']:.4f}, within-source "
                f"AUC {m['within_source_auc']:.4f}, {done.seconds['total']:.0f} s"
            )
            results.append(done)
    report = _report(plan, manifest, rows, folds, counts, results, load_seconds)
    write_results(out_dir, report, rows, folds, results)
    return report


def _pooled_points(labels: np.ndarray, probs: np.ndarray, data: str) -> dict[str, Any]:
    """Both operating points of pooled out-of-fold predictions, with bootstrap CIs."""
    from training.operating_points import operating_points

    try:
        points = operating_points(labels, probs, data=data)
    except ValueError as exc:  # one class only: no operating point
        return {"not_defined": str(exc)}
    return {name: point.to_dict() for name, point in points.items()}


def _report(
    plan: CVPlan,
    manifest: Manifest,
    rows: Sequence[ManifestRow],
    folds: Sequence[int],
    counts: dict[str, list[int]],
    results: Sequence[FoldResult],
    load_seconds: float,
) -> dict[str, Any]:
    from training.metrics import roc_auc
    from training.sources import pooled_within_source_auc

    pooled: dict[str, Any] = {}
    for seed in plan.seeds:
        ran = [r for r in results if r.seed == seed]
        if not ran:
            continue
        probs = _oof_probabilities(rows, folds, ran)
        have = np.isfinite(probs)  # the rows of the folds that ran
        held = [r for r, ok in zip(rows, have, strict=True) if ok]
        labels = np.array([r.label for r in held])
        sources = [r.source or "unknown" for r in held]
        points = _pooled_points(
            labels,
            probs[have],
            f"out-of-fold predictions of train + val ({len(ran)} of {plan.folds} folds, "
            f"seed {seed})",
        )
        nema = [r.metrics.get("nema_cr_probability", math.nan) for r in ran]
        pooled[str(seed)] = {
            "folds": len(ran),
            "auc": roc_auc(labels, probs[have]),
            "within_source_auc": pooled_within_source_auc(labels, probs[have], sources),
            "operating_points": points,
            "calls": {
                name: calls_at(point["threshold"], probs[have], held, nema)
                for name, point in points.items()
                if name != "not_defined"
            },
        }
    totals = [r.seconds["total"] for r in results] or [0.0]
    return json_safe(
        {
            "recipe": plan.config.to_dict(),
            "command": plan.command,
            "manifest": manifest.path.name,
            "manifest_sha256": manifest.sha256,
            "folds": plan.folds,
            "fold_seed": plan.fold_seed,
            "seeds": list(plan.seeds),
            "complete": len(results) == plan.folds * len(plan.seeds),
            "n": len(rows),
            "fold_counts": counts,
            "epoch_selection": (
                f"on an inner part of each fold's training folds (1 of {plan.inner_parts} "
                "grouped, stratified parts); the held-out fold is scored once, after training"
            ),
            "per_fold": [
                {k: v for k, v in r.to_dict().items() if k != "probabilities"} for r in results
            ],
            "summary": summarise([r.metrics for r in results]),
            "pooled_oof": pooled,
            "versions": [r.version for r in results if r.version],
            "cost": {
                "load_seconds": round(load_seconds, 1),
                "seconds_per_fold_mean": round(float(np.mean(totals)), 1),
                "seconds_total": round(float(np.sum(totals)) + load_seconds, 1),
                "device": str(setup_device(plan.config.device)),
                "threads": torch.get_num_threads(),
            },
        }
    )


def _oof_probabilities(
    rows: Sequence[ManifestRow], folds: Sequence[int], results: Sequence[FoldResult]
) -> np.ndarray:
    """One seed's out-of-fold probability of every row (NaN where its fold has not run)."""
    probs = np.full(len(rows), math.nan)
    for r in results:
        _, held = held_out(folds, r.fold)
        probs[held] = r.probabilities
    return probs


def write_results(
    out_dir: Path,
    report: dict[str, Any],
    rows: Sequence[ManifestRow],
    folds: Sequence[int],
    results: Sequence[FoldResult],
) -> list[Path]:
    """``oof.csv``, ``cv.json`` and ``cv.md`` in ``out_dir``."""
    from training.cv_report import markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["path", "source", "label", "finding", "split_group", "fold", "seed", "probability"]
    )
    for r in results:
        _, held = held_out(folds, r.fold)
        for i, p in zip(held, r.probabilities, strict=True):
            row = rows[i]
            writer.writerow(
                [
                    row.relpath,
                    row.source,
                    LABELS[row.label],
                    row.finding,
                    row.split_group,
                    r.fold,
                    r.seed,
                    f"{p:.6f}",
                ]
            )
    files = [out_dir / OOF_FILE, out_dir / SUMMARY_FILE, out_dir / TABLE_FILE]
    atomic_write(files[0], buffer.getvalue().encode(), mode=RESULT_MODE)
    text = json.dumps(report, indent=1) + "\n"
    atomic_write(files[1], text.encode(), mode=RESULT_MODE)
    atomic_write(files[2], markdown(report).encode(), mode=RESULT_MODE)
    return files
