"""``build_results``: the SR, the overlay SC, the Parametric Map and the presentation state.

Pure: datasets in, datasets out, nothing written or sent. The evidence regions are computed
once and drawn by all (SR regions, SC outlines, GSPS graphics). The SC and the map are built
first because the SR references them. The map may be left out (``parametric_map=False``; the
worker decides with the setting of that name).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from worker.results.algorithm import AlgorithmInfo
from worker.results.evidence import evidence_regions
from worker.results.gsps import build_presentation_state
from worker.results.pmap import build_parametric_map
from worker.results.sc import build_overlay_sc
from worker.results.sr import build_report_sr, check_probability
from worker.results.uids import ResultUIDs
from worker.results.verdict import DomainResult

DEFAULT_SERIES_NUMBERS = (9001, 9002, 9003, 9004)
"""Series Numbers of the SR, the SC, the map and the GSPS (high, to sort after acquired series).

Several sources of one study (a PA and an AP film) get results with the same numbers; their
Series Descriptions name the source (:func:`source_label`) so a reader can tell them apart."""


@dataclass(frozen=True)
class ResultObjects:
    """The result datasets, ready to write (``dcmwrite``) or send: at most four (the fields),
    three when the Parametric Map was left out (``pmap`` None)."""

    sr: Dataset
    sc: Dataset
    pmap: Dataset | None
    gsps: Dataset

    def items(self) -> list[tuple[str, Dataset]]:
        """(kind, dataset) in sending order: SC, PM, GSPS, then the SR that references them."""
        ordered = [("sc", self.sc), ("pm", self.pmap), ("pr", self.gsps), ("sr", self.sr)]
        return [(kind, ds) for kind, ds in ordered if ds is not None]

    def __iter__(self) -> Iterator[Dataset]:
        """SR last, so a receiver never holds a report whose references are missing."""
        return iter(ds for _, ds in self.items())


def source_label(source: Dataset) -> str:
    """What tells the source apart within its study: view, series (s) and instance (i) number."""
    parts = [
        str(source.get("ViewPosition") or "").strip(),
        f"s{source.SeriesNumber}" if source.get("SeriesNumber") not in (None, "") else "",
        f"i{source.InstanceNumber}" if source.get("InstanceNumber") not in (None, "") else "",
    ]
    return " ".join(p for p in parts if p)


def _describe(ds: Dataset, source: Dataset) -> None:
    """Name the source in the Series Description (LO, 64 characters), keeping the caution:
    ``COVID-19 overlay (AP s3 i2): research use only`` (the longer caution where it fits; the
    SC's burned-in caption and Derivation Description keep "not for diagnostic use")."""
    label = source_label(source)
    if label:
        kind = str(ds.SeriesDescription).split(":")[0]
        for caution in ("research use only, not for diagnostic use", "research use only"):
            description = f"{kind} ({label}): {caution}"
            if len(description) <= 64:
                break
        ds.SeriesDescription = description[:64]


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
    series_numbers: tuple[int, int, int, int] = DEFAULT_SERIES_NUMBERS,
    domain: DomainResult | None = None,
    parametric_map: bool = True,
) -> ResultObjects:
    """Build SR, SC, Parametric Map and GSPS for ``source`` (same patient and study, new series).

    ``heatmap`` is a float map on the source grid (Rows x Columns); ``display_image`` the
    source's pixels as MONOCHROME2 floats in [0, 1] on the same grid. ``uids`` defaults to
    fresh UIDs; pass :meth:`ResultUIDs.derive` for idempotent re-analysis. ``previous_sr`` (the
    SR of an earlier model version) is referenced as a predecessor document. ``domain`` is the
    model's domain check of the image (None: the model has none); when it failed, SR and
    caption say *indeterminate*, with the reason. ``parametric_map=False`` leaves the map out
    (``pmap`` None); the SR then neither references nor lists it.
    """
    probability = check_probability("probability", probability)
    threshold = check_probability("threshold", threshold)
    uids = uids or ResultUIDs.generate()
    regions = evidence_regions(np.asarray(heatmap, dtype=np.float32))
    sr_number, sc_number, pm_number, pr_number = series_numbers
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
    pmap = (
        build_parametric_map(
            source,
            heatmap=heatmap,
            algorithm=algorithm,
            series_instance_uid=uids.pm_series,
            sop_instance_uid=uids.pm_instance,
            series_number=pm_number,
        )
        if parametric_map
        else None
    )
    gsps = build_presentation_state(
        source,
        regions=regions,
        probability=probability,
        threshold=threshold,
        algorithm=algorithm,
        series_instance_uid=uids.pr_series,
        sop_instance_uid=uids.pr_instance,
        series_number=pr_number,
        domain=domain,
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
    for ds in (sc, pmap, gsps, sr):
        if ds is not None:
            _describe(ds, source)
    return ResultObjects(sr=sr, sc=sc, pmap=pmap, gsps=gsps)
