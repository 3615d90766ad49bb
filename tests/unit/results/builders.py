"""One way for the result-object unit tests to build results from the conftest fixtures."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from worker.results import AlgorithmInfo, ResultObjects, build_results

THRESHOLD = 0.42
"""The operating threshold the unit tests build with (also in the algorithm fixture)."""


def build(
    source: Dataset,
    algorithm: AlgorithmInfo,
    heatmap: np.ndarray,
    display: np.ndarray,
    probability: float = 0.8,
    threshold: float = THRESHOLD,
    **kwargs: Any,
) -> ResultObjects:
    """:func:`worker.results.build_results` with the tests' defaults; keywords pass through."""
    return build_results(
        source,
        probability=probability,
        threshold=threshold,
        heatmap=heatmap,
        display_image=display,
        algorithm=algorithm,
        **kwargs,
    )
