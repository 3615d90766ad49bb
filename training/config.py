"""Every choice of a training run, with the paper's protocol as the defaults.

Minaee et al. (2020): input 224 x 224, batch 20, Adam with learning rate 1e-4, cross-entropy, the
COVID-19 class augmented x5, and (with ImageNet weights) only the last layer trained. The defaults
reproduce that; the flags of ``deepcovid train`` map one-to-one onto these fields, and the whole
config is stored with every checkpoint and in the model card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from models.files import WEIGHTS_DTYPES

if TYPE_CHECKING:  # torch is imported only when a spec is built: the CLI parses without it
    from models.preprocessing import PreprocessSpec

SELECT_BY: tuple[str, ...] = ("auc", "within_source_auc", "loss")
"""Validation scores the best checkpoint can be chosen by."""

SOURCE_SAMPLING: tuple[str, ...] = ("none", "equal", "temperature")
"""How an epoch's visits are spread over the image sources."""

SPEC_FROM_CONFIG: frozenset[str] = frozenset({"input_size", "mean", "std"})
"""PreprocessSpec fields set from elsewhere in the config (not through ``preprocess``)."""


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
    # Transforms against source shortcuts (training/augment.py); each is off by default so the
    # paper's recipe reproduces, and a disabled one draws no random numbers.
    border_crop: float = 0.0
    """Crop up to this fraction at each edge independently, then resize back (0: off)."""
    border_erase: int = 0
    """Rectangles per image touching an edge (markers, text), filled with a random gray (0: off)."""
    border_erase_size: float = 0.15
    """Largest depth of an erased rectangle as a fraction of the side (its length: twice that)."""
    downscale: float = 1.0
    """Resolution change: shrink by a factor log-uniform in ``[downscale, 1]``, enlarge back."""
    blur_sigma: float = 0.0
    """Gaussian blur, sigma uniform in ``[0, blur_sigma]`` pixels of the input size (0: off)."""
    jpeg_quality: int = 0
    """JPEG re-compression at a quality uniform in ``[jpeg_quality, 95]`` (0: off; CPU, slower)."""
    jpeg_p: float = 0.5
    """Probability that an augmented image is re-compressed (with ``jpeg_quality``)."""
    noise_std: float = 0.0
    """Gaussian noise, standard deviation uniform in ``[0, noise_std]`` of the [0, 1] range."""

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
    source_sampling: str = "none"
    """Spread each epoch's visits over image sources: ``none`` (as the class logic gives),
    ``equal`` (every source equally often) or ``temperature`` (source shares proportional to
    ``n_images ** (1 / source_temperature)``). The epoch keeps its length; within a source the
    visits follow the class logic (COVID-19 copies, hard-negative copies, oversampling)."""
    source_temperature: float = 1.0
    """With ``source_sampling="temperature"``: 1 keeps the sources' image shares, larger values
    flatten them towards ``equal``."""
    hard_negative_sources: tuple[str, ...] = ("ieee8023",)
    """Sources whose non-COVID images with a disease finding are *hard negatives*: other
    pneumonias from the same publications as the COVID-19 images, which no source cue separates."""
    hard_negative_weight: float = 1.0
    """Loss weight of a hard negative (others 1; the batch loss is the weighted mean)."""
    hard_negative_copies: int = 1
    """Visits of each hard negative per epoch (oversampling, like ``covid_copies``)."""
    adversary_weight: float = 0.0
    """Source-adversarial head: a per-class linear source classifier on the features the head
    sees, behind a gradient reversal of this strength (0: off). Per class, because here the
    source predicts the label: an unconditional adversary would erase the disease signal too."""
    preprocess: dict[str, Any] = field(default_factory=dict)
    """Further :class:`models.preprocessing.PreprocessSpec` fields (e.g. ``lung_crop``,
    ``equalise``), passed through to the spec that loads, trains and serves the model."""
    aug: AugmentSpec = field(default_factory=AugmentSpec)
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    """bfloat16 autocast on CUDA (ignored on the CPU)."""
    channels_last: bool = False
    target_sensitivity: float = 0.98
    select_by: str = "auc"
    """Best checkpoint by validation ``auc`` (ties: lower loss), ``within_source_auc`` (the
    pooled within-source AUC of :mod:`training.sources`; ties: AUC, then loss) or ``loss``."""
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
    weights_dtype: str = "float32"
    """How the registry stores the weights (:data:`models.files.WEIGHTS_DTYPES`). ``float16``
    halves the file; the trained model is rounded to it before the threshold, the val metrics
    and the domain check are computed, so the card describes exactly the stored network."""

    def __post_init__(self) -> None:
        choices = {
            "finetune": ("auto", "last", "all"),
            "optimizer": ("adam", "adamw", "sgd"),
            "schedule": ("constant", "cosine"),
            "augment": ("covid", "all", "none"),
            "select_by": SELECT_BY,
            "device": ("auto", "cpu", "cuda"),
            "source_sampling": SOURCE_SAMPLING,
            "weights_dtype": WEIGHTS_DTYPES,
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed and not (name == "device" and str(value).startswith("cuda:")):
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
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

    @classmethod
    def from_card_parameters(cls, params: dict[str, Any]) -> TrainConfig:
        """The config recorded in a model card's ``training_parameters``.

        The card adds the run's outcome (``best_epoch``, ``history``, ``environment``, ...) beside
        the config's fields; those are dropped. Fields the card predates take their defaults.
        """
        known = {f.name for f in fields(cls)}
        return cls.from_dict({k: v for k, v in params.items() if k in known})
