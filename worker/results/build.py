"""``build_results``: the SR, the overlay SC and the Parametric Map for one analysed image.

Pure: datasets in, datasets out, nothing written or sent. The SC and the map are built first
because the SR references them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from worker.results.algorithm import AlgorithmInfo
from worker.results.evidence import evidence_regions
from worker.results.pmap import build_parametric_map
from worker.results.sc import build_overlay_sc
from worker.results.sr import build_report_sr, check_probability
from worker.results.uids import ResultUIDs
from worker.results.verdict import DomainResult

DEFAULT_SERIES_NUMBERS = (9001, 9002, 9003)
"""Series Numbers of the SR, the SC and the map (high, to sort after acquired series)."""


@dataclass(frozen=True)
class ResultObjects:
    """The three result datasets, ready to write (``dcmwrite``) or send."""

    sr: Dataset
    sc: Dataset
    pmap: Dataset

    def __iter__(self) -> Iterator[Dataset]:
        """SR last, so a receiver never holds a report whose references are missing."""
        return iter((self.sc, self.pmap, self.sr))


def build_results(
    source: Dataset,
    *,
    probability: float,
    threshold: float,
    heatmap: np.ndarray,
    display_image: np.ndarray,
    algorithm: AlgorithmInfo,
    previous_sr: Dataset | None = None,
    uids: ResultUIDs | None = None,
    series_numbers: tuple[int, int, int] = DEFAULT_SERIES_NUMBERS,
    domain: DomainResult | None = None,
) -> ResultObjects:
    """Build SR, SC and Parametric Map for ``source`` (same patient and study, new series).

    ``heatmap`` is a float map on the source grid (Rows x Columns); ``display_image`` the
    source's pixels as MONOCHROME2 floats in [0, 1] on the same grid. ``uids`` defaults to
    fresh UIDs; pass :meth:`ResultUIDs.derive` for idempotent re-analysis. ``previous_sr`` (the
    SR of an earlier model version) is referenced as a predecessor document. ``domain`` is the
    model's domain check of the image (None: the model has none); when it failed, SR and
    caption say *indeterminate*, with the reason.
    """
    probability = check_probability("probability", probability)
    threshold = check_probability("threshold", threshold)
    uids = uids or ResultUIDs.generate()
    regions = evidence_regions(np.asarray(heatmap, dtype=np.float32))
    sr_number, sc_number, pm_number = series_numbers
    sc = build_overlay_sc(
        source,
        display_image=display_image,
        heatmap=heatmap,
        probability=probability,
        threshold=threshold,
        algorithm=algorithm,
        series_instance_uid=uids.sc_series,
        sop_instance_uid=uids.sc_instance,
        series_number=sc_number,
        domain=domain,
        regions=regions,
    )
    pmap = build_parametric_map(
        source,
        heatmap=heatmap,
        algorithm=algorithm,
        series_instance_uid=uids.pm_series,
        sop_instance_uid=uids.pm_instance,
        series_number=pm_number,
    )
    sr = build_report_sr(
        source,
        probability=probability,
        threshold=threshold,
        algorithm=algorithm,
        sc=sc,
        pm=pmap,
        series_instance_uid=uids.sr_series,
        sop_instance_uid=uids.sr_instance,
        series_number=sr_number,
        previous_sr=previous_sr,
        domain=domain,
        regions=regions,
    )
    return ResultObjects(sr=sr, sc=sc, pmap=pmap)
