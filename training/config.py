"""Every choice of a training run, with the paper's protocol as the defaults.

Minaee et al. (2020): input 224 x 224, batch 20, Adam with learning rate 1e-4, cross-entropy, the
COVID-19 class augmented x5, and (with ImageNet weights) only the last layer trained. The defaults
reproduce that; the flags of ``deepcovid train`` map one-to-one onto these fields, and the whole
config is stored with every checkpoint and in the model card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from common.records import known_fields
from models.files import WEIGHTS_DTYPES
from training.flags import option

if TYPE_CHECKING:  # torch is imported only when a spec is built: the CLI parses without it
    from models.preprocessing import PreprocessSpec

SELECT_BY: tuple[str, ...] = ("auc", "within_source_auc", "loss")
"""Validation scores the best checkpoint can be chosen by."""

SOURCE_SAMPLING: tuple[str, ...] = ("none", "equal", "temperature")
"""How an epoch's visits are spread over the image sources."""

SPEC_FROM_CONFIG: frozenset[str] = frozenset({"input_size", "mean", "std"})
"""PreprocessSpec fields set from elsewhere in the config (not through ``preprocess``)."""


SHORTCUTS = "training against shortcuts"
"""The flag group of the options against source shortcuts (docs/training.md)."""

FLAG_GROUPS: dict[str, str] = {
    SHORTCUTS: "augmentations that erase source cues, source-balanced sampling, hard negatives, "
    "a source adversary; all off by default (the paper's recipe)",
}
"""Descriptions of the flag groups of ``train`` (:func:`training.flags.add_arguments`)."""


@dataclass(frozen=True)
class AugmentSpec:
    """Ranges of the random transforms (each drawn uniformly in ``[-x, +x]`` or the interval).

    Every field is a flag of ``train`` (:mod:`training.flags`); its help is in the metadata.
    """

    hflip: bool = option(True, help="mirror left-right with probability 1/2 (the paper flips)")
    rotate_deg: float = option(10.0, help="rotation range in degrees (default %(default)s)")
    scale: tuple[float, float] = option(
        (0.9, 1.1), help="zoom range (default %(default)s)", metavar=("MIN", "MAX")
    )
    shear_deg: float = option(5.0, help="shear range in degrees (default %(default)s)")
    translate: float = option(
        0.05, help="shift range as a fraction of the image side (default %(default)s)"
    )
    brightness: float = option(0.1, help="brightness change range (default %(default)s)")
    contrast: float = option(0.1, help="contrast change range (default %(default)s)")
    gamma: float = option(0.15, help="log-uniform gamma in [exp(-G), exp(G)] (default %(default)s)")
    # Transforms against source shortcuts (training/augment.py); each is off by default so the
    # paper's recipe reproduces, and a disabled one draws no random numbers.
    border_crop: float = option(
        0.0,
        help="crop 0..FRAC at each edge, resize back (0: off)",
        metavar="FRAC",
        group=SHORTCUTS,
    )
    border_erase: int = option(
        0,
        help="N rectangles per image touching the edges (markers, text), filled with random "
        "gray (0: off)",
        metavar="N",
        group=SHORTCUTS,
    )
    border_erase_size: float = option(
        0.15,
        help="largest depth of an erased rectangle, fraction of the side (%(default)s; its "
        "length: twice that)",
        metavar="FRAC",
        group=SHORTCUTS,
    )
    downscale: float = option(
        1.0,
        help="resolution change: shrink by a factor log-uniform in [MIN, 1], enlarge back (1: off)",
        metavar="MIN",
        group=SHORTCUTS,
    )
    blur_sigma: float = option(
        0.0,
        help="Gaussian blur, sigma in [0, PX] pixels of the input size (0: off)",
        metavar="PX",
        group=SHORTCUTS,
    )
    jpeg_quality: int = option(
        0,
        help="JPEG re-compression at quality in [Q, 95] (0: off; CPU, slower)",
        metavar="Q",
        group=SHORTCUTS,
    )
    jpeg_p: float = option(
        0.5,
        help="probability of JPEG re-compression per augmented image (%(default)s)",
        group=SHORTCUTS,
    )
    noise_std: float = option(
        0.0,
        help="Gaussian noise, std in [0, STD] of the [0, 1] range (0: off)",
        group=SHORTCUTS,
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.border_crop < 0.5:
            raise ValueError(f"border_crop must be in [0, 0.5), got {self.border_crop}")
        if self.border_erase < 0:
            raise ValueError(f"border_erase must be >= 0, got {self.border_erase}")
        if not 0.0 < self.border_erase_size <= 0.5:
            raise ValueError(f"border_erase_size must be in (0, 0.5], got {self.border_erase_size}")
        if not 0.0 < self.downscale <= 1.0:
            raise ValueError(f"downscale must be in (0, 1], got {self.downscale}")
        if self.blur_sigma < 0 or self.noise_std < 0:
            raise ValueError("blur_sigma and noise_std must be >= 0")
        if self.jpeg_quality and not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be 0 (off) or in [1, 95], got {self.jpeg_quality}")
        if not 0.0 <= self.jpeg_p <= 1.0:
            raise ValueError(f"jpeg_p must be in [0, 1], got {self.jpeg_p}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the model card."""
        data = asdict(self)
        data["scale"] = list(self.scale)
        return data


@dataclass(frozen=True)
class PreprocessFlags:
    """The :class:`models.preprocessing.PreprocessSpec` fields ``train`` has flags for; a flag
    not given (None) keeps the spec's default. :meth:`given` is what ``preprocess`` holds."""

    lung_crop: bool | None = option(
        None,
        help="PreprocessSpec.lung_crop: crop to the lung fields (needs a spec that has it)",
        group=SHORTCUTS,
    )
    lung_mask: bool | None = option(
        None, help="PreprocessSpec.lung_mask (needs a spec that has it)", group=SHORTCUTS
    )
    equalise: str | None = option(
        None,
        help="PreprocessSpec.equalise (needs a spec that has it)",
        choices=("none", "hist", "clahe"),
        group=SHORTCUTS,
    )
    lung_finder: str | None = option(
        None,
        help="PreprocessSpec.lung_finder: what finds the lung fields for the crop and mask "
        "(default: the learned segmenter)",
        choices=("learned", "heuristic"),
        group=SHORTCUTS,
    )

    def given(self) -> dict[str, Any]:
        """The fields that were set, as ``TrainConfig.preprocess`` holds them."""
        return {k: v for k, v in asdict(self).items() if v is not None}


HARD_NEGATIVE_SOURCES: tuple[str, ...] = ("ieee8023",)
"""Default sources of hard negatives (non-COVID pneumonias of the COVID-19 publications)."""


@dataclass
class TrainConfig:
    """A training run; JSON round trip through :meth:`to_dict` / :meth:`from_dict`.

    Every field is a flag of ``train`` (:mod:`training.flags`: ``--input-size`` for
    ``input_size``), its help and choices in the field's metadata; the choices are checked here
    too, so a config read from JSON is held to the same rules.
    """

    manifest: str = field(metadata={"help": "manifest CSV (path,label,split,...)"})
    data_root: str | None = option(
        None, help="folder image paths are relative to (default: manifest's)"
    )
    arch: str = option("squeezenet1_1", help="architecture (default %(default)s)")
    init: str = option(
        "none",
        help="none (random) | imagenet (torchvision enum from TORCH_HOME) | path of a state dict "
        "(default none)",
    )
    head_bias: float | None = option(
        None,
        help="initial bias of the classification head (SqueezeNet from scratch: 1.0 keeps its "
        "ReLU head alive; default: torchvision's 0)",
    )
    """SqueezeNet's head is a 1x1 conv followed by a ReLU; trained from scratch, both class
    channels can fall below zero for every image and never recover (loss stuck at ln 2). A
    positive start keeps them active; for heads without a ReLU it changes nothing (softmax
    ignores a shared offset)."""
    finetune: str = option(
        "auto",
        help="layers trained; auto: last layer with pretrained init, all without (the paper)",
        choices=("auto", "last", "all"),
    )
    input_size: int = option(224, help="input side in pixels (default %(default)s)")
    batch_size: int = option(20, help="training batch size (default %(default)s)")
    epochs: int = option(100, help="epochs (default %(default)s)")
    optimizer: str = option("adam", help="optimizer", choices=("adam", "adamw", "sgd"))
    lr: float = option(1e-4, help="learning rate (default %(default)s)")
    weight_decay: float = option(0.0, help="weight decay (default %(default)s)")
    momentum: float = option(0.9, help="SGD momentum")
    schedule: str = option(
        "constant",
        help="learning rate: constant, or cosine to 1 %% of --lr, after --warmup-epochs",
        choices=("constant", "cosine"),
    )
    warmup_epochs: int = option(0, help="epochs of linear learning-rate warm-up")
    label_smoothing: float = option(0.0, help="label smoothing of the loss, in [0, 1)")
    augment: str = option(
        "covid",
        help="which images are augmented (the paper: covid)",
        choices=("covid", "all", "none"),
    )
    covid_copies: int = option(
        5, help="visits of each COVID-19 image per epoch, each differently augmented (paper: 5)"
    )
    oversample: bool = option(
        False, help="balance the classes by resampling the smaller one (with replacement)"
    )
    source_sampling: str = option(
        "none",
        help="spread each epoch over sources: equally, by --source-temperature, or not (none)",
        choices=SOURCE_SAMPLING,
        group=SHORTCUTS,
    )
    """``equal``: every source equally often; ``temperature``: source shares proportional to
    ``n_images ** (1 / source_temperature)``. The epoch keeps its length; within a source the
    visits follow the class logic (COVID-19 copies, hard-negative copies, oversampling)."""
    source_temperature: float = option(
        1.0,
        help="source shares proportional to n_images**(1/T) (1: as the data; larger: flatter)",
        metavar="T",
        group=SHORTCUTS,
    )
    hard_negative_sources: tuple[str, ...] = option(
        HARD_NEGATIVE_SOURCES,
        help=f"sources whose non-COVID pneumonias are hard negatives "
        f"({' '.join(HARD_NEGATIVE_SOURCES)})",
        metavar="SOURCE",
        group=SHORTCUTS,
    )
    """Hard negatives: images of these sources with a disease finding other than COVID-19, from
    the same publications as the COVID-19 images, so no source cue separates them."""
    hard_negative_weight: float = option(
        1.0,
        help="loss weight of hard negatives: non-COVID disease findings of "
        "--hard-negative-sources (1: as others; the batch loss is the weighted mean)",
        group=SHORTCUTS,
    )
    hard_negative_copies: int = option(
        1, help="visits of each hard negative per epoch (1: as others)", group=SHORTCUTS
    )
    adversary_weight: float = option(
        0.0,
        help="source-adversarial head: gradient-reversal strength (0: off)",
        group=SHORTCUTS,
    )
    """A per-class linear source classifier on the features the head sees, behind a gradient
    reversal of this strength. Per class, because here the source predicts the label: an
    unconditional adversary would erase the disease signal too."""
    preprocess: dict[str, Any] = field(
        default_factory=dict,
        metadata={"flags": PreprocessFlags, "convert": PreprocessFlags.given},
    )
    """Further :class:`models.preprocessing.PreprocessSpec` fields (e.g. ``lung_crop``,
    ``equalise``), passed through to the spec that loads, trains and serves the model."""
    aug: AugmentSpec = field(default_factory=AugmentSpec)
    seed: int = option(0, help="seed of every random draw (default %(default)s)")
    device: str = option("auto", help="auto | cpu | cuda[:N]")
    amp: bool = option(False, help="bf16 autocast on CUDA (ignored on the CPU)")
    channels_last: bool = option(False, help="channels-last memory format")
    target_sensitivity: float = option(0.98, help="operating point chosen on val (paper: 0.98)")
    select_by: str = option(
        "auc",
        help="best checkpoint by val AUC, pooled within-source AUC (robust to source "
        "recognition), or loss (default auc)",
        choices=SELECT_BY,
    )
    """Ties: ``auc`` by lower loss; ``within_source_auc`` (the pooled within-source AUC of
    :mod:`training.sources`) by AUC, then loss."""
    patience: int = option(
        0, help="early stop after this many epochs without a better val score (0: off)"
    )
    time_limit_s: float | None = option(
        None,
        help="training time budget: no epoch is started that would end past it (seconds)",
    )
    fit_epochs_to_time: bool = option(
        False,
        help="with --time-limit-s: after epoch 2 lower --epochs to what fits the budget",
        negatable=False,
    )
    """So a cosine schedule still anneals fully (the card records the epochs actually used)."""
    eval_batch_size: int = option(64, help="batch size of validation (default %(default)s)")
    load_workers: int = option(4, help="image-loading threads (default %(default)s)")
    threads: int | None = option(None, help="torch CPU threads")
    weights_dtype: str = option(
        "float32",
        help="how the registry stores the weights; float16 halves the file, and the model is "
        "rounded to it before the threshold and val metrics are computed (default float32)",
        choices=WEIGHTS_DTYPES,
    )
    """(:data:`models.files.WEIGHTS_DTYPES`) The domain check is fitted on the rounded model
    too, so the card describes exactly the stored network."""

    def __post_init__(self) -> None:
        for f in fields(self):
            allowed = f.metadata.get("choices")
            if allowed is not None and getattr(self, f.name) not in allowed:
                raise ValueError(
                    f"{f.name} must be one of {', '.join(allowed)}, got {getattr(self, f.name)!r}"
                )
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be one of auto, cpu, cuda[:N], got {self.device!r}")
        positive = (
            "input_size",
            "batch_size",
            "epochs",
            "covid_copies",
            "eval_batch_size",
            "hard_negative_copies",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0.0 < self.target_sensitivity <= 1.0:
            raise ValueError(f"target_sensitivity must be in (0, 1], got {self.target_sensitivity}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.source_temperature <= 0:
            raise ValueError(f"source_temperature must be positive, got {self.source_temperature}")
        if self.hard_negative_weight < 0:
            raise ValueError(f"hard_negative_weight must be >= 0, got {self.hard_negative_weight}")
        if self.adversary_weight < 0:
            raise ValueError(f"adversary_weight must be >= 0, got {self.adversary_weight}")
        if self.adversary_weight > 0 and self.trains_last_layer_only:
            raise ValueError("adversary_weight needs a trained backbone (not --finetune last)")
        self.hard_negative_sources = tuple(self.hard_negative_sources)
        clash = sorted(SPEC_FROM_CONFIG & set(self.preprocess))
        if clash:
            raise ValueError(f"preprocess must not set {', '.join(clash)} (set by other fields)")
        if self.preprocess:
            self.preprocess_spec()  # fails now, not after loading images, if the spec rejects it

    def preprocess_spec(self) -> PreprocessSpec:
        """The preprocessing this run trains with (and the model card records for serving)."""
        from models.preprocessing import PreprocessSpec

        try:
            return PreprocessSpec(input_size=self.input_size, **self.preprocess)
        except TypeError as exc:
            known = sorted(f.name for f in fields(PreprocessSpec))
            raise ValueError(
                f"preprocess {sorted(self.preprocess)} is not supported by this build's "
                f"PreprocessSpec (fields: {', '.join(known)}): {exc}"
            ) from exc

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
        data["hard_negative_sources"] = list(self.hard_negative_sources)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing ones take the defaults
        (configs and cards written before a field existed load as the recipe they ran)."""
        kwargs = known_fields(cls, data, "training config keys")
        if isinstance(kwargs.get("aug"), dict):
            aug = dict(kwargs["aug"])
            aug["scale"] = tuple(aug.get("scale", (0.9, 1.1)))
            kwargs["aug"] = AugmentSpec(**aug)
        return cls(**kwargs)

    @classmethod
    def from_card_parameters(cls, params: dict[str, Any]) -> TrainConfig:
        """The config recorded in a model card's ``training_parameters``.

        The card adds the run's outcome (``best_epoch``, ``history``, ``environment``, ...) beside
        the config's fields; those are dropped. Fields the card predates take their defaults.
        """
        known = {f.name for f in fields(cls)}
        return cls.from_dict({k: v for k, v in params.items() if k in known})
