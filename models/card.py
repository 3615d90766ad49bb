"""The model card: what a model version is, how it was made, and how well it did.

Stored as ``model_card.json`` next to ``weights.pt`` in each registry version. Serving reads the
preprocessing and the operating threshold from it; the result objects quote its name, version,
architecture and Device UID (a DICOM UID that is new for every version, so a PACS can tell results
of different models apart); training writes the data manifest, the metrics and the command.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid

from common.paths import WEIGHTS_FILE
from common.records import known_fields
from models.architectures import ARCHITECTURES, CLASSES
from models.files import WEIGHTS_DTYPES
from models.ood_spec import DomainCheckSpec
from models.operating_point import PAPER, OperatingPoint, name_from_method, validate_points
from models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec

CARD_SCHEMA_VERSION = 1
"""Bumped when a field changes meaning; readers refuse newer schemas they do not know."""

ALL_SOURCES = "*"
"""Key of :attr:`ModelCard.source_prevalence` holding the COVID-19 share over all train images
(the score of an image whose source the training data did not have)."""


def utc_now_iso() -> str:
    """The current time as ISO 8601 UTC with seconds, e.g. ``2026-11-27T13:30:00Z``."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def new_device_uid() -> str:
    """A fresh DICOM UID for the Device UID of a new model version."""
    return str(generate_uid())


@dataclass(frozen=True)
class Metric:
    """One figure of merit with its confidence interval (e.g. AUC 0.97, 95 % CI 0.95-0.99)."""

    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float = 0.95
    method: str = ""
    """How the interval was computed, e.g. ``"bootstrap, 2000 resamples, percentile"``."""
    n: int | None = None
    """Number of images (or positives, as ``method`` says) the value is computed on."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"metric value must be finite, got {self.value}")
        if (self.ci_low is None) != (self.ci_high is None):
            raise ValueError("give both ci_low and ci_high, or neither")
        if self.ci_low is not None and self.ci_high is not None and self.ci_low > self.ci_high:
            raise ValueError(f"ci_low {self.ci_low} is above ci_high {self.ci_high}")
        if not 0 < self.ci_level < 1:
            raise ValueError(f"ci_level must be in (0, 1), got {self.ci_level}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | float) -> Metric:
        """From the card's JSON (a bare number is accepted as a value without interval)."""
        if isinstance(data, int | float):
            return cls(value=float(data))
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def _check_sha256(value: str, what: str) -> None:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"{what} must be 64 lowercase hex digits")


_MEMBER_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.pt$")


@dataclass(frozen=True)
class EnsembleMember:
    """One network of an ensemble version (:attr:`ModelCard.members`): its weights file beside
    the card, that file's sha256 (checked before loading, as ``weights_sha256`` is for a single
    network), what it was, and its own domain check."""

    file: str
    """The weights file (a state dict) in the version folder, e.g. ``member-01.pt``."""
    sha256: str
    origin: str = ""
    """What the member was, e.g. ``fold 3``, ``seed 1`` or ``fold 2, seed 0``."""
    version: str = ""
    """The registry version it was copied from (its ``weights_sha256`` is :attr:`sha256`)."""
    weights_dtype: str = "float32"
    domain_check: DomainCheckSpec | None = None
    """The member's own domain check (:mod:`models.ood`); the ensemble's check is the most
    cautious of its members'."""

    def __post_init__(self) -> None:
        if not _MEMBER_FILE_RE.match(self.file) or self.file == WEIGHTS_FILE:
            raise ValueError(f"member file {self.file!r} is not a plain .pt file name")
        _check_sha256(self.sha256, f"member {self.file}: sha256")
        if self.weights_dtype not in WEIGHTS_DTYPES:
            raise ValueError(f"member {self.file}: weights_dtype {self.weights_dtype!r} unknown")
        if isinstance(self.domain_check, Mapping):
            object.__setattr__(self, "domain_check", DomainCheckSpec.from_dict(self.domain_check))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``domain_check`` and a float32 ``weights_dtype`` left out)."""
        data = asdict(self)
        if data["domain_check"] is None:
            del data["domain_check"]
        if data["weights_dtype"] == "float32":
            del data["weights_dtype"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnsembleMember:
        """From the card's JSON; unknown keys are an error."""
        return cls(**known_fields(cls, data, "ensemble member fields"))


@dataclass(frozen=True)
class ModelCard:
    """Everything about one model version that is not its weights.

    ``version``, ``created``, ``weights_sha256`` and ``device_uid`` are filled by
    :meth:`models.registry.Registry.save_version`; the rest is the trainer's to set.
    Metrics are keyed by name, by convention ``"<split>/<metric>"`` or
    ``"<split>/<source>/<metric>"`` (e.g. ``"test/auc"``, ``"test/nih_chestxray8/specificity"``).
    """

    architecture: str
    name: str = "deep-covid"
    version: str = ""
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    classes: tuple[str, ...] = CLASSES
    preprocessing: dict[str, Any] = field(default_factory=dict)
    """The optional preprocessing steps beyond resize and normalisation (lung crop or mask,
    equalisation; :class:`models.preprocessing.PreprocessSpec` fields). Empty: the paper's."""
    threshold: float = 0.5
    threshold_method: str = "default 0.5 (not tuned)"
    """How the operating threshold was chosen, e.g. ``"sensitivity 0.98 on val"``."""
    operating_points: dict[str, OperatingPoint] = field(default_factory=dict)
    """Named operating points (:mod:`models.operating_point`: ``paper``, ``clinical``), each with
    its threshold, method, sensitivity, specificity, counts and intervals; serving picks one by the
    ``threshold_policy`` setting (:meth:`operating_point`). ``threshold`` stays the ``paper``
    point's threshold. Empty on older cards (their ``threshold`` is the only point) and then
    omitted from the JSON, so such cards stay byte-identical."""
    init: str = "none"
    """Initialisation the training started from: ``imagenet``, ``none`` or a file name."""
    training_manifest: str = ""
    training_manifest_sha256: str = ""
    training_command: str = ""
    training_parameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Metric] = field(default_factory=dict)
    created: str = ""
    weights_sha256: str = ""
    device_uid: str = ""
    intended_use: str = "Research use only; not for diagnostic use."
    notes: str = ""
    source_prevalence: dict[str, float] = field(default_factory=dict)
    """COVID-19 share of each image source in the training manifest's train split, plus the
    share over all train images under :data:`ALL_SOURCES`. The evaluation scores every image by its
    source's share: the AUC of that source-only baseline shows how much of the pooled AUC knowing
    the collection alone would give. Empty on cards written before it existed (the evaluation then
    computes it from the manifest) and omitted from the JSON when empty, so such cards stay
    byte-identical."""
    schema_version: int = CARD_SCHEMA_VERSION
    weights_dtype: str = "float32"
    """Format of the floating-point tensors in ``weights.pt`` (:data:`models.files.WEIGHTS_DTYPES`);
    loading gives float32 either way. Omitted from the JSON when float32 (older cards)."""
    domain_check: DomainCheckSpec | None = None
    """Out-of-domain check on the model's features (:mod:`models.ood`): its threshold and
    the statistics file beside the weights. ``None`` (cards written before it existed, or
    not fitted): no domain check, every image is scored as in the domain."""
    members: tuple[EnsembleMember, ...] = ()
    """An ensemble version's networks (:mod:`models.ensemble`), all of this card's architecture
    and preprocessing; its probability is the mean of theirs. Empty: one network in
    ``weights.pt`` (omitted from the JSON then, so single-network cards stay byte-identical).
    An ensemble has no ``weights.pt`` (``weights_sha256`` empty) and no card-level
    ``domain_check``: each member carries its own."""

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture {self.architecture!r} is not one of {', '.join(ARCHITECTURES)}"
            )
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.classes != CLASSES:
            raise ValueError(f"classes must be {CLASSES} in this order, got {self.classes}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        points = validate_points(self.operating_points)
        if PAPER in points and not math.isclose(
            points[PAPER].threshold, self.threshold, rel_tol=1e-12, abs_tol=1e-15
        ):
            raise ValueError(
                f"threshold {self.threshold} is not the paper operating point's "
                f"{points[PAPER].threshold}; the card's threshold is the paper point"
            )
        object.__setattr__(self, "operating_points", points)
        # Validates input_size, mean and std (and normalises them to float tuples).
        spec = self.preprocess
        object.__setattr__(self, "mean", spec.mean)
        object.__setattr__(self, "std", spec.std)
        metrics = {
            k: v if isinstance(v, Metric) else Metric.from_dict(v) for k, v in self.metrics.items()
        }
        object.__setattr__(self, "metrics", metrics)
        if isinstance(self.domain_check, Mapping):
            object.__setattr__(self, "domain_check", DomainCheckSpec.from_dict(self.domain_check))
        if self.weights_sha256 and (
            len(self.weights_sha256) != 64
            or any(c not in "0123456789abcdef" for c in self.weights_sha256)
        ):
            raise ValueError("weights_sha256 must be 64 lowercase hex digits")
        if self.device_uid and (
            len(self.device_uid) > 64 or not all(p.isdigit() for p in self.device_uid.split("."))
        ):
            raise ValueError(f"device_uid {self.device_uid!r} is not a valid DICOM UID")
        prevalence = {str(k): float(v) for k, v in dict(self.source_prevalence).items()}
        for key, share in prevalence.items():
            if not key or not 0.0 <= share <= 1.0:
                raise ValueError(
                    f"source_prevalence needs named sources with shares in [0, 1], "
                    f"got {key!r}: {share}"
                )
        object.__setattr__(self, "source_prevalence", prevalence)
        if self.weights_dtype not in WEIGHTS_DTYPES:
            raise ValueError(
                f"weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)}, "
                f"got {self.weights_dtype!r}"
            )
        self._check_members()
        if self.schema_version > CARD_SCHEMA_VERSION:
            raise ValueError(
                f"model card schema {self.schema_version} is newer than this code understands "
                f"({CARD_SCHEMA_VERSION}); upgrade deepcovid-node"
            )

    def _check_members(self) -> None:
        members = tuple(
            m if isinstance(m, EnsembleMember) else EnsembleMember.from_dict(m)
            for m in self.members
        )
        object.__setattr__(self, "members", members)
        if not members:
            return
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        if self.weights_sha256:
            raise ValueError(
                "an ensemble card has no weights_sha256: each member's file has its own sha256"
            )
        if self.domain_check is not None:
            raise ValueError(
                "an ensemble card has no domain_check of its own: each member carries its check"
            )
        files = [m.file for m in members]
        if len(set(files)) != len(files):
            raise ValueError(f"ensemble member files must be distinct, got {files}")
        checked = [m.domain_check is not None for m in members]
        if any(checked) and not all(checked):
            raise ValueError(
                "either every ensemble member has a domain check or none has (the ensemble's "
                "check is the most cautious of its members')"
            )

    @property
    def is_ensemble(self) -> bool:
        """Whether this version is an ensemble of :attr:`members`."""
        return bool(self.members)

    @property
    def weights_fingerprint(self) -> str:
        """sha256 naming this version's weights: ``weights_sha256``, or for an ensemble the
        sha256 of its members' sha256s in order ("" when not saved yet)."""
        if not self.members:
            return self.weights_sha256
        joined = "\n".join(m.sha256 for m in self.members)
        return hashlib.sha256(joined.encode("ascii")).hexdigest()

    @property
    def preprocess(self) -> PreprocessSpec:
        """The preprocessing this model was trained with."""
        return PreprocessSpec.from_dict(
            {
                **self.preprocessing,
                "input_size": self.input_size,
                "mean": self.mean,
                "std": self.std,
            }
        )

    def operating_point(self, policy: str) -> tuple[str, OperatingPoint]:
        """The point serving uses under ``policy``, and its name.

        The card's point of that name when it holds one; otherwise (older cards, or a card
        without that point) the card's single ``threshold``, named after what its
        ``threshold_method`` says (:func:`models.operating_point.name_from_method`).
        """
        if policy in self.operating_points:
            return policy, self.operating_points[policy]
        single = OperatingPoint(threshold=self.threshold, method=self.threshold_method)
        return name_from_method(self.threshold_method), single

    @property
    def covid_index(self) -> int:
        """Index of the COVID-19 output."""
        return self.classes.index("covid")

    @staticmethod
    def preprocessing_of(spec: PreprocessSpec) -> dict[str, Any]:
        """The ``preprocessing`` field for ``spec``: its steps that differ from the paper's.

        ``lung_finder`` is recorded whenever the lung fields are used (and only then), since a
        card without it means the legacy finder (:meth:`PreprocessSpec.from_dict`).
        """
        plain = PreprocessSpec(spec.input_size, spec.mean, spec.std).to_dict()
        data = {k: v for k, v in spec.to_dict().items() if plain.get(k) != v and k != "lung_finder"}
        if spec.uses_lungs:
            data["lung_finder"] = spec.lung_finder
        return data

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with some fields changed (validated again)."""
        data = self.to_dict()
        data.update(changes)
        return ModelCard.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: tuples become lists, metrics become objects."""
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        data["classes"] = list(self.classes)
        if not self.source_prevalence:
            # Optional and newer than most cards: leave it out rather than write an empty object.
            del data["source_prevalence"]
        if data["weights_dtype"] == "float32":
            del data["weights_dtype"]  # the format every card before the field had
        if data["domain_check"] is None:
            del data["domain_check"]  # readers that predate the field still read such cards
        if self.members:
            data["members"] = [m.to_dict() for m in self.members]
        else:
            del data["members"]  # single-network cards stay as they were
        if self.operating_points:
            data["operating_points"] = {k: v.to_dict() for k, v in self.operating_points.items()}
        else:
            del data["operating_points"]  # older cards: their threshold is the only point
        return data

    def to_json(self) -> str:
        """Pretty, stable JSON (sorted keys) so that cards diff well."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """From :meth:`to_dict` output; unknown keys are an error (typos must not pass silently)."""
        kwargs = known_fields(cls, data, "model card fields")
        if "architecture" not in data:
            raise ValueError("model card has no architecture")
        for key in ("mean", "std", "classes"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        if "metrics" in kwargs:
            kwargs["metrics"] = {k: Metric.from_dict(v) for k, v in kwargs["metrics"].items()}
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """Parse a card from JSON text."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"model card is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("model card JSON must be an object")
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        """Write the card as JSON to ``path``."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """Read a card written by :meth:`save`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
