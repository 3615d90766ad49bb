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
"""DCM 122157 Probability: the model's COVID-19 probability, NUM with unit :data:`UNITLESS`."""


COVID19_PROBABILITY = Code("C19-PROBABILITY", LOCAL_SCHEME, "COVID-19 probability")
"""("C19-PROBABILITY", 99DEEPCOVID, "COVID-19 probability"): the NUM of the SR's regions.

The same number as :data:`PROBABILITY` in the image-level group, pre-coordinated with what it is
the probability of, because viewers print a region's NUM items by their concept meaning and
nothing else of the group: OHIF 3.13 labels a region "<meaning>: <value> <unit>" from its NUM
items (and a Finding Site), never from its Finding or qualitative evaluation. No standard code
names a COVID-19 probability, so the concept is ours; the standard pair (finding type COVID-19,
DCM 122157 Probability) stays in the image-level group for SR consumers."""

THRESHOLD = codes.DCM.ThresholdValue
"""DCM 122411 Threshold Value: the operating threshold the finding was decided with."""

UNITLESS = codes.UCUM.NoUnits
"""UCUM "1" (no units): unit of the probability, the threshold and the heatmap values."""

PROCEDURE_REPORTED = codes.cid100.XRUnspecifiedBodyRegion
"""LN 43468-8 "XR unspecified body region": Procedure reported in the SR (TID 1500 row 4).

TID 1500 draws the procedure from CID 100 "Quantitative Diagnostic Imaging Procedures"; its
only projection radiography member is this one (SCT 399208008 "Plain chest X-ray", used
before, is not in CID 100). The body part is stated by the source's Body Part Examined."""

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
"""DCM 111024 Failed Analyses: title of the "not analysed: reason" SR."""

COMMENT = codes.DCM.Comment
"""DCM 121106 Comment: the reason text in the "not analysed" SR."""

INDETERMINATE = codes.SCT.Indeterminate
"""SCT 82334004 Indeterminate: the image is outside the model's validated domain (its domain
check failed), so no present/absent call is made; the probability is still reported."""
