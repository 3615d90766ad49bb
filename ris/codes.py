"""The coded concepts of the RIS messages, named once for the HL7 v2 and the FHIR builders.

The finding and its values are the concepts the study's DICOM SR uses (``worker.results.codes``;
a unit test keeps the two equal, as ``ris`` may not import the worker). Each concept carries its
coding scheme designator, which is also its HL7 v2 coding system (table 0396: ``SCT``, ``DCM``,
``LN``, and ``99zzz`` for local codes), and the FHIR ``system`` URI of that scheme.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.coding import LOCAL_SCHEME

FHIR_SYSTEMS = {
    "SCT": "http://snomed.info/sct",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "LN": "http://loinc.org",
    LOCAL_SCHEME: "urn:deepcovid-node:codes",
}
"""FHIR ``Coding.system`` of each coding scheme designator (the local one is a URN of ours)."""


@dataclass(frozen=True)
class Concept:
    """A code, its coding scheme designator (= HL7 v2 coding system) and its display text."""

    code: str
    scheme: str
    display: str

    @property
    def system(self) -> str:
        """The FHIR ``Coding.system`` URI of the scheme."""
        return FHIR_SYSTEMS[self.scheme]


COVID19 = Concept("840539006", "SCT", "COVID-19")
"""The finding (SNOMED CT 840539006), as in the SR: OBX-3 / Observation.code of the result."""

FINDING_VALUES = {
    "present": Concept("52101004", "SCT", "Present"),
    "absent": Concept("272519000", "SCT", "Absent"),
    "indeterminate": Concept("82334004", "SCT", "Indeterminate"),
}
"""The study finding's coded value (OBX-5 / Observation.valueCodeableConcept), by finding name."""

PROBABILITY = Concept("C19-PROBABILITY", LOCAL_SCHEME, "COVID-19 probability")
"""The probability (0-1) of the image that drove the finding: our local concept, named with the
SR's codes (``worker.results.codes.COVID19_PROBABILITY``), pre-coordinated so that the value
stands alone in an OBX or a component."""

THRESHOLD = Concept("122411", "DCM", "Threshold Value")
"""The operating threshold the finding was decided with."""

OPERATING_POINT = Concept("C19-OPERATING-POINT", LOCAL_SCHEME, "Operating point")
"""Which operating point set the threshold: ``paper`` or ``clinical``."""

ALGORITHM_VERSION = Concept("111003", "DCM", "Algorithm Version")
"""The model version that made the result."""

STUDY_INSTANCE_UID = Concept("110180", "DCM", "Study Instance UID")
"""The study the result is about (OBX of type ST in the ORU message)."""

REPORT = Concept("C19-TRIAGE", LOCAL_SCHEME, "COVID-19 triage of a chest radiograph study (AI)")
"""What the report is: OBR-4 Universal Service Identifier / DiagnosticReport.code."""

RESEARCH_USE_ONLY = (
    "Research use only: made by a machine-learning model (Deep-COVID), not a diagnosis and not "
    "for clinical decisions."
)
"""The note every message carries (NTE in HL7, note/conclusion in FHIR)."""

SENDING_APPLICATION = "DEEPCOVID"
"""Our application's name: MSH-3 and the FHIR report's performer display."""
