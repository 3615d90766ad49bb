"""Who made a result: the algorithm and the trained model, as the result objects record it.

One :class:`AlgorithmInfo` feeds the SR device observer (TID 1004), the algorithm
identification (TID 4019) and the General / Enhanced General Equipment of the SC and the
Parametric Map, so the three objects always name the same model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from common.uids import is_valid_uid

DEFAULT_MANUFACTURER = "deepcovid-node"
DEFAULT_NAME = "Deep-COVID"
OPERATING_POINT = "operating_point"
"""Parameter naming the operating point whose threshold gave the finding."""
VIEW_CHECK = "view_check"
"""Parameter naming the version of the view check (:mod:`models.viewcheck`) the image passed or
was rejected by; absent when the check is off (setting ``model.view_check``)."""


class Equipment(TypedDict):
    """General Equipment keyword arguments of highdicom's constructors."""

    manufacturer: str
    manufacturer_model_name: str
    software_versions: str


@dataclass(frozen=True)
class AlgorithmInfo:
    """The algorithm and trained model behind a result.

    ``device_uid`` changes with every retrained model (it is the SR's Device Observer UID);
    ``version`` is the registry version; ``model_name`` the architecture (e.g. ``resnet18``);
    ``parameters`` end up as TID 4019 Algorithm Parameters (``key=value`` text items); the
    ``operating_point`` parameter, when given, names the point whose threshold gave the finding
    (e.g. ``clinical (sensitivity >= 90 %)``) and the result objects quote it beside the threshold.
    """

    name: str
    version: str
    device_uid: str
    manufacturer: str = DEFAULT_MANUFACTURER
    model_name: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for attr in ("name", "version", "manufacturer"):
            value = getattr(self, attr)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"AlgorithmInfo.{attr} must be a non-empty string")
            if len(value) > 64:
                raise ValueError(f"AlgorithmInfo.{attr} must be at most 64 characters (LO)")
        if not is_valid_uid(self.device_uid, strict=True):
            raise ValueError(f"AlgorithmInfo.device_uid {self.device_uid!r} is not a valid UID")
        if len(self.model_name) > 64:
            raise ValueError("AlgorithmInfo.model_name must be at most 64 characters (LO)")

    def equipment(self) -> Equipment:
        """The General Equipment values every result object carries, as highdicom's keyword
        arguments: the manufacturer, the model name (the architecture) and the version."""
        return Equipment(
            manufacturer=self.manufacturer,
            manufacturer_model_name=self.model_name or self.name,
            software_versions=self.version,
        )

    @property
    def operating_point(self) -> str:
        """The operating point the finding was decided at, in words ("" when not stated)."""
        return str(self.parameters.get(OPERATING_POINT, ""))

    def threshold_words(self, threshold: float, digits: int = 3) -> str:
        """The threshold as the result objects quote it, with its operating point when known,
        e.g. ``operating point: clinical (sensitivity >= 90 %), threshold 0.410``."""
        value = f"threshold {threshold:.{digits}f}"
        return (
            f"operating point: {self.operating_point}, {value}" if self.operating_point else value
        )

    def figure_lines(self, figures: str, threshold: float) -> list[str]:
        """``figures`` (e.g. the probability) with the threshold as captions show them: in
        brackets on the same line, or, when the operating point is named, on a line of its own
        (``operating point: clinical (sensitivity >= 90 %), threshold 0.410``)."""
        if not self.operating_point:
            return [f"{figures} ({self.threshold_words(threshold)})"]
        return [figures, self.threshold_words(threshold)]

    @property
    def parameter_strings(self) -> list[str]:
        """Parameters as ``key=value`` strings, sorted by key (stable across runs)."""
        return [f"{key}={self.parameters[key]}" for key in sorted(self.parameters)]

    @classmethod
    def from_card(
        cls,
        card: Any,
        *,
        version: str,
        name: str = DEFAULT_NAME,
        manufacturer: str = DEFAULT_MANUFACTURER,
        parameters: Mapping[str, Any] | None = None,
        threshold: float | None = None,
        operating_point: str = "",
    ) -> AlgorithmInfo:
        """Build from a model card (``models.card.ModelCard``) and its registry version.

        Reads ``architecture``, ``device_uid``, ``threshold``, ``input_size`` and the domain
        check's threshold (when the card has one) from the card by attribute, so this module
        does not import ``models``. ``threshold`` (the threshold the finding was decided with,
        when not the card's) and ``operating_point`` (that point in words) replace the card's
        threshold in the parameters.
        """
        params: dict[str, Any] = {"architecture": getattr(card, "architecture", "")}
        for attr in ("input_size", "threshold"):
            if getattr(card, attr, None) is not None:
                params[attr] = getattr(card, attr)
        domain_check = getattr(card, "domain_check", None)
        if domain_check is not None:  # the limit the image's domain score was held against
            params["domain_threshold"] = round(float(domain_check.threshold), 4)
        members = getattr(card, "members", ())
        if members:  # an ensemble: the probability is the mean of this many networks'
            params["ensemble_members"] = len(members)
            if all(getattr(m, "domain_check", None) is not None for m in members):
                # its domain score is relative to the limit of the member it is furthest outside
                params["domain_threshold"] = 1.0
        if threshold is not None:
            params["threshold"] = threshold
        if operating_point:
            params[OPERATING_POINT] = operating_point
        params.update(parameters or {})
        return cls(
            name=name,
            version=version,
            device_uid=card.device_uid,
            manufacturer=manufacturer,
            model_name=str(getattr(card, "architecture", "")),
            parameters=params,
        )
