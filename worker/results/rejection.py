"""The "not analysed: reason" SR, sent back (when the setting asks for it) for an instance
the input gate rejected, so the PACS user sees why no result came.

A Comprehensive SR with the TID 1500 Imaging Measurement Report structure of the per-image SR
but no measurements: language, the device observer, the procedure reported, the Image Library
with the instance it is about, and a Qualitative Evaluations container (TID 1500 row 12) that
holds only the reason as TEXT Comment (row 14): "Not analysed: ViewPosition LL: lateral views
are not analysed". TID 1500, because an SR with a root of no template (the title Failed
Analyses, used before) is something no template-aware reader can check: PixelMed's
DicomSRValidator reported each of its items as "not in template". The series description
("COVID-19 AI: not analysed") and the comment say what it is.
"""

from __future__ import annotations

import highdicom as hd
from highdicom.sr import (
    CodeContentItem,
    ContainerContentItem,
    ContentSequence,
    LanguageOfContentItemAndDescendants,
    RelationshipTypeValues,
    TextContentItem,
)
from highdicom.sr.templates import DEFAULT_LANGUAGE
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as pydicom_codes

from worker.results import codes
from worker.results.algorithm import AlgorithmInfo
from worker.results.identity import copy_identity, header_only, without_identifier_warnings
from worker.results.library import image_library
from worker.results.sr import observation_context

SERIES_DESCRIPTION = "COVID-19 AI: not analysed"
MAX_REASON = 1000
NOT_ANALYSED = "Not analysed"
"""The comment's first words (RIS and tests look for them)."""


def rejection_content(header: Dataset, reason: str, algorithm: AlgorithmInfo) -> ContentSequence:
    """The TID 1500 root container saying that ``header``'s instance was not analysed."""
    root = ContainerContentItem(
        name=pydicom_codes.cid7021.ImagingMeasurementReport, template_id="1500"
    )
    root.ContentSequence = ContentSequence(is_root=False)
    root.ContentSequence.extend(LanguageOfContentItemAndDescendants(DEFAULT_LANGUAGE))
    root.ContentSequence.extend(observation_context(algorithm))
    root.ContentSequence.append(
        CodeContentItem(
            name=pydicom_codes.DCM.ProcedureReported,
            value=codes.PROCEDURE_REPORTED,
            relationship_type=RelationshipTypeValues.HAS_CONCEPT_MOD,
        )
    )
    root.ContentSequence.append(image_library(header))
    evaluations = ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS, relationship_type=RelationshipTypeValues.CONTAINS
    )
    evaluations.ContentSequence = ContentSequence(
        [
            TextContentItem(
                name=codes.COMMENT,
                value=f"{NOT_ANALYSED}: {reason.strip()}"[:MAX_REASON],
                relationship_type=RelationshipTypeValues.CONTAINS,
            )
        ]
    )
    evaluations.ContinuityOfContent = "SEPARATE"  # dsr2html then names the comment
    root.ContentSequence.append(evaluations)
    return ContentSequence([root], is_root=True)


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
    sr = hd.sr.ComprehensiveSR(
        evidence=[header],
        content=rejection_content(header, reason, algorithm)[0],
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
