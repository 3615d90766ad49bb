"""The training loop: epochs over a preloaded split, validation AUC, checkpoints, resume.

One epoch visits the order of :func:`training.dataset.epoch_order` in batches, augments the chosen
visits on the device (:func:`training.augment.augment_batch`), normalises like serving, and steps
the optimizer on cross-entropy. After each epoch the validation split gives loss and AUC,
``last.pt`` is written and ``best.pt`` when validation improved. All randomness derives from
``(seed, epoch)``, so a resumed run continues exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.architectures import build_model, head_parameters, head_prefix
from models.preprocessing import PreprocessSpec, normalise
from training.augment import augment_batch
from training.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.dataset import SplitData, epoch_order
from training.intervals import rank_auc
from training.predict import predict_logits, probabilities, resolve_device

Log = Callable[[str], None]


@dataclass
class EpochRecord:
    """What one epoch measured (the rows of ``history.json`` and of the progress output)."""

    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    """The outcome of :func:`train`: the best model (eval mode, CPU) and how it was reached."""

    model: nn.Module
    best_epoch: int
    history: list[EpochRecord] = field(default_factory=list)
    training_seconds: float = 0.0
    stopped_because: str = "epochs done"


def _set_trainable(model: nn.Module, cfg: TrainConfig) -> list[nn.Parameter]:
    """Freeze all but the head for last-layer fine-tuning; return the parameters to optimise."""
    if not cfg.trains_last_layer_only:
        return [p for p in model.parameters() if p.requires_grad]
    head = {id(p) for p in head_parameters(model, cfg.arch)}
    for param in model.parameters():
        param.requires_grad_(id(param) in head)
    return [p for p in model.parameters() if p.requires_grad]


def _init_head_bias(model: nn.Module, cfg: TrainConfig) -> None:
    """Set the head's bias to ``cfg.head_bias`` (see :attr:`TrainConfig.head_bias`)."""
    prefix = head_prefix(cfg.arch)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith(prefix) and name.endswith("bias"):
                param.fill_(float(cfg.head_bias or 0.0))


def _train_mode(model: nn.Module, cfg: TrainConfig) -> None:
    """Train mode; a frozen backbone keeps its batch-norm statistics (eval mode for BN)."""
    model.train()
    if cfg.trains_last_layer_only:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True
    )


def lr_factor(cfg: TrainConfig, progress: float) -> float:
    """Learning-rate multiplier at ``progress`` epochs (fractional) into the run."""
    if cfg.warmup_epochs and progress < cfg.warmup_epochs:
        return max(progress / cfg.warmup_epochs, 1e-3)
    if cfg.schedule == "constant":
        return 1.0
    span = max(cfg.epochs - cfg.warmup_epochs, 1)
    t = min(max((progress - cfg.warmup_epochs) / span, 0.0), 1.0)
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t))


def _score(record: EpochRecord, select_by: str) -> tuple[float, ...]:
    """Larger is better; NaN AUC (one class in val) ranks lowest."""
    if select_by == "loss":
        return (-record.val_loss,)
    auc = record.val_auc if math.isfinite(record.val_auc) else -1.0
    return (auc, -record.val_loss)


def _validate(
    model: nn.Module, val: SplitData, spec: PreprocessSpec, device: torch.device, cfg: TrainConfig
) -> tuple[float, float, bool]:
    """Validation loss, AUC, and whether every image got the same output (a dead head)."""
    logits = predict_logits(model, val.gray, spec, device, cfg.eval_batch_size)
    loss = float(nn.functional.cross_entropy(logits, val.labels.cpu()))
    probs = probabilities(logits)
    auc = rank_auc(val.labels.cpu().numpy(), probs)
    return loss, auc, bool(np.ptp(probs) == 0.0)


def _run_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: SplitData,
    spec: PreprocessSpec,
    device: torch.device,
    cfg: TrainConfig,
    epoch: int,
    progress: bool,
) -> float:
    """One epoch of optimisation; returns the mean training loss."""
    order, mask = epoch_order(
        train.labels.cpu().numpy(),
        epoch=epoch,
        seed=cfg.seed,
        covid_copies=cfg.covid_copies,
        oversample=cfg.oversample,
        augment=cfg.augment,
    )
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    torch.manual_seed(cfg.seed * 7919 + epoch)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    use_amp = cfg.amp and device.type == "cuda"
    steps = math.ceil(order.size / cfg.batch_size)
    total, count = 0.0, 0
    _train_mode(model, cfg)
    bar = tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=not progress)
    for step in range(steps):
        sl = slice(step * cfg.batch_size, (step + 1) * cfg.batch_size)
        idx = torch.from_numpy(order[sl])
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(cfg, epoch - 1 + step / steps)
        x = augment_batch(
            train.gray[idx.to(train.gray.device)].to(device),
            cfg.aug,
            gen,
            torch.from_numpy(mask[sl]),
        )
        x = normalise(x, spec)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = train.labels[idx.to(train.labels.device)].to(device)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            loss = loss_fn(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        batch_loss = float(loss.detach())
        if not math.isfinite(batch_loss):
            raise FloatingPointError(f"training loss became {batch_loss} at epoch {epoch}")
        total += batch_loss * idx.numel()
        count += idx.numel()
        bar.update(1)
        bar.set_postfix(loss=f"{total / count:.4f}")
    bar.close()
    return total / max(count, 1)


def train(
    cfg: TrainConfig,
    train_data: SplitData,
    val_data: SplitData,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Log = print,
) -> TrainResult:
    """Train per ``cfg``; checkpoints go to ``run_dir``. ``resume`` continues from ``last.pt``."""
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    spec = PreprocessSpec(input_size=cfg.input_size)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, init=cfg.init)
    if cfg.head_bias is not None:
        _init_head_bias(model, cfg)
    params = _set_trainable(model, cfg)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(params, cfg)
    history: list[EpochRecord] = []
    best_epoch = 0
    best_score: tuple[float, ...] = (-math.inf,)
    elapsed = 0.0
    start_epoch = 1
    last_path = run_dir / LAST
    if resume and last_path.is_file():
        state = load_checkpoint(last_path)
        _check_resumable(state["config"], cfg)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = [EpochRecord(**h) for h in state["history"]]
        best_epoch = int(state["best_epoch"])
        best_score = tuple(state["best_score"])
        elapsed = float(state["elapsed_s"])
        start_epoch = int(state["epoch"]) + 1
        log(f"resuming {run_dir} after epoch {start_epoch - 1} (best epoch {best_epoch})")
    elif resume:
        log(f"no checkpoint in {run_dir}; starting a new run")
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    train_data = train_data.to(device)
    stopped = "epochs done"
    epochs_bar = tqdm(
        total=cfg.epochs,
        initial=start_epoch - 1,
        desc="training",
        unit="epoch",
        disable=not progress,
    )
    for epoch in range(start_epoch, cfg.epochs + 1):
        if epoch > cfg.epochs:  # lowered by fit_epochs_to_time after the range was made
            break
        mean_epoch = elapsed / len(history) if history else 0.0
        if cfg.time_limit_s is not None and history and elapsed + mean_epoch > cfg.time_limit_s:
            stopped = f"time limit {cfg.time_limit_s:.0f} s"
            break
        if cfg.patience and history and epoch - 1 - best_epoch >= cfg.patience:
            stopped = f"no improvement for {cfg.patience} epochs"
            break
        t0 = time.perf_counter()
        train_loss = _run_epoch(model, optimizer, train_data, spec, device, cfg, epoch, progress)
        val_loss, val_auc, constant = _validate(model, val_data, spec, device, cfg)
        if constant:
            log(
                f"warning: epoch {epoch} gives every validation image the same output; the "
                "head may have died (for SqueezeNet from scratch try --head-bias 1)"
            )
        seconds = time.perf_counter() - t0
        elapsed += seconds
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_auc=val_auc,
            lr=float(optimizer.param_groups[0]["lr"]),
            seconds=seconds,
        )
        history.append(record)
        if epoch == start_epoch + 1 and cfg.fit_epochs_to_time and cfg.time_limit_s:
            # Epoch 2's time, not epoch 1's: the first pays for warm-up (cuDNN autotuning).
            left = max(cfg.time_limit_s - elapsed, 0.0)
            fitting = max(epoch, epoch + int(0.95 * left / max(seconds, 1e-6)))
            if fitting < cfg.epochs:
                log(f"fitting the schedule to the time budget: {fitting} epochs, not {cfg.epochs}")
                cfg.epochs = fitting
                epochs_bar.total = fitting
        improved = _score(record, cfg.select_by) > best_score
        if improved:
            best_epoch, best_score = epoch, _score(record, cfg.select_by)
            save_checkpoint(run_dir / BEST, {"epoch": epoch, "model": _cpu_state(model)})
        save_checkpoint(
            last_path,
            {
                "epoch": epoch,
                "model": _cpu_state(model),
                "optimizer": optimizer.state_dict(),
                "config": cfg.to_dict(),
                "history": [vars(h) for h in history],
                "best_epoch": best_epoch,
                "best_score": list(best_score),
                "elapsed_s": elapsed,
            },
        )
        _write_history(run_dir, history)
        epochs_bar.update(1)
        epochs_bar.set_postfix(loss=f"{train_loss:.4f}", val_auc=f"{val_auc:.4f}", best=best_epoch)
        log(
            f"epoch {epoch}/{cfg.epochs}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
            f"val AUC {val_auc:.4f}{' *' if improved else ''} ({seconds:.1f} s)"
        )

    epochs_bar.close()
    if not history:
        raise RuntimeError("no epoch was trained (epochs already done or time limit too small)")
    best = build_model(cfg.arch, init="none")
    best.load_state_dict(load_checkpoint(run_dir / BEST)["model"])
    return TrainResult(
        model=best.eval(),
        best_epoch=best_epoch,
        history=history,
        training_seconds=elapsed,
        stopped_because=stopped,
    )


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _write_history(run_dir: Path, history: list[EpochRecord]) -> None:
    (run_dir / "history.json").write_text(json.dumps([vars(h) for h in history], indent=1) + "\n")


_MUST_MATCH = ("arch", "init", "finetune", "input_size", "optimizer", "seed", "manifest")


def _check_resumable(saved: dict[str, Any], cfg: TrainConfig) -> None:
    """A resumed run must be the same experiment (``epochs`` and limits may grow)."""
    current = cfg.to_dict()
    diffs = [k for k in _MUST_MATCH if saved.get(k) != current.get(k)]
    if diffs:
        raise ValueError(
            "cannot resume: the checkpoint was trained with different "
            + ", ".join(f"{k} ({saved.get(k)!r} vs {current.get(k)!r})" for k in diffs)
        )
