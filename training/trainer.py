"""The training loop: epochs over a preloaded split, validation AUC, checkpoints, resume.

One epoch visits the order of :func:`training.dataset.epoch_order` in batches, augments the chosen
visits on the device (:func:`training.augment.augment_batch`), normalises like serving, and steps
the optimizer on cross-entropy. After each epoch the validation split gives loss, AUC and the
pooled within-source AUC (:mod:`training.sources`), ``last.pt`` is written, and ``best.pt`` when
:func:`choose_best_epoch` names the new epoch (the best by ``select_by``). All randomness derives
from ``(seed, epoch)``, so a resumed run continues exactly where an uninterrupted one would be.

Against the source shortcut the loop can also weight hard negatives in the loss, and train a
source adversary: a per-class linear source classifier on the features the head sees, whose
gradient reaches the backbone reversed (Ganin & Lempitsky, 2015), so the backbone is pushed to
features that do not tell the sources apart beyond the label.
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

from common.errors import UsageError
from models.architectures import build_model, head_parameters, head_prefix, split_at_head
from models.preprocessing import PreprocessSpec, normalise
from training.augment import augment_batch
from training.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.dataset import SplitData, epoch_order, hard_negative_mask
from training.intervals import rank_auc
from training.predict import predict_logits, probabilities, resolve_device
from training.sources import per_source_auc, pooled_within_source_auc

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
    val_within_source_auc: float = float("nan")
    """Pooled within-source AUC on val (NaN: no source with both classes; older histories)."""
    adversary_loss: float = float("nan")
    """Mean source cross-entropy of the adversary (NaN: no adversary). Near ``ln(sources)``
    means the features no longer tell the sources apart."""


@dataclass
class TrainResult:
    """The outcome of :func:`train`: the best model (eval mode, CPU) and how it was reached."""

    model: nn.Module
    best_epoch: int
    history: list[EpochRecord] = field(default_factory=list)
    training_seconds: float = 0.0
    stopped_because: str = "epochs done"
    preprocess: PreprocessSpec | None = None
    """The spec the model was trained with (for the card, so serving matches training)."""


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


def selection_score(record: EpochRecord, select_by: str) -> tuple[float, ...]:
    """How good an epoch is by ``select_by``; larger is better, NaN AUCs rank lowest.

    ``auc``: (AUC, -loss). ``within_source_auc``: (pooled within-source AUC, AUC, -loss), so
    the epoch that separates the classes best *within* the sources wins, not the one that best
    recognises where an image came from. ``loss``: (-loss,).
    """
    if select_by == "loss":
        return (-record.val_loss,)
    auc = record.val_auc if math.isfinite(record.val_auc) else -1.0
    if select_by == "within_source_auc":
        within = record.val_within_source_auc
        return (within if math.isfinite(within) else -1.0, auc, -record.val_loss)
    return (auc, -record.val_loss)


def choose_best_epoch(history: list[EpochRecord], select_by: str) -> int:
    """The epoch :func:`train` keeps: the first with the highest :func:`selection_score`."""
    if not history:
        raise ValueError("empty history")
    best = history[0]
    for record in history[1:]:
        if selection_score(record, select_by) > selection_score(best, select_by):
            best = record
    return best.epoch


@dataclass
class Validation:
    """What one validation pass measured."""

    loss: float
    auc: float
    within_source_auc: float
    constant: bool
    """Every image got the same output (a dead head)."""


def _validate(
    model: nn.Module, val: SplitData, spec: PreprocessSpec, device: torch.device, cfg: TrainConfig
) -> Validation:
    """Validation loss, AUC, pooled within-source AUC, and whether the outputs are constant."""
    return _validation(predict_logits(model, val.gray, spec, device, cfg.eval_batch_size), val)


def _validation(logits: torch.Tensor, val: SplitData) -> Validation:
    loss = float(nn.functional.cross_entropy(logits, val.labels.cpu()))
    probs = probabilities(logits)
    labels = val.labels.cpu().numpy()
    return Validation(
        loss=loss,
        auc=rank_auc(labels, probs),
        within_source_auc=pooled_within_source_auc(labels, probs, val.sources),
        constant=bool(np.ptp(probs) == 0.0),
    )


class _GradReverse(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``-weight`` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.weight * grad, None


class SourceAdversary(nn.Module):
    """A source classifier per class on the features entering the model's head.

    A forward pre-hook on the head keeps its input (pooled to ``[N, C]`` for a convolutional
    head such as SqueezeNet's); :meth:`loss` classifies the source from those features through
    a gradient reversal of strength ``weight``. The adversary itself learns at full strength; the
    backbone receives the reversed gradient and unlearns what separates sources. One classifier
    per class (the label selects it), since sources predict labels in these collections.
    """

    def __init__(self, model: nn.Module, arch: str, sources: list[str], weight: float) -> None:
        super().__init__()
        head = model.get_submodule(head_prefix(arch).rstrip("."))
        if isinstance(head, nn.Linear):
            width = head.in_features
        elif isinstance(head, nn.Conv2d):
            width = head.in_channels
        else:  # pragma: no cover - every architecture of models.architectures is one of those
            raise TypeError(f"cannot attach a source adversary to a {type(head).__name__} head")
        self.sources = sorted(set(sources))
        self.weight = weight
        self.classifier = nn.Linear(width, 2 * len(self.sources))
        self._features: torch.Tensor | None = None
        self._hook = head.register_forward_pre_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if self.training:
            self._features = inputs[0]

    def source_index(self, sources: list[str]) -> torch.Tensor:
        """Class indices of ``sources`` (names of the train split)."""
        lookup = {name: i for i, name in enumerate(self.sources)}
        return torch.tensor([lookup[s] for s in sources], dtype=torch.long)

    def loss(self, labels: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """Source cross-entropy of the last training forward pass (reversed into the backbone)."""
        if self._features is None:
            raise RuntimeError("no features kept: run the model in training mode first")
        feats = self._features.float()
        self._features = None
        if feats.dim() == 4:
            feats = feats.mean(dim=(2, 3))
        logits = self.classifier(_GradReverse.apply(feats, self.weight))
        logits = logits.view(feats.shape[0], 2, len(self.sources))
        per_class = logits[torch.arange(feats.shape[0], device=feats.device), labels]
        return nn.functional.cross_entropy(per_class, sources)

    def remove(self) -> None:
        """Detach the hook from the model."""
        self._hook.remove()


def sample_weights(labels: np.ndarray, hard: np.ndarray, cfg: TrainConfig) -> np.ndarray:
    """Loss weight of every training image: ``hard_negative_weight`` for hard negatives, else 1."""
    weights = np.ones(len(labels), dtype=np.float32)
    weights[np.asarray(hard, dtype=bool) & (np.asarray(labels) == 0)] = cfg.hard_negative_weight
    return weights


def weighted_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None, smoothing: float
) -> torch.Tensor:
    """Cross-entropy, the weighted mean ``sum(w * ce) / sum(w)`` when ``weights`` are given."""
    if weights is None:
        return nn.functional.cross_entropy(logits, targets, label_smoothing=smoothing)
    per_image = nn.functional.cross_entropy(
        logits, targets, reduction="none", label_smoothing=smoothing
    )
    return (per_image * weights).sum() / weights.sum().clamp(min=1e-12)


@dataclass
class _EpochInputs:
    """What an epoch needs beyond the split: hard negatives, loss weights, source indices."""

    hard: np.ndarray
    weights: torch.Tensor | None
    """Per-image loss weights (None: plain mean, the paper's loss)."""
    source_idx: torch.Tensor | None
    """Per-image source class of the adversary (None: no adversary)."""


def _epoch_inputs(
    train: SplitData, cfg: TrainConfig, adversary: SourceAdversary | None
) -> _EpochInputs:
    labels = train.labels.cpu().numpy()
    hard = hard_negative_mask(train.rows, cfg.hard_negative_sources)
    weights = None
    if cfg.hard_negative_weight != 1.0:
        weights = torch.from_numpy(sample_weights(labels, hard, cfg))
    source_idx = adversary.source_index(train.sources) if adversary is not None else None
    return _EpochInputs(hard=hard, weights=weights, source_idx=source_idx)


@dataclass
class FrozenBackbone:
    """A frozen backbone's outputs, computed once: the head trains on these instead of images.

    Used when only the head trains and nothing is augmented (``--finetune last --augment
    none``): then every visit of an image gives the backbone the same input and the frozen
    backbone (batch norm in eval mode) the same output, so one pass replaces one per epoch. The
    head's dropout still draws per step. A linear probe of ImageNet features thus costs one
    forward pass of the split, which makes cross-validating it affordable on a CPU.
    """

    head: Callable[[torch.Tensor], torch.Tensor]
    train: torch.Tensor
    val: torch.Tensor

    @staticmethod
    def applies(cfg: TrainConfig) -> bool:
        """Whether ``cfg`` trains a head on fixed inputs (nothing augmented, backbone frozen)."""
        return cfg.trains_last_layer_only and cfg.augment == "none" and cfg.adversary_weight == 0

    @classmethod
    def compute(
        cls,
        model: nn.Module,
        cfg: TrainConfig,
        spec: PreprocessSpec,
        device: torch.device,
        splits: tuple[SplitData, SplitData],
    ) -> FrozenBackbone:
        """The backbone's outputs of the (train, val) ``splits``, with ``model``'s head."""
        head = split_at_head(model, cfg.arch)[1]
        outs = [cls.outputs(model, cfg, spec, device, data) for data in splits]
        return cls(head=head, train=outs[0], val=outs[1])

    @staticmethod
    def outputs(
        model: nn.Module,
        cfg: TrainConfig,
        spec: PreprocessSpec,
        device: torch.device,
        data: SplitData,
    ) -> torch.Tensor:
        """The frozen backbone's output for every image of ``data``."""
        backbone = split_at_head(model, cfg.arch)[0]
        model.eval()
        with torch.inference_mode():
            parts = [
                backbone(normalise(data.gray[i : i + cfg.eval_batch_size].to(device), spec))
                for i in range(0, len(data), cfg.eval_batch_size)
            ]
        return torch.cat(parts).clone()

    def validate(self, model: nn.Module, val: SplitData) -> Validation:
        """What :func:`_validate` measures, from the cached val outputs (head in eval mode)."""
        model.eval()
        with torch.inference_mode():
            logits = self.head(self.val).float().cpu()
        return _validation(logits, val)


def _batch(
    train: SplitData,
    idx: torch.Tensor,
    mask: np.ndarray,
    spec: PreprocessSpec,
    device: torch.device,
    cfg: TrainConfig,
    gen: torch.Generator,
) -> torch.Tensor:
    """The model input of one step: the visits' images, augmented where ``mask`` says."""
    x = augment_batch(
        train.gray[idx.to(train.gray.device)].to(device), cfg.aug, gen, torch.from_numpy(mask)
    )
    x = normalise(x, spec)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _run_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: SplitData,
    spec: PreprocessSpec,
    device: torch.device,
    cfg: TrainConfig,
    epoch: int,
    progress: bool,
    inputs: _EpochInputs | None = None,
    adversary: SourceAdversary | None = None,
    frozen: FrozenBackbone | None = None,
) -> tuple[float, float]:
    """One epoch of optimisation; returns the mean training loss and adversary loss (or NaN)."""
    if inputs is None:
        inputs = _epoch_inputs(train, cfg, adversary)
    order, mask = epoch_order(
        train.labels.cpu().numpy(),
        epoch=epoch,
        seed=cfg.seed,
        covid_copies=cfg.covid_copies,
        oversample=cfg.oversample,
        augment=cfg.augment,
        hard_negatives=inputs.hard,
        hard_negative_copies=cfg.hard_negative_copies,
        sources=train.sources,
        source_sampling=cfg.source_sampling,
        source_temperature=cfg.source_temperature,
    )
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    torch.manual_seed(cfg.seed * 7919 + epoch)
    use_amp = cfg.amp and device.type == "cuda"
    steps = math.ceil(order.size / cfg.batch_size)
    total, count = 0.0, 0
    adv_total = 0.0
    _train_mode(model, cfg)
    if adversary is not None:
        adversary.train()
    bar = tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=not progress)
    for step in range(steps):
        sl = slice(step * cfg.batch_size, (step + 1) * cfg.batch_size)
        idx = torch.from_numpy(order[sl])
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(cfg, epoch - 1 + step / steps)
        y = train.labels[idx.to(train.labels.device)].to(device)
        w = inputs.weights[idx].to(device) if inputs.weights is not None else None
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            if frozen is not None:
                logits = frozen.head(frozen.train[idx.to(frozen.train.device)])
            else:
                logits = model(_batch(train, idx, mask[sl], spec, device, cfg, gen))
            loss = weighted_loss(logits.float(), y, w, cfg.label_smoothing)
        if adversary is not None and inputs.source_idx is not None:
            adv_loss = adversary.loss(y, inputs.source_idx[idx].to(device))
            adv_total += float(adv_loss.detach()) * idx.numel()
            loss = loss + adv_loss
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
    adv_mean = adv_total / max(count, 1) if adversary is not None else float("nan")
    return total / max(count, 1), adv_mean


def train(
    cfg: TrainConfig,
    train_data: SplitData,
    val_data: SplitData,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Log = print,
    backbone_outputs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TrainResult:
    """Train per ``cfg``; checkpoints go to ``run_dir``. ``resume`` continues from ``last.pt``.

    ``backbone_outputs`` (train, val) are the frozen backbone's outputs of the two splits when
    the caller has them already (cross-validation computes them once for every fold); they are
    used only when :meth:`FrozenBackbone.applies` to ``cfg``.
    """
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    spec = cfg.preprocess_spec()
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, init=cfg.init)
    if cfg.head_bias is not None:
        _init_head_bias(model, cfg)
    params = _set_trainable(model, cfg)
    # Created after the model, so the model's random init is that of a run without adversary.
    adversary = (
        SourceAdversary(model, cfg.arch, train_data.sources, cfg.adversary_weight)
        if cfg.adversary_weight > 0
        else None
    )
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(params, cfg)
    if adversary is not None:
        adversary.to(device)
        optimizer.add_param_group({"params": list(adversary.classifier.parameters())})
        log(f"source adversary over {', '.join(adversary.sources)} (weight {cfg.adversary_weight})")
    history: list[EpochRecord] = []
    best_epoch = 0  # choose_best_epoch(history) once there is one
    elapsed = 0.0
    start_epoch = 1
    last_path = run_dir / LAST
    if resume and last_path.is_file():
        state = load_checkpoint(last_path)
        _check_resumable(state["config"], cfg)
        model.load_state_dict(state["model"])
        if adversary is not None:
            adversary.classifier.load_state_dict(state["adversary"])
        optimizer.load_state_dict(state["optimizer"])
        history = [EpochRecord(**h) for h in state["history"]]
        best_epoch = choose_best_epoch(history, cfg.select_by)
        elapsed = float(state["elapsed_s"])
        start_epoch = int(state["epoch"]) + 1
        log(f"resuming {run_dir} after epoch {start_epoch - 1} (best epoch {best_epoch})")
    elif resume:
        log(f"no checkpoint in {run_dir}; starting a new run")
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    train_data = train_data.to(device)
    inputs = _epoch_inputs(train_data, cfg, adversary)
    frozen = None
    if FrozenBackbone.applies(cfg) and backbone_outputs is not None:
        head = split_at_head(model, cfg.arch)[1]
        frozen = FrozenBackbone(
            head, backbone_outputs[0].to(device), backbone_outputs[1].to(device)
        )
    elif FrozenBackbone.applies(cfg):
        t0 = time.perf_counter()
        frozen = FrozenBackbone.compute(model, cfg, spec, device, (train_data, val_data))
        log(
            f"frozen backbone, no augmentation: its outputs for {len(train_data)} + "
            f"{len(val_data)} images computed once ({time.perf_counter() - t0:.1f} s); "
            "epochs train the head on them"
        )
    if cfg.hard_negative_weight != 1.0 or cfg.hard_negative_copies > 1:
        log(
            f"{int(inputs.hard.sum())} hard negatives (non-COVID disease findings of "
            f"{', '.join(cfg.hard_negative_sources)}): loss weight {cfg.hard_negative_weight}, "
            f"{cfg.hard_negative_copies} visits per epoch"
        )
    if cfg.select_by == "within_source_auc" and not per_source_auc(
        val_data.labels.cpu().numpy(), np.zeros(len(val_data)), val_data.sources
    ):
        log("warning: no val source holds both classes; within_source_auc selects by AUC")
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
        train_loss, adv_loss = _run_epoch(
            model,
            optimizer,
            train_data,
            spec,
            device,
            cfg,
            epoch,
            progress,
            inputs,
            adversary,
            frozen,
        )
        if frozen is not None:
            val = frozen.validate(model, val_data)
        else:
            val = _validate(model, val_data, spec, device, cfg)
        if val.constant:
            log(
                f"warning: epoch {epoch} gives every validation image the same output; the "
                "head may have died (for SqueezeNet from scratch try --head-bias 1)"
            )
        seconds = time.perf_counter() - t0
        elapsed += seconds
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val.loss,
            val_auc=val.auc,
            lr=float(optimizer.param_groups[0]["lr"]),
            seconds=seconds,
            val_within_source_auc=val.within_source_auc,
            adversary_loss=adv_loss,
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
        improved = choose_best_epoch(history, cfg.select_by) == epoch
        if improved:
            best_epoch = epoch
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
                "elapsed_s": elapsed,
                **({"adversary": _cpu_state(adversary.classifier)} if adversary else {}),
            },
        )
        _write_history(run_dir, history)
        epochs_bar.update(1)
        epochs_bar.set_postfix(loss=f"{train_loss:.4f}", val_auc=f"{val.auc:.4f}", best=best_epoch)
        adv = f", source adversary loss {adv_loss:.4f}" if adversary is not None else ""
        log(
            f"epoch {epoch}/{cfg.epochs}: train loss {train_loss:.4f}{adv}, val loss "
            f"{val.loss:.4f}, val AUC {val.auc:.4f}, within-source AUC "
            f"{val.within_source_auc:.4f}{' *' if improved else ''} ({seconds:.1f} s)"
        )

    epochs_bar.close()
    if adversary is not None:
        adversary.remove()
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
        preprocess=spec,
    )


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _write_history(run_dir: Path, history: list[EpochRecord]) -> None:
    (run_dir / "history.json").write_text(json.dumps([vars(h) for h in history], indent=1) + "\n")


_MUST_MATCH = (
    "arch",
    "init",
    "finetune",
    "input_size",
    "optimizer",
    "seed",
    "manifest",
    "select_by",
    "adversary_weight",
    "preprocess",
)
"""Config keys a resumed run must share with its checkpoint (the best score, the optimizer's
parameter groups and the images depend on them)."""


def _check_resumable(saved: dict[str, Any], cfg: TrainConfig) -> None:
    """A resumed run must be the same experiment (``epochs`` and limits may grow).

    A key the checkpoint predates counts as its default (it ran the default)."""
    current = cfg.to_dict()
    defaults = TrainConfig(manifest="").to_dict()
    diffs = [k for k in _MUST_MATCH if saved.get(k, defaults[k]) != current.get(k)]
    if diffs:
        different = (f"{k} ({saved.get(k, defaults[k])!r} vs {current.get(k)!r})" for k in diffs)
        raise UsageError(
            "cannot resume: the checkpoint was trained with different " + ", ".join(different),
            "resume with the flags it was started with, or train anew in another --run-dir",
        )
