"""The few coded concepts our result objects emit, named once (scheme, value, meaning).

Everything else in ``worker.results`` refers to these by name, so the conformance statement
(``docs/result-objects.md``) can list them from one place. Codes that pydicom's dictionary
already knows are taken from it; the rest are written out with their scheme.
"""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from common.coding import LOCAL_SCHEME

COVID19 = Code("840539006", "SCT", "COVID-19")
"""The finding: SNOMED CT 840539006 "Disease caused by SARS-CoV-2" (preferred term COVID-19)."""

PRESENT = codes.SCT.Present
"""SCT 52101004 Present: the probability reached the operating threshold."""

ABSENT = codes.SCT.Absent
"""SCT 272519000 Absent: the probability stayed below the operating threshold."""

PROBABILITY = codes.DCM.Probability
"""DCM 122157 Probability: the model's COVID-19 probability, NUM with unit :data:`PERCENT` in
the SR (RIS messages state it in [0, 1])."""


COVID19_PROBABILITY = Code("C19-PROBABILITY", LOCAL_SCHEME, "COVID-19 probability")
"""("C19-PROBABILITY", 99DEEPCOVID, "COVID-19 probability"): the region NUM of earlier versions.

Kept so that SRs written before the verdict was named in the region's concept can still be
read; new SRs use :data:`REGION_PROBABILITY` (one concept per verdict)."""

REGION_PROBABILITY_PRESENT = Code("C19-PRESENT-P", LOCAL_SCHEME, "COVID-19 present")
REGION_PROBABILITY_ABSENT = Code("C19-ABSENT-P", LOCAL_SCHEME, "COVID-19 absent")
REGION_PROBABILITY_INDETERMINATE = Code(
    "C19-INDETERMINATE-P", LOCAL_SCHEME, "COVID-19 indeterminate"
)
REGION_PROBABILITY = {
    "52101004": REGION_PROBABILITY_PRESENT,
    "272519000": REGION_PROBABILITY_ABSENT,
    "82334004": REGION_PROBABILITY_INDETERMINATE,
}
"""The NUM of an evidence region (TID 1410), keyed by the verdict's SCT code value.

The image's COVID-19 probability, pre-coordinated with the finding and its verdict, because a
viewer labels a region with its NUM items alone: OHIF 3.13 writes "<concept meaning>: <value>
<unit code>" for each NUM of the group (and a Finding Site), never the group's Finding or a
qualitative evaluation. So the one line beside a region reads "COVID-19 present: 94.42 %" (the
probability of COVID-19 in an image found present). The meaning is kept this short because OHIF
puts the text box right of the region and clips it at the viewport's edge: "COVID-19 present,
probability: 83.00 %" lost its value in the 1280-pixel-wide test window. No standard code
names a COVID-19 probability, let alone with its verdict, so the concepts are ours (declared
in the SR's Coding Scheme Identification Sequence); the standard pair (Finding COVID-19, DCM
122157 Probability) is in the image-level group, and the verdict itself is the CODE in the
report's Qualitative Evaluations (:data:`QUALITATIVE_EVALUATIONS`)."""

QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
"""UMLS C0034375: TID 1500 row 12, the report-level container of the verdict (CODE COVID-19 =
Present | Absent | Indeterminate) and of its reason (TEXT Comment, row 14)."""

PERCENT = codes.UCUM.Percent
"""UCUM "%": unit of the probabilities and the threshold in the SR (a reader's unit; OHIF prints
the unit's code value, which for "no units" is a bare "1")."""

ILLUSTRATION_OF_ROI = codes.DCM.IllustrationOfROI
"""DCM 121200 Illustration of ROI (TID 1410 row 9)."""

THRESHOLD = codes.DCM.ThresholdValue
"""DCM 122411 Threshold Value: the operating threshold the finding was decided with."""

UNITLESS = codes.UCUM.NoUnits
"""UCUM "1" (no units): unit of the heatmap values (the Parametric Map)."""

PROCEDURE_REPORTED = codes.cid100.XRUnspecifiedBodyRegion
"""LN 43468-8 "XR unspecified body region": Procedure reported in the SR (TID 1500 row 4).

TID 1500 draws the procedure from CID 100 "Quantitative Diagnostic Imaging Procedures"; its
only projection radiography member is this one (SCT 399208008 "Plain chest X-ray", used
before, is not in CID 100). The body part is stated by the source's Body Part Examined.
PixelMed's DicomSRValidator 20220618 carries CID 100 of 2019, without this code, and reports it
as not in the group: ``tests/harness/validators.py`` (``OUTDATED``) says why that is set aside."""

IMAGE_REGION_TRACKING = "COVID-19 evidence region"
"""Tracking identifier prefix of the SR's TID 1410 groups (``... 1``, ``... 2``)."""

SALIENCY = codes.DCM.Saliency
"""DCM 130404 Saliency (CID 7180): quantity of the Parametric Map (occlusion sensitivity)."""

BEST_ILLUSTRATION = codes.DCM.BestIllustrationOfFinding
"""DCM 121080 Best illustration of finding: the SR's reference to the overlay SC."""

ILLUSTRATION = codes.DCM.IllustrationOfFinding
"""DCM 125201 Illustration of Finding: the SR's reference to the Parametric Map."""

SOURCE = Code("260753009", "SCT", "Source")
"""SCT 260753009 Source: the image the rejection SR is about."""

FAILED_ANALYSES = codes.DCM.FailedAnalyses
"""DCM 111024 Failed Analyses: title of the "not analysed: reason" SR before it followed TID
1500 (:mod:`worker.results.rejection`); kept for readers of those SRs."""

COMMENT = codes.DCM.Comment
"""DCM 121106 Comment: the reason text in the "not analysed" SR."""

INDETERMINATE = codes.SCT.Indeterminate
"""SCT 82334004 Indeterminate: the image is outside the model's validated domain (its domain
check failed), so no present/absent call is made; the probability is still reported."""
