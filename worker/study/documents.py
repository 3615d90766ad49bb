"""The study-level SR (TID 1500) and Key Object Selection (TID 2010) of a settled study.

SR content tree (``docs/result-objects.md`` has the table)::

    Imaging Measurement Report
      language, device observer (TID 1004, as the per-image SR: :func:`sr.observation_context`)
      procedure reported: XR unspecified body region (CID 100)
      Image Library: every image of the study whose header the node still holds
      Imaging Measurements
        Measurement Group (TID 1501), one per image of the study, in order of receipt:
          tracking identifier "COVID-19 classification, image k" + tracking UID
          finding type COVID-19, IMAGE Source of Measurement = the image
          analysed: algorithm identification (TID 4019), NUM Probability, NUM Threshold Value,
                    CODE COVID-19 = Present | Absent | Indeterminate (+ TEXT reason)
                    -- built by :func:`sr.measurement_group`, the per-image SR's group
          not analysed: TEXT Comment "Not analysed: <reason>" | "Analysis failed: <reason>"
      Qualitative Evaluations (TID 1500 rows 12-14)
        CODE COVID-19 = the study finding (Present | Absent | Indeterminate)
          IMAGE Best illustration of finding = the image that drove it (INFERRED FROM)
        TEXT Comment = how it was decided ("Study finding: present in 1 of 2 analysed image(s)")

A replacement (an image arrived after the study result) lists its predecessor in the
Predecessor Documents Sequence. The KOS (document title "Of Interest", IHE AI Results) names the
image that drove the finding, with the finding in its Key Object Description.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import highdicom as hd
from highdicom.sr import (
    CodeContentItem,
    ContainerContentItem,
    ContentSequence,
    ImageContentItem,
    RelationshipTypeValues,
    TextContentItem,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as pydicom_codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from worker.results import codes
from worker.results.algorithm import AlgorithmInfo
from worker.results.identity import copy_identity, without_identifier_warnings
from worker.results.library import image_library, insert_image_library
from worker.results.sr import (
    measurement_group,
    observation_context,
)
from worker.results.verdict import OUTSIDE_DOMAIN
from worker.study.rule import (
    ABSENT,
    INDETERMINATE,
    PRESENT,
    REJECTED,
    ImageResult,
    StudyFinding,
)

SR_SERIES_DESCRIPTION = "COVID-19 AI study result: research use only"
KOS_SERIES_DESCRIPTION = "COVID-19 AI key image: research use only"
SR_SERIES_NUMBER = 9010
KOS_SERIES_NUMBER = 9011
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
KEY_OBJECT_TITLE = pydicom_codes.cid7010.OfInterest
"""CID 7010 (113000, DCM, "Of Interest"): the KOS's document title."""
FINDING_CODES: Mapping[str, Code] = {
    PRESENT: codes.PRESENT,
    ABSENT: codes.ABSENT,
    INDETERMINATE: codes.INDETERMINATE,
}


def reference(image: ImageResult, identity: Dataset, header: Dataset | None = None) -> Dataset:
    """The image as the documents reference it: its UIDs (from the job store), its modality and
    size (from its ``header`` when still readable, else as the job recorded them), with the
    study's identity; so a reference needs no file the retention may have purged."""
    ds = Dataset()
    ds.SOPClassUID = image.sop_class_uid
    ds.SOPInstanceUID = image.sop_instance_uid
    ds.SeriesInstanceUID = image.series_instance_uid
    modality = header.get("Modality") if header is not None else None
    ds.Modality = modality or image.modality or "OT"  # not recorded when unreadable
    rows = header.get("Rows") if header is not None else None
    columns = header.get("Columns") if header is not None else None
    rows, columns = rows or image.rows, columns or image.columns
    if rows and columns:
        ds.Rows, ds.Columns = int(rows), int(columns)
    frames = header.get("NumberOfFrames") if header is not None else None
    if frames:
        ds.NumberOfFrames = frames
    copy_identity(identity, ds)
    return ds


def predecessor(sop_instance_uid: str, series_instance_uid: str, identity: Dataset) -> Dataset:
    """The earlier study SR a replacement names (Predecessor Documents Sequence)."""
    ds = Dataset()
    ds.SOPClassUID = COMPREHENSIVE_3D_SR
    ds.SOPInstanceUID = sop_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    return copy_identity(identity, ds)


def _image_group(
    image: ImageResult,
    number: int,
    ref: Dataset,
    algorithm: AlgorithmInfo,
    sop_instance_uid: str,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 group of one image: the per-image SR's group, or the reason it has none."""
    tracking = generate_uid(entropy_srcs=[sop_instance_uid, "image", image.sop_instance_uid])
    if image.analysed and image.probability is not None and image.threshold is not None:
        own = dataclasses.replace(
            algorithm,
            version=image.model_version or algorithm.version,
            parameters={**algorithm.parameters, "threshold": image.threshold},
        )
        group = measurement_group(
            ref,
            probability=image.probability,
            threshold=image.threshold,
            algorithm=own,
            tracking_uid=tracking,
            sc=None,
            pm=None,
        )
        if image.finding == INDETERMINATE:  # the job keeps the verdict, not the domain score
            evaluation = next(
                item
                for item in group[0].ContentSequence
                if item.ValueType == "CODE"
                and item.ConceptNameCodeSequence[0].CodeValue == codes.COVID19.value
            )
            evaluation.ConceptCodeSequence = [hd.sr.CodedConcept.from_code(codes.INDETERMINATE)]
            evaluation.ContentSequence = ContentSequence(
                [
                    TextContentItem(
                        name=codes.COMMENT,
                        value=OUTSIDE_DOMAIN,
                        relationship_type=RelationshipTypeValues.HAS_PROPERTIES,
                    )
                ]
            )
    else:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=tracking, identifier=_tracking_identifier(number)
            ),
            finding_type=codes.COVID19,
            source_images=[  # by its UIDs: an unreadable file may have no size on record
                hd.sr.SourceImageForMeasurementGroup(ref.SOPClassUID, ref.SOPInstanceUID)
            ],
        )
        verb = "Not analysed" if image.finding == REJECTED else "Analysis failed"
        group[0].ContentSequence.append(
            TextContentItem(
                name=codes.COMMENT,
                value=f"{verb}: {image.reason or image.finding}"[:1000],
                relationship_type=RelationshipTypeValues.CONTAINS,
            )
        )
    for item in group[0].ContentSequence:  # name the image within the study
        if item.ConceptNameCodeSequence[0].CodeValue == pydicom_codes.DCM.TrackingIdentifier.value:
            item.TextValue = _tracking_identifier(number)
    group[0].ContinuityOfContent = "SEPARATE"
    return group


def _tracking_identifier(number: int) -> str:
    return f"COVID-19 classification, image {number}"


def _study_evaluation(finding: StudyFinding, refs: Mapping[str, Dataset]) -> ContainerContentItem:
    """TID 1500 rows 12-14: Qualitative Evaluations with CODE COVID-19 = the study finding (row
    13; INFERRED FROM the image that drove it) and TEXT Comment = how it was decided (row 14),
    as the per-image SR states its verdict and reason."""
    verdict = CodeContentItem(
        name=codes.COVID19,
        value=FINDING_CODES[finding.finding],
        relationship_type=RelationshipTypeValues.CONTAINS,
    )
    if finding.driver is not None:
        driver = refs[finding.driver.sop_instance_uid]
        verdict.ContentSequence = ContentSequence(
            [
                ImageContentItem(
                    name=codes.BEST_ILLUSTRATION,
                    referenced_sop_class_uid=driver.SOPClassUID,
                    referenced_sop_instance_uid=driver.SOPInstanceUID,
                    relationship_type=RelationshipTypeValues.INFERRED_FROM,
                )
            ]
        )
    comment = TextContentItem(
        name=codes.COMMENT,
        value=f"Study finding: {finding.reason}",
        relationship_type=RelationshipTypeValues.CONTAINS,
    )
    container = ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS, relationship_type=RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = ContentSequence([verdict, comment])
    return container


@without_identifier_warnings
def build_study_sr(
    images: Sequence[ImageResult],
    finding: StudyFinding,
    *,
    identity: Dataset,
    headers: Mapping[str, Dataset],
    algorithm: AlgorithmInfo,
    series_instance_uid: str,
    sop_instance_uid: str,
    instance_number: int = 1,
    previous_sr: Dataset | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The study's TID 1500 SR: one group per image, the study finding, the driving image.

    ``identity``: a header of the study (its patient and study attributes are copied);
    ``headers``: the images' headers by SOP Instance UID, where still readable (Image Library);
    ``previous_sr``: the study SR this one replaces (see :func:`predecessor`).
    """
    if not images:
        raise ValueError("a study result needs at least one image")
    refs = {
        i.sop_instance_uid: reference(i, identity, headers.get(i.sop_instance_uid)) for i in images
    }
    groups = [
        _image_group(image, number, refs[image.sop_instance_uid], algorithm, sop_instance_uid)
        for number, image in enumerate(images, start=1)
    ]
    report = hd.sr.MeasurementReport(
        observation_context=observation_context(algorithm),
        procedure_reported=codes.PROCEDURE_REPORTED,
        imaging_measurements=groups,
    )
    library_headers = [headers[i.sop_instance_uid] for i in images if i.sop_instance_uid in headers]
    if library_headers:
        insert_image_library(report, library_headers[0])
        library = next(
            item
            for item in report[0].ContentSequence
            if item.ConceptNameCodeSequence[0].CodeValue == pydicom_codes.DCM.ImageLibrary.value
        )
        for header in library_headers[1:]:
            library.ContentSequence.extend(image_library(header).ContentSequence)
    report[0].ContentSequence.append(_study_evaluation(finding, refs))
    if previous_sr is not None and previous_sr.SOPInstanceUID == sop_instance_uid:
        raise ValueError("previous_sr has the SOP Instance UID of the new SR")
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(refs.values()),
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        **algorithm.equipment(),
        is_complete=True,
        is_final=True,
        is_verified=False,
        previous_versions=[previous_sr] if previous_sr is not None else None,
        series_description=SR_SERIES_DESCRIPTION,
        device_serial_number=algorithm.version,
    )
    copy_identity(identity, sr)
    return sr


@without_identifier_warnings
def build_study_kos(
    finding: StudyFinding,
    *,
    identity: Dataset,
    algorithm: AlgorithmInfo,
    series_instance_uid: str,
    sop_instance_uid: str,
    instance_number: int = 1,
    header: Dataset | None = None,
) -> hd.ko.KeyObjectSelectionDocument:
    """The Key Object Selection naming the image that drove ``finding`` (which must have one);
    ``header``: that image's header, when still readable."""
    if finding.driver is None:
        raise ValueError("no image drove the finding: there is no key image to name")
    driver = reference(finding.driver, identity, header)
    probability = (
        f", probability {finding.probability:.3f}" if finding.probability is not None else ""
    )
    threshold = (
        f" ({algorithm.threshold_words(finding.threshold)})"
        if finding.threshold is not None
        else ""
    )
    content = hd.ko.KeyObjectSelection(
        document_title=KEY_OBJECT_TITLE,
        referenced_objects=[driver],
        description=(
            f"COVID-19 {finding.finding}: the image that drove the study finding"
            f"{probability}{threshold}; research use only"
        )[:1024],
    )
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=[driver],
        content=content,
        series_instance_uid=series_instance_uid,
        series_number=KOS_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=algorithm.manufacturer,
        series_description=KOS_SERIES_DESCRIPTION,
    )
    copy_identity(identity, kos)
    return kos
