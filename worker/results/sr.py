"""The report: Comprehensive 3D SR, TID 1500 Imaging Measurement Report (IHE AI Results).

Content tree (``docs/result-objects.md`` has the table)::

    Imaging Measurement Report
      language, device observer (TID 1004: UID, name, manufacturer, model, version as serial)
      procedure reported: XR unspecified body region (CID 100)
      Image Library: the source radiograph and its descriptors (Modality from the source)
      Imaging Measurements
        Measurement Group (TID 1410): the image-level result, its region the whole image
          tracking identifier "COVID-19 classification" + tracking UID, finding COVID-19
          algorithm identification (TID 4019: name, version, parameters), once
          SCOORD Image Region = the image's outline, SELECTED FROM the radiograph
          NUM Probability (DCM 122157, %), NUM Threshold Value (%)
          IMAGE Best illustration of finding = the overlay SC, Illustration of Finding = the map
        Measurement Group (TID 1410), one per region of strongest evidence (up to 3)
          tracking identifier "COVID-19 evidence region k" + tracking UID, finding COVID-19
          algorithm identification (TID 4019: name and version)
          SCOORD Image Region = POLYLINE contour, SELECTED FROM the radiograph
          NUM "COVID-19 present" (or absent, indeterminate), %
      Qualitative Evaluations (TID 1500 row 12)
        CODE COVID-19 = Present | Absent   (probability >= threshold -> Present)
                      | Indeterminate  (image outside the model's validated domain)
        TEXT Comment = the reason      (row 14, only when indeterminate)

Why this shape (each point checked by a test):

- Independent readers: PixelMed's DicomSRValidator (``tests/harness/validators.py``) finds no
  error and no item outside its templates. Its 2022 templates have no qualitative-evaluation
  rows in TID 1410/1501 groups, so the verdict is stated once, at the report level, where TID
  1500 row 12 puts qualitative evaluations. It chooses TID 1410 or 1501 for all the groups of
  the container at once; every group here has an Image Region, so every group is a valid TID
  1410 group whichever it picks.
- OHIF 3.13 (dcmjs) draws a group only when it holds a SCOORD that references an image, labels
  it with the group's NUM items alone ("<concept meaning>: <value, 2 decimals> <unit code>")
  and merges groups that share a Tracking UID. So each group has its own region and UID: the
  image-level group's line is "Probability: 94.42 %" and "Threshold Value: 50.00 %" at the
  image's outline, a region's single line "COVID-19 present: 94.42 %"
  (:data:`codes.REGION_PROBABILITY`). The unit is UCUM "%", since OHIF prints the unit's code
  (a bare "1" for "no units").
- A reader of the text (``dsr2html``): the algorithm's parameters are written once, in the
  image-level group (a region names the algorithm and version only), and no NUM repeats them;
  percentages are written to 2 decimals (:func:`percent`).

All referenced instances (source, SC, PM) are listed as evidence; a previous SR for the same
source (an earlier model version) is referenced as a predecessor document.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import (
    CodeContentItem,
    ContainerContentItem,
    ContentItem,
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


def percent(fraction: float, digits: int = 2) -> float:
    """``fraction`` (in [0, 1]) as a percentage cut (not rounded) to ``digits`` decimals.

    Cut, so that a probability below the threshold never reads as reaching it: with a threshold
    of at most ``digits + 2`` decimals (e.g. 0.4217), the written probability is below the
    written threshold exactly when the probability is. Decimal arithmetic on the shortest
    text of the float, so 0.29 is 29.0 % and not 28.99 %.
    """
    quantum = Decimal(1).scaleb(-digits)
    return float((Decimal(repr(float(fraction))) * 100).quantize(quantum, rounding=ROUND_FLOOR))


def threshold_percent(threshold: float) -> float:
    """The threshold as a percentage, to 4 decimals (thresholds are short decimals: 0.4217 is
    42.17 %; the 4 decimals only drop the float's noise)."""
    value = Decimal(repr(float(threshold))) * 100
    return float(value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN))


def algorithm_identification(
    algorithm: AlgorithmInfo, *, parameters: bool = True
) -> hd.sr.AlgorithmIdentification:
    """TID 4019: name, version and (unless ``parameters`` is false) ``key=value`` parameters."""
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=(algorithm.parameter_strings or None) if parameters else None,
    )


def qualitative_evaluations(
    probability: float, threshold: float, domain: DomainResult | None = None
) -> ContainerContentItem:
    """TID 1500 row 12: CONTAINER Qualitative Evaluations with the verdict (row 13, CODE
    COVID-19 = Present | Absent | Indeterminate) and, when indeterminate, its reason (row 14,
    TEXT Comment). Appended to the report's root after Imaging Measurements."""
    container = ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS,
        relationship_type=RelationshipTypeValues.CONTAINS,
    )
    items: list[ContentItem] = [
        CodeContentItem(
            name=codes.COVID19,
            value=finding(probability, threshold, domain),
            relationship_type=RelationshipTypeValues.CONTAINS,
        )
    ]
    if domain is not None and indeterminate(domain):
        items.append(
            TextContentItem(
                name=codes.COMMENT,
                value=domain.reason,
                relationship_type=RelationshipTypeValues.CONTAINS,
            )
        )
    container.ContentSequence = hd.sr.ContentSequence(items)
    # SEPARATE: rendered CONTINUOUS, dsr2html writes the verdict without its name ("Present").
    container.ContinuityOfContent = "SEPARATE"
    return container


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
    """TID 1501 group: the finding, its probability and threshold, the verdict, references.

    Not used by the per-image SR any more (its image-level group is a TID 1410 group over the
    whole image, :func:`image_group`); kept for the study-level SR. PixelMed's validator
    reports the CODE verdict inside a TID 1501 group as "not in template" (its 2022 templates
    predate the qualitative-evaluation rows): :func:`qualitative_evaluations` states it at the
    report level instead.
    """
    algorithm_id = algorithm_identification(algorithm)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=TRACKING_IDENTIFIER
        ),
        finding_type=codes.COVID19,
        algorithm_id=algorithm_id,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        measurements=_measurements(probability, threshold),
        qualitative_evaluations=[qualitative_evaluation(probability, threshold, domain)],
    )
    # SEPARATE: the items are distinct statements; rendered CONTINUOUS (highdicom's default),
    # dsr2html and viewers run them together as "0.7 1 0.5 1 Present" without their names.
    group[0].ContinuityOfContent = "SEPARATE"
    _append_illustrations(group, sc, pm)
    return group


def _append_illustrations(
    group: hd.sr.MeasurementsAndQualitativeEvaluations
    | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations,
    sc: Dataset | None,
    pm: Dataset | None,
) -> None:
    """IMAGE items referencing the overlay SC and the map (TID 1501 row 10b / TID 1410 is
    extensible; the Referenced Real World Value Map row is for RWVM objects only)."""
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


def _measurements(probability: float, threshold: float) -> list[hd.sr.Measurement]:
    """NUM Probability and NUM Threshold Value, in percent (:func:`percent`)."""
    return [
        hd.sr.Measurement(name=codes.PROBABILITY, value=percent(probability), unit=codes.PERCENT),
        hd.sr.Measurement(
            name=codes.THRESHOLD, value=threshold_percent(threshold), unit=codes.PERCENT
        ),
    ]


def _region(source: Dataset, points: np.ndarray) -> hd.sr.ImageRegion:
    """SCOORD Image Region: a closed POLYLINE on ``source`` (frame 1 of a multi-frame)."""
    frames = [1] if int(source.get("NumberOfFrames") or 1) > 1 else None
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.round(np.asarray(points, dtype=np.float64), 2),
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=source.SOPClassUID,
            referenced_sop_instance_uid=source.SOPInstanceUID,
            referenced_frame_numbers=frames,
        ),
    )


def image_group(
    source: Dataset,
    *,
    probability: float,
    threshold: float,
    algorithm: AlgorithmInfo,
    tracking_uid: str,
    sc: Dataset | None,
    pm: Dataset | None,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410 group of the image-level result: its region is the whole image (the model
    reads the whole film), with the probability and threshold, the algorithm (once, with its
    parameters) and the references to the overlay and the map.

    A region of its own, so that OHIF draws and labels it apart from the evidence regions
    (a group without a region breaks OHIF 3.13's SR viewport; merged into a region by a shared
    Tracking UID, its lines were repeated in that region's label).
    """
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=TRACKING_IDENTIFIER
        ),
        referenced_region=_region(source, image_outline((int(source.Rows), int(source.Columns)))),
        finding_type=codes.COVID19,
        algorithm_id=algorithm_identification(algorithm),
        measurements=_measurements(probability, threshold),
    )
    group[0].ContinuityOfContent = "SEPARATE"
    _append_illustrations(group, sc, pm)
    return group


def region_concept(
    probability: float, threshold: float, domain: DomainResult | None = None
) -> Code:
    """The region NUM's concept: the probability named with the finding and its verdict."""
    return codes.REGION_PROBABILITY[verdict_code(probability, threshold, domain).value]


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
    """TID 1410 groups, one per evidence region: contour, finding and one NUM, the image's
    probability named with the verdict (:func:`region_concept`), the line a viewer writes
    beside the region. None without regions (no positive evidence).

    ``first_tracking_uid``: the Tracking Unique Identifier of the first region (default: one
    derived from ``sop_instance_uid``).
    """
    concept = region_concept(probability, threshold, domain)
    algorithm_id = algorithm_identification(algorithm, parameters=False)
    groups = []
    for number, region in enumerate(regions, start=1):
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=(
                    first_tracking_uid
                    if number == 1 and first_tracking_uid
                    else generate_uid(entropy_srcs=[sop_instance_uid, "region", str(number)])
                ),
                identifier=f"{codes.IMAGE_REGION_TRACKING} {number}",
            ),
            referenced_region=_region(source, region.points),
            finding_type=codes.COVID19,
            algorithm_id=algorithm_id,
            measurements=[
                hd.sr.Measurement(name=concept, value=percent(probability), unit=codes.PERCENT)
            ],
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
    report = hd.sr.MeasurementReport(
        observation_context=observation_context(algorithm),
        procedure_reported=codes.PROCEDURE_REPORTED,
        imaging_measurements=[
            image_group(
                header,
                probability=probability,
                threshold=threshold,
                algorithm=algorithm,
                tracking_uid=generate_uid(entropy_srcs=[sop_instance_uid, "tracking"]),
                sc=sc,
                pm=pm,
            ),
            *region_groups(
                header,
                regions,
                probability=probability,
                threshold=threshold,
                algorithm=algorithm,
                sop_instance_uid=sop_instance_uid,
                domain=domain,
            ),
        ],
    )
    insert_image_library(report, header)
    report[0].ContentSequence.append(qualitative_evaluations(probability, threshold, domain))
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
