"""Every choice of a training run, with the paper's protocol as the defaults.

Minaee et al. (2020): input 224 x 224, batch 20, Adam with learning rate 1e-4, cross-entropy, the
COVID-19 class augmented x5, and (with ImageNet weights) only the last layer trained. The defaults
reproduce that; the flags of ``deepcovid train`` map one-to-one onto these fields, and the whole
config is stored with every checkpoint and in the model card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class AugmentSpec:
    """Ranges of the random transforms (each drawn uniformly in ``[-x, +x]`` or the interval)."""

    hflip: bool = True
    """Mirror left-right with probability 1/2 (the paper flips)."""
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    shear_deg: float = 5.0
    translate: float = 0.05
    """Shift as a fraction of the image side."""
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: float = 0.15
    """log-uniform gamma in ``[exp(-g), exp(g)]``."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the model card."""
        data = asdict(self)
        data["scale"] = list(self.scale)
        return data


@dataclass
class TrainConfig:
    """A training run; JSON round trip through :meth:`to_dict` / :meth:`from_dict`."""

    manifest: str
    data_root: str | None = None
    arch: str = "squeezenet1_1"
    init: str = "none"
    """``none`` (random), ``imagenet`` (torchvision enum from TORCH_HOME) or a state-dict path."""
    head_bias: float | None = None
    """Initial bias of the classification head (None: torchvision's zero). SqueezeNet's head is a
    1x1 conv followed by a ReLU; trained from scratch, both class channels can fall below zero
    for every image and never recover (loss stuck at ln 2). A positive start (e.g. 1.0) keeps
    them active; for heads without a ReLU it changes nothing (softmax ignores a shared offset)."""
    finetune: str = "auto"
    """``last`` (head only), ``all``, or ``auto``: last layer with pretrained init, all without."""
    input_size: int = 224
    batch_size: int = 20
    epochs: int = 100
    optimizer: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "constant"
    """``constant`` or ``cosine`` (to 1 % of ``lr``), after ``warmup_epochs`` of linear warm-up."""
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    augment: str = "covid"
    """Which visits are augmented: ``covid`` (the paper), ``all`` or ``none``."""
    covid_copies: int = 5
    """Times each COVID-19 image is visited per epoch (the paper's x5)."""
    oversample: bool = False
    """Balance the classes by drawing extra images of the smaller class with replacement."""
    aug: AugmentSpec = field(default_factory=AugmentSpec)
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    """bfloat16 autocast on CUDA (ignored on the CPU)."""
    channels_last: bool = False
    target_sensitivity: float = 0.98
    select_by: str = "auc"
    """Best checkpoint by validation ``auc`` (ties: lower loss) or ``loss``."""
    patience: int = 0
    """Stop after this many epochs without a better validation score (0: never)."""
    time_limit_s: float | None = None
    """Stop starting epochs once another would end past this many seconds of training."""
    fit_epochs_to_time: bool = False
    """With ``time_limit_s``: after epoch 2, lower ``epochs`` to what fits the budget, so a cosine
    schedule still anneals fully (the card records the epochs actually used)."""
    eval_batch_size: int = 64
    load_workers: int = 4
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""

    def __post_init__(self) -> None:
        choices = {
            "finetune": ("auto", "last", "all"),
            "optimizer": ("adam", "adamw", "sgd"),
            "schedule": ("constant", "cosine"),
            "augment": ("covid", "all", "none"),
            "select_by": ("auc", "loss"),
            "device": ("auto", "cpu", "cuda"),
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed and not (name == "device" and str(value).startswith("cuda:")):
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        positive = ("input_size", "batch_size", "epochs", "covid_copies", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0.0 < self.target_sensitivity <= 1.0:
            raise ValueError(f"target_sensitivity must be in (0, 1], got {self.target_sensitivity}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    @property
    def trains_last_layer_only(self) -> bool:
        """Whether only the classification head is trained (the paper with ImageNet weights)."""
        if self.finetune == "auto":
            return self.init != "none"
        return self.finetune == "last"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in checkpoints and in the card's ``training_parameters``)."""
        data = asdict(self)
        data["aug"] = self.aug.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config keys: {', '.join(unknown)}")
        kwargs = dict(data)
        if isinstance(kwargs.get("aug"), dict):
            aug = dict(kwargs["aug"])
            aug["scale"] = tuple(aug.get("scale", (0.9, 1.1)))
            kwargs["aug"] = AugmentSpec(**aug)
        return cls(**kwargs)
