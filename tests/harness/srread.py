"""Read a result SR back with highdicom, as a consumer would: what we write, a library reads.

:func:`read_report` opens the file with ``highdicom.sr.srread`` (or takes a dataset), then
finds the measurement groups with highdicom's own accessors and the report-level verdict in the
Qualitative Evaluations container (TID 1500 row 12).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage

from worker.results import codes
from worker.results.sr import TRACKING_IDENTIFIER

Group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations


@dataclass(frozen=True)
class ReadReport:
    sr: hd.sr.Comprehensive3DSR | hd.sr.ComprehensiveSR
    image_group: Group | None
    """The image-level group (tracking identifier "COVID-19 classification")."""
    region_groups: tuple[Group, ...]
    """The evidence regions' groups, in order."""
    verdict: str | None
    """The CODE COVID-19's meaning in Qualitative Evaluations (Present, Absent, Indeterminate)."""
    comments: tuple[str, ...]
    """TEXT Comment items of Qualitative Evaluations (the indeterminate or rejection reason)."""

    def numbers(self, group: Group) -> dict[str, tuple[float, str]]:
        """``{concept meaning: (value, unit code)}`` of ``group``'s NUM items."""
        return {m.name.meaning: (float(m.value), m.unit.value) for m in group.get_measurements()}


def read_report(source: Path | Dataset) -> ReadReport:
    sr = hd.sr.srread(source) if isinstance(source, Path) else _from_dataset(source)
    assert isinstance(sr, hd.sr.Comprehensive3DSR | hd.sr.ComprehensiveSR), type(sr)
    groups: list[Group] = []
    if isinstance(sr, hd.sr.Comprehensive3DSR):
        content = cast(hd.sr.MeasurementReport, sr.content)
        groups = list(content.get_planar_roi_measurement_groups())
    image = [g for g in groups if g.tracking_identifier == TRACKING_IDENTIFIER]
    assert len(image) <= 1, "more than one image-level group"
    root = sr.ContentSequence
    evaluations = [
        item
        for item in root
        if item.ValueType == "CONTAINER"
        and item.ConceptNameCodeSequence[0].CodeValue == codes.QUALITATIVE_EVALUATIONS.value
    ]
    verdict = None
    comments: list[str] = []
    for container in evaluations:
        for item in container.ContentSequence:
            concept = item.ConceptNameCodeSequence[0]
            if item.ValueType == "CODE" and concept.CodeValue == codes.COVID19.value:
                verdict = str(item.ConceptCodeSequence[0].CodeMeaning)
            elif item.ValueType == "TEXT" and concept.CodeValue == codes.COMMENT.value:
                comments.append(str(item.TextValue))
    return ReadReport(
        sr=sr,
        image_group=image[0] if image else None,
        region_groups=tuple(g for g in groups if g.tracking_identifier != TRACKING_IDENTIFIER),
        verdict=verdict,
        comments=tuple(comments),
    )


def _from_dataset(ds: Dataset) -> hd.sr.Comprehensive3DSR | hd.sr.ComprehensiveSR:
    if ds.SOPClassUID == Comprehensive3DSRStorage:
        return hd.sr.Comprehensive3DSR.from_dataset(ds)
    return hd.sr.ComprehensiveSR.from_dataset(ds)
