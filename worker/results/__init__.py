"""Result objects of an analysis, built with highdicom: TID 1500 SR, overlay SC, Parametric Map
and Grayscale Softcopy Presentation State.

``build_results`` is the entry point for the worker; ``build_rejection_sr`` makes the
"not analysed: reason" SR for instances the input gate rejected. ``docs/result-objects.md``
describes the coded content of each object.
"""

from worker.results.algorithm import AlgorithmInfo
from worker.results.build import ResultObjects, build_results
from worker.results.rejection import build_rejection_sr
from worker.results.uids import ResultUIDs
from worker.results.verdict import OUTSIDE_DOMAIN, DomainResult

__all__ = [
    "OUTSIDE_DOMAIN",
    "AlgorithmInfo",
    "DomainResult",
    "ResultObjects",
    "ResultUIDs",
    "build_rejection_sr",
    "build_results",
]
