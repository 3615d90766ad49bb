"""What a model card records of its out-of-distribution check (:mod:`models.ood`).

Apart from the check itself so the card (:mod:`models.card`) can validate its ``domain_check``
field without importing the check, which in turn reads cards: the arrow points one way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from common.records import known_fields

PASS_FRACTION = 0.99
"""Share of validation images the threshold lets through."""

METHOD = (
    "Mahalanobis distance of the penultimate-layer features to the nearest class mean, tied "
    "covariance with Ledoit-Wolf shrinkage (Lee et al. 2018)"
)
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.npz$")


@dataclass(frozen=True)
class DomainCheckSpec:
    """The model card's ``domain_check`` field: the threshold and where the statistics are.

    The arrays (:class:`ClassGaussians`) are in ``file`` beside ``weights.pt``; ``sha256``
    ties them to this card, as ``weights_sha256`` does for the weights.
    """

    threshold: float
    """Largest domain score that passes (Mahalanobis distance, feature units)."""
    file: str
    sha256: str
    feature_dim: int
    components: int
    shrinkage: float
    feature_layer: str = ""
    method: str = METHOD
    threshold_method: str = ""
    pass_fraction: float = PASS_FRACTION
    fitted_on: str = ""
    """Data the statistics and the threshold come from (manifest, splits, image counts)."""
    pass_rates: dict[str, float] = field(default_factory=dict)
    """Share of images that pass, per split or test set measured when fitting."""
    created: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"domain_check.threshold must be positive, got {self.threshold}")
        if not _FILE_RE.match(self.file):
            raise ValueError(f"domain_check.file {self.file!r} is not a plain .npz file name")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError("domain_check.sha256 must be 64 lowercase hex digits")
        if self.feature_dim < 1 or not 1 <= self.components <= self.feature_dim:
            raise ValueError("domain_check: components must be in 1..feature_dim")
        if not 0.0 <= self.shrinkage <= 1.0:
            raise ValueError("domain_check.shrinkage must be in [0, 1]")
        if not 0.0 < self.pass_fraction <= 1.0:
            raise ValueError("domain_check.pass_fraction must be in (0, 1]")
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(
            self, "pass_rates", {str(k): float(v) for k, v in dict(self.pass_rates).items()}
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DomainCheckSpec:
        """From the card's JSON; unknown keys are an error, as for the card itself."""
        return cls(**known_fields(cls, data, "domain_check fields"))
