"""The "not analysed: reason" SR, sent back (when the setting asks for it) for an instance
the input gate rejected, so the PACS user sees why no result came.

A Comprehensive SR with no clinical content: title Failed Analyses, the device observer, the
reason as a TEXT Comment ("Not analysed: ViewPosition LL: lateral views are not analysed"),
and an IMAGE reference to the instance it is about.
"""

from __future__ import annotations

import highdicom as hd
from highdicom.sr import (
    ContainerContentItem,
    ContentSequence,
    ImageContentItem,
    RelationshipTypeValues,
    TextContentItem,
)
from pydicom.dataset import Dataset

from worker.results import codes
from worker.results.algorithm import AlgorithmInfo
from worker.results.identity import copy_identity, header_only, without_identifier_warnings
from worker.results.sr import observation_context

SERIES_DESCRIPTION = "COVID-19 AI: not analysed"
MAX_REASON = 1000


@without_identifier_warnings
def build_rejection_sr(
    source: Dataset,
    reason: str,
    *,
    algorithm: AlgorithmInfo,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
) -> hd.sr.ComprehensiveSR:
    """An SR saying that ``source`` was not analysed, and why (``reason`` from the gate).

    Needs only the source's header (identity and UIDs); its pixels may be unreadable.
    """
    if not reason or not reason.strip():
        raise ValueError("reason must say why the instance was not analysed")
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not source.get(keyword):
            raise ValueError(f"source has no {keyword}: cannot reference it")
    header = header_only(source)
    root = ContainerContentItem(name=codes.FAILED_ANALYSES)
    root.ContentSequence = ContentSequence(is_root=False)
    root.ContentSequence.extend(observation_context(algorithm))
    root.ContentSequence.append(
        TextContentItem(
            name=codes.COMMENT,
            value=f"Not analysed: {reason.strip()}"[:MAX_REASON],
            relationship_type=RelationshipTypeValues.CONTAINS,
        )
    )
    root.ContentSequence.append(
        ImageContentItem(
            name=codes.SOURCE,
            referenced_sop_class_uid=header.SOPClassUID,
            referenced_sop_instance_uid=header.SOPInstanceUID,
            relationship_type=RelationshipTypeValues.CONTAINS,
        )
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=[header],
        content=root,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        **algorithm.equipment(),
        is_complete=True,
        is_final=True,
        series_description=SERIES_DESCRIPTION,
    )
    copy_identity(source, sr)
    return sr
