"""The report: Comprehensive 3D SR, TID 1500 Imaging Measurement Report (IHE AI Results).

Content tree (``docs/result-objects.md`` has the table)::

    Imaging Measurement Report
      language, device observer (TID 1004: UID, name, manufacturer, model, version as serial)
      procedure reported: XR unspecified body region (CID 100)
      Image Library: the source radiograph and its descriptors (Modality from the source)
      Imaging Measurements
        Measurement Group (TID 1410), one per region of strongest evidence (up to 3)
          tracking identifier "COVID-19 evidence region k" + tracking UID, finding type COVID-19
          SCOORD Image Region = POLYLINE contour, SELECTED FROM the radiograph
          algorithm identification (TID 4019)
          NUM COVID-19 probability (99DEEPCOVID), NUM Threshold Value
          CODE COVID-19 = Present | Absent | Indeterminate (+ TEXT reason), as below
        Measurement Group (TID 1501): the image-level finding
          tracking identifier + tracking UID, finding type COVID-19
          algorithm identification (TID 4019: name, version, parameters)
          IMAGE Source of Measurement = the radiograph
          NUM Probability (unit 1), NUM Threshold Value (unit 1)
          CODE COVID-19 = Present | Absent   (probability >= threshold -> Present)
                        | Indeterminate  (image outside the model's validated domain)
            TEXT Comment = the reason        (HAS PROPERTIES, only when indeterminate)
          IMAGE Best illustration of finding = the overlay Secondary Capture
          IMAGE Illustration of Finding = the Parametric Map

The TID 1410 groups are what viewers display: OHIF (dcmjs) shows a measurement group only when
it holds a SCOORD that references an image, and labels it with the group's NUM items only
("<concept meaning>: <value> <unit>"; OHIF 3.13 prints neither the Finding nor the qualitative
evaluation). So a region's probability NUM names the finding in its concept,
:data:`codes.COVID19_PROBABILITY` ("COVID-19 probability", our own coding scheme), where
the image-level group keeps the standard DCM 122157 Probability. With no positive evidence at
all, the one region is the image's outline, so the probability is still shown on the image. The
regions are those of :mod:`worker.results.evidence`, the same ones the overlay and the
presentation state draw.

All referenced instances (source, SC, PM) are listed as evidence; a previous SR for the same
source (an earlier model version) is referenced as a predecessor document.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import ImageContentItem, RelationshipTypeValues, TextContentItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as pydicom_codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from worker.results import codes
from worker.results.algorithm import AlgorithmInfo
from worker.results.evidence import EvidenceRegion, image_outline
from worker.results.identity import copy_identity, header_only, without_identifier_warnings
from worker.results.library import insert_image_library
from worker.results.verdict import DomainResult, indeterminate, verdict_code

SERIES_DESCRIPTION = "COVID-19 AI report: research use only"
TRACKING_IDENTIFIER = "COVID-19 classification"


def local_coding_scheme() -> CodingSchemeIdentificationItem:
    """Coding Scheme Identification Sequence item (PS3.3 C.12.1) declaring our own scheme,
    :data:`codes.LOCAL_SCHEME`, which the regions' probability concept is drawn from."""
    return CodingSchemeIdentificationItem(
        designator=codes.LOCAL_SCHEME,
        name="deepcovid-node local codes",
        responsible_organization="deepcovid-node",
    )


def check_probability(name: str, value: float) -> float:
    """A finite number in [0, 1], or ValueError naming the argument."""
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return value


def finding(
    probability: float, threshold: float, domain: DomainResult | None = None
) -> hd.sr.CodedConcept:
    """Present when the probability reaches the operating threshold, else Absent;
    Indeterminate when the image failed the model's domain check."""
    return hd.sr.CodedConcept.from_code(verdict_code(probability, threshold, domain))


def qualitative_evaluation(
    probability: float, threshold: float, domain: DomainResult | None
) -> hd.sr.QualitativeEvaluation:
    """CODE COVID-19 = the verdict; an indeterminate one carries its reason as TEXT Comment.

    The reason is a HAS PROPERTIES child of the coded verdict, so it stays attached to the
    statement it qualifies (TID 1501 is extensible; Comprehensive 3D SR allows TEXT under
    CODE by HAS PROPERTIES).
    """
    evaluation = hd.sr.QualitativeEvaluation(
        name=codes.COVID19, value=finding(probability, threshold, domain)
    )
    if domain is not None and indeterminate(domain):
        evaluation[0].ContentSequence = hd.sr.ContentSequence(
            [
                TextContentItem(
                    name=codes.COMMENT,
                    value=domain.reason,
                    relationship_type=RelationshipTypeValues.HAS_PROPERTIES,
                )
            ]
        )
    return evaluation


def observation_context(algorithm: AlgorithmInfo) -> hd.sr.ObservationContext:
    """Device observer: the trained model, identified by its Device UID."""
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=pydicom_codes.cid270.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=algorithm.device_uid,
                name=algorithm.name,
                manufacturer_name=algorithm.manufacturer,
                model_name=algorithm.model_name or None,
                serial_number=algorithm.version,
            ),
        )
    )


def algorithm_identification(algorithm: AlgorithmInfo) -> hd.sr.AlgorithmIdentification:
    """TID 4019: name, version and ``key=value`` parameters."""
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=algorithm.parameter_strings or None,
    )


def measurement_group(
    source: Dataset,
    *,
    probability: float,
    threshold: float,
    algorithm: AlgorithmInfo,
    tracking_uid: str,
    sc: Dataset | None,
    pm: Dataset | None,
    domain: DomainResult | None = None,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 group: the finding, its probability and threshold, and the references."""
    algorithm_id = algorithm_identification(algorithm)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=TRACKING_IDENTIFIER
        ),
        finding_type=codes.COVID19,
        algorithm_id=algorithm_id,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        measurements=_measurements(probability, threshold, algorithm_id),
        qualitative_evaluations=[qualitative_evaluation(probability, threshold, domain)],
    )
    # SEPARATE: the items are distinct statements; rendered CONTINUOUS (highdicom's default),
    # dsr2html and viewers run them together as "0.7 1 0.5 1 Present" without their names.
    group[0].ContinuityOfContent = "SEPARATE"
    # TID 1501 is extensible; its Referenced Real World Value Map row is for RWVM objects
    # only, so the derived images are referenced as IMAGE items of the group.
    for concept, image in ((codes.BEST_ILLUSTRATION, sc), (codes.ILLUSTRATION, pm)):
        if image is not None:
            group[0].ContentSequence.append(
                ImageContentItem(
                    name=concept,
                    referenced_sop_class_uid=image.SOPClassUID,
                    referenced_sop_instance_uid=image.SOPInstanceUID,
                    relationship_type=RelationshipTypeValues.CONTAINS,
                )
            )
    return group


def _measurements(
    probability: float,
    threshold: float,
    algorithm_id: hd.sr.AlgorithmIdentification,
    probability_name: Code = codes.PROBABILITY,
) -> list[hd.sr.Measurement]:
    """NUM probability (first: OHIF's region label starts with it), NUM threshold."""
    return [
        hd.sr.Measurement(
            name=probability_name,
            value=probability,
            unit=codes.UNITLESS,
            algorithm_id=algorithm_id,
        ),
        hd.sr.Measurement(name=codes.THRESHOLD, value=threshold, unit=codes.UNITLESS),
    ]


def region_groups(
    source: Dataset,
    regions: Sequence[EvidenceRegion],
    *,
    probability: float,
    threshold: float,
    algorithm: AlgorithmInfo,
    sop_instance_uid: str,
    domain: DomainResult | None = None,
    first_tracking_uid: str | None = None,
) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    """TID 1410 groups, one per evidence region: contour, finding, verdict, probability.

    The probability NUM is :data:`codes.COVID19_PROBABILITY`, so that a viewer that labels a
    region with its NUM items' concept meanings (OHIF) names the finding.

    Without regions (no positive evidence), one group whose region is the image's outline.
    ``first_tracking_uid``: the Tracking Unique Identifier of the first region, the one of the
    image-level group (same finding), so that OHIF merges that group into the region.
    """
    outlines = [region.points for region in regions] or [
        image_outline((int(source.Rows), int(source.Columns)))
    ]
    frames = [1] if int(source.get("NumberOfFrames") or 1) > 1 else None
    algorithm_id = algorithm_identification(algorithm)
    groups = []
    for number, points in enumerate(outlines, start=1):
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=(
                    first_tracking_uid
                    if number == 1 and first_tracking_uid
                    else generate_uid(entropy_srcs=[sop_instance_uid, "region", str(number)])
                ),
                identifier=f"{codes.IMAGE_REGION_TRACKING} {number}",
            ),
            referenced_region=hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=np.round(np.asarray(points, dtype=np.float64), 2),
                source_image=hd.sr.SourceImageForRegion(
                    referenced_sop_class_uid=source.SOPClassUID,
                    referenced_sop_instance_uid=source.SOPInstanceUID,
                    referenced_frame_numbers=frames,
                ),
            ),
            finding_type=codes.COVID19,
            algorithm_id=algorithm_id,
            measurements=_measurements(
                probability, threshold, algorithm_id, codes.COVID19_PROBABILITY
            ),
            qualitative_evaluations=[qualitative_evaluation(probability, threshold, domain)],
        )
        group[0].ContinuityOfContent = "SEPARATE"
        groups.append(group)
    return groups


@without_identifier_warnings
def build_report_sr(
    source: Dataset,
    *,
    probability: float,
    threshold: float,
    algorithm: AlgorithmInfo,
    sc: Dataset | None,
    pm: Dataset | None,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
    previous_sr: Dataset | None = None,
    domain: DomainResult | None = None,
    regions: Sequence[EvidenceRegion] = (),
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 SR for ``source`` referencing the overlay ``sc`` and the map ``pm``.

    ``domain``: the model's domain check of the image; when it failed, the finding is coded
    Indeterminate with the reason (the probability is still reported). ``regions``: the
    evidence regions (:func:`worker.results.evidence.evidence_regions`) the SR outlines.
    """
    probability = check_probability("probability", probability)
    threshold = check_probability("threshold", threshold)
    header = header_only(source)
    # One finding, one Tracking Unique Identifier: the image-level group and the first region.
    # OHIF merges groups by this UID; a group of its own without a SCOORD breaks OHIF 3.13's SR
    # viewport ("Something went wrong", nothing drawn), merged into the region it is drawn.
    tracking_uid = generate_uid(entropy_srcs=[sop_instance_uid, "tracking"])
    group = measurement_group(
        header,
        probability=probability,
        threshold=threshold,
        algorithm=algorithm,
        tracking_uid=tracking_uid,
        sc=sc,
        pm=pm,
        domain=domain,
    )
    report = hd.sr.MeasurementReport(
        observation_context=observation_context(algorithm),
        procedure_reported=codes.PROCEDURE_REPORTED,
        imaging_measurements=[
            *region_groups(
                header,
                regions,
                probability=probability,
                threshold=threshold,
                algorithm=algorithm,
                sop_instance_uid=sop_instance_uid,
                domain=domain,
                first_tracking_uid=tracking_uid,
            ),
            group,
        ],
    )
    insert_image_library(report, header)
    evidence = [header] + [header_only(obj) for obj in (sc, pm) if obj is not None]
    if previous_sr is not None:
        if previous_sr.StudyInstanceUID != source.StudyInstanceUID:
            raise ValueError("previous_sr belongs to another study than the source")
        if previous_sr.SOPInstanceUID == sop_instance_uid:
            raise ValueError("previous_sr has the SOP Instance UID of the new SR")
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        **algorithm.equipment(),
        is_complete=True,
        is_final=True,
        is_verified=False,
        previous_versions=[header_only(previous_sr)] if previous_sr is not None else None,
        series_description=SERIES_DESCRIPTION,
        device_serial_number=algorithm.version,
        coding_schemes=[local_coding_scheme()],
    )
    copy_identity(source, sr)
    return sr
