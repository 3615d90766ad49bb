"""FHIR R4 DiagnosticReport + Observation of a study result, as a transaction Bundle.

Built as plain JSON data and validated with ``fhir.resources`` (its ``R4B`` models: version
8.x ships R5 by default and R4B/STU3 as sub-packages, with no R4 4.0.1 package on pydantic 2;
every element used here is the same in R4 and R4B, so the Bundle is R4 as much as R4B -- see
docs/ris.md). The Bundle holds:

- the **Patient**, created only if none has the identifier yet (``ifNoneExist``), so the report
  has a subject without this node owning patient records;
- the **Observation** of the study finding (SNOMED CT 840539006 COVID-19, value Present / Absent /
  Indeterminate) with the probability, threshold, operating point and model version as
  components;
- the **DiagnosticReport** that names the order (``basedOn``: the Accession Number), the study
  (``imagingStudy``: the Study Instance UID) and the observation, with a "research use only"
  conclusion.

The Observation and the report are written with conditional updates keyed by the study, so a
resend after a lost answer changes nothing and a replacement study result (a late image) updates
the same report with status ``corrected``. Every id in the Bundle is derived from the study result,
so the same outcome always makes the same bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any
from urllib.parse import quote

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from ris import codes
from ris.outcome import StudyOutcome, fraction_problem

FHIR_VERSION = "4.0"
"""What the HTTP ``Content-Type`` says (``application/fhir+json; fhirVersion=4.0``)."""
DICOM_UID_SYSTEM = "urn:dicom:uid"
"""FHIR's identifier system for DICOM UIDs (value ``urn:oid:<uid>``), as ImagingStudy uses."""
REPORT_SYSTEM = "urn:deepcovid-node:study-report"
"""Identifier system of our report and observation, per study (value: the Study Instance UID)."""
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
UCUM = "http://unitsofmeasure.org"
_STATUSES = {
    "DiagnosticReport": frozenset(
        {
            "registered",
            "partial",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "appended",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
    "Observation": frozenset(
        {
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
}
"""R4's required value sets of ``DiagnosticReport.status`` and ``Observation.status``."""
_NAMESPACE = uuid.UUID("6f1f4a51-61c5-4b71-9d2a-3c1f2a9d0c19")
"""Namespace of the Bundle's ``urn:uuid`` full URLs (uuid5 of the study result)."""


class FhirError(ValueError):
    """A Bundle that cannot be built or does not validate."""


def report_status(outcome: StudyOutcome) -> str:
    """``corrected`` for a result that replaces an earlier one of the study, else ``final``."""
    return "corrected" if outcome.replaces_sr_sop_instance_uid else "final"


def build_bundle(outcome: StudyOutcome, *, patient_id_system: str | None = None) -> dict[str, Any]:
    """The transaction Bundle of ``outcome`` as JSON data, validated by ``fhir.resources``.

    ``patient_id_system``: the FHIR identifier system of the Patient ID (the issuer's URI);
    without it the Patient is matched by the identifier's value alone.
    """
    if outcome.finding not in codes.FINDING_VALUES:
        raise FhirError(f"unknown study finding {outcome.finding!r}")
    problem = fraction_problem(outcome)
    if problem:
        raise FhirError(problem)
    if outcome.issued.tzinfo is None:
        raise FhirError("the study result's time has no time zone")
    status = report_status(outcome)
    issued = outcome.issued.astimezone(dt.UTC).isoformat(timespec="seconds")
    patient_url = _urn(outcome, "patient")
    observation_url = _urn(outcome, "observation")
    report_url = _urn(outcome, "report")
    entries: list[dict[str, Any]] = []
    subject: dict[str, Any] | None = None
    if outcome.patient_id:
        identifier = _patient_identifier(outcome.patient_id, patient_id_system)
        entries.append(
            {
                "fullUrl": patient_url,
                "resource": _patient(outcome, identifier),
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": "identifier=" + _token(identifier),
                },
            }
        )
        subject = {"reference": patient_url}
    study_key = {"system": REPORT_SYSTEM, "value": outcome.study_instance_uid}
    entries.append(
        {
            "fullUrl": observation_url,
            "resource": _observation(outcome, status, issued, subject, study_key),
            "request": {"method": "PUT", "url": "Observation?identifier=" + _token(study_key)},
        }
    )
    entries.append(
        {
            "fullUrl": report_url,
            "resource": _report(outcome, status, issued, subject, study_key, observation_url),
            "request": {"method": "PUT", "url": "DiagnosticReport?identifier=" + _token(study_key)},
        }
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "timestamp": issued,
        "identifier": _sr_identifier(outcome),
        "entry": entries,
    }
    validate_bundle(bundle)
    return bundle


def to_json(bundle: dict[str, Any]) -> bytes:
    """The Bundle as the bytes POSTed (UTF-8 JSON, keys in a stable order)."""
    return json.dumps(bundle, ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8")


def validate_bundle(data: dict[str, Any]) -> Bundle:
    """Validate ``data`` as an R4(B) Bundle and each entry's resource; raises :class:`FhirError`.

    ``fhir.resources`` checks structure, cardinality and data types but not the codes of
    required bindings; the two that matter here (the report's and the observation's status) are
    checked against their R4 value sets too.
    """
    try:
        bundle = Bundle.model_validate(data)
    except ValidationError as exc:
        raise FhirError(f"the FHIR Bundle does not validate: {_problems(exc)}") from exc
    except (KeyError, TypeError, ValueError) as exc:  # KeyError: an unknown resource type
        raise FhirError(f"the FHIR Bundle does not validate: {exc!r}") from exc
    for entry in data.get("entry") or []:
        resource = entry.get("resource") or {}
        allowed = _STATUSES.get(resource.get("resourceType", ""))
        if allowed is not None and resource.get("status") not in allowed:
            raise FhirError(
                f"the FHIR Bundle does not validate: {resource['resourceType']}.status "
                f"{resource.get('status')!r} is not one of {sorted(allowed)}"
            )
    return bundle


def _problems(exc: ValidationError) -> str:
    """Where and why, without the offending values (they may be patient identifiers)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)
    )


def _patient(outcome: StudyOutcome, identifier: dict[str, Any]) -> dict[str, Any]:
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": [identifier]}
    if outcome.patient_name:
        name = _human_name(outcome.patient_name)
        if name:
            patient["name"] = [name]
    if outcome.patient_birth_date and len(outcome.patient_birth_date) == 8:
        da = outcome.patient_birth_date
        if da.isdigit():
            patient["birthDate"] = f"{da[:4]}-{da[4:6]}-{da[6:]}"
    gender = {"M": "male", "F": "female", "O": "other"}.get((outcome.patient_sex or "").upper())
    patient["gender"] = gender or "unknown"
    return patient


def _human_name(pn: str) -> dict[str, Any] | None:
    """A DICOM PN (first group: family^given^middle^prefix^suffix) as a FHIR HumanName."""
    family, given, middle, prefix, suffix = (pn.split("=")[0].split("^") + [""] * 5)[:5]
    name: dict[str, Any] = {}
    if family:
        name["family"] = family
    givens = [g for g in (given, *middle.split(" ")) if g]
    if givens:
        name["given"] = givens
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return name or None


def _observation(
    outcome: StudyOutcome,
    status: str,
    issued: str,
    subject: dict[str, Any] | None,
    study_key: dict[str, str],
) -> dict[str, Any]:
    components: list[dict[str, Any]] = []
    if outcome.probability is not None:
        components.append(
            {"code": _concept(codes.PROBABILITY), "valueQuantity": _unitless(outcome.probability)}
        )
    if outcome.threshold is not None:
        components.append(
            {"code": _concept(codes.THRESHOLD), "valueQuantity": _unitless(outcome.threshold)}
        )
    if outcome.operating_point:
        components.append(
            {"code": _concept(codes.OPERATING_POINT), "valueString": outcome.operating_point}
        )
    components.append(
        {"code": _concept(codes.ALGORITHM_VERSION), "valueString": outcome.model_version}
    )
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [study_key],
        "status": status,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "imaging",
                        "display": "Imaging",
                    }
                ]
            }
        ],
        "code": _concept(codes.COVID19),
        "effectiveDateTime": issued,
        "issued": issued,
        "valueCodeableConcept": _concept(codes.FINDING_VALUES[outcome.finding]),
        "derivedFrom": [_study_reference(outcome)],
        "note": [{"text": codes.RESEARCH_USE_ONLY}],
        "component": components,
    }
    if subject is not None:
        observation["subject"] = subject
    return observation


def _report(
    outcome: StudyOutcome,
    status: str,
    issued: str,
    subject: dict[str, Any] | None,
    study_key: dict[str, str],
    observation_url: str,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [
            study_key,
            _sr_identifier(outcome),
        ],
        "status": status,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                        "code": "RAD",
                        "display": "Radiology",
                    }
                ]
            }
        ],
        "code": _concept(codes.REPORT),
        "effectiveDateTime": issued,
        "issued": issued,
        "imagingStudy": [_study_reference(outcome)],
        "result": [{"reference": observation_url}],
        "conclusion": _conclusion(outcome),
        "conclusionCode": [_concept(codes.FINDING_VALUES[outcome.finding])],
    }
    if outcome.accession_number:
        report["basedOn"] = [
            {
                "type": "ServiceRequest",
                "identifier": {
                    "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                    "value": outcome.accession_number,
                },
            }
        ]
    if subject is not None:
        report["subject"] = subject
    return report


def _conclusion(outcome: StudyOutcome) -> str:
    """One line a RIS worklist can show: the finding, how it was reached, and the caveat."""
    parts = [f"COVID-19: {codes.FINDING_VALUES[outcome.finding].display}"]
    details = []
    if outcome.probability is not None:
        details.append(f"probability {outcome.probability:.2f}")
    if outcome.threshold is not None:
        point = f" ({outcome.operating_point} operating point)" if outcome.operating_point else ""
        details.append(f"threshold {outcome.threshold:.2f}{point}")
    details.append(f"model {outcome.model_version}")
    parts.append(f"({', '.join(details)}).")
    if outcome.replaces_sr_sop_instance_uid:
        parts.append("Corrected: replaces an earlier result for this study.")
    parts.append(codes.RESEARCH_USE_ONLY)
    return " ".join(parts)


def _sr_identifier(outcome: StudyOutcome) -> dict[str, str]:
    """The study SR's SOP Instance UID: names this very result (a replacement has another)."""
    return {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{outcome.sr_sop_instance_uid}"}


def _study_reference(outcome: StudyOutcome) -> dict[str, Any]:
    return {
        "type": "ImagingStudy",
        "identifier": {
            "system": DICOM_UID_SYSTEM,
            "value": f"urn:oid:{outcome.study_instance_uid}",
        },
    }


def _patient_identifier(patient_id: str, system: str | None) -> dict[str, Any]:
    identifier: dict[str, Any] = {
        "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
        "value": patient_id,
    }
    if system:
        identifier["system"] = system
    return identifier


def _token(identifier: dict[str, Any]) -> str:
    """A search token ``system|value`` (or ``value``), URL-encoded for a conditional URL."""
    value = quote(str(identifier["value"]), safe="")
    system = identifier.get("system")
    return f"{quote(system, safe=':/')}|{value}" if system else value


def _concept(concept: codes.Concept) -> dict[str, Any]:
    return {
        "coding": [{"system": concept.system, "code": concept.code, "display": concept.display}],
        "text": concept.display,
    }


def _unitless(value: float) -> dict[str, Any]:
    return {"value": round(float(value), 4), "unit": "1", "system": UCUM, "code": "1"}


def _urn(outcome: StudyOutcome, part: str) -> str:
    """A ``urn:uuid`` full URL, derived from the study result so a rebuild gives the same one."""
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{outcome.sr_sop_instance_uid}|{part}')}"
