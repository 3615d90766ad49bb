"""HL7 v2.5.1 ORU^R01 of a study result, built with hl7apy, and the receiver's ACK read back.

One message per study result and RIS: the patient (PID), the order it answers (ORC/OBR, matched by
the Accession Number), the study finding and how it was reached (OBX), and a "research use only"
note (NTE). A study result that replaces an earlier one (a late image changed the study) is sent
with result status ``C`` (corrected) in OBR-25 and OBX-11; a first result is ``F`` (final).

Every value taken from DICOM is set as a typed HL7 value, so hl7apy escapes the delimiters
(``|^~\\&``) a name or an identifier may contain; nothing is assembled by string concatenation.
The message control ID (MSH-10) is derived from the study result (its SR's SOP Instance UID), so a
resend after a lost ACK carries the same ID and the receiver can drop the duplicate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import ChildNotFound, HL7apyException, ValidationError
from hl7apy.factories import datatype_factory
from hl7apy.parser import parse_message, parse_segment

from ris import codes
from ris.outcome import StudyOutcome, fraction_problem

VERSION = "2.5.1"
SEGMENT_SEPARATOR = "\r"
CONTROL_ID_LENGTH = 20
"""MSH-10 is an ST of at most 20 characters in v2.5.1."""

NULL = '""'
"""HL7's explicit null: the value is not known (for required fields we cannot fill)."""
_DA = re.compile(r"\d{8}")
_SEXES = {"M": "M", "F": "F", "O": "O"}
"""DICOM Patient's Sex (M, F, O) to HL7 table 0001; anything else is ``U`` (unknown)."""


class Hl7Error(ValueError):
    """A message that cannot be built or an answer that cannot be read."""


@dataclass(frozen=True)
class Parties:
    """Who sends and who receives (MSH-3..6), and who assigned the patient identifiers."""

    sending_application: str = codes.SENDING_APPLICATION
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    assigning_authority: str = ""
    """PID-3.4: the issuer of the Patient ID (empty: the receiver's own patient identifiers)."""


@dataclass(frozen=True)
class Ack:
    """The receiver's answer: MSA-1 acknowledgment code, MSA-2 control ID, and its reason text."""

    code: str
    control_id: str
    text: str

    @property
    def accepted(self) -> bool:
        """``AA`` (original mode) or ``CA`` (enhanced mode commit accept)."""
        return self.code in {"AA", "CA"}


def control_id(outcome: StudyOutcome) -> str:
    """MSH-10 of ``outcome``'s message: the same for every resend, another for a replacement."""
    basis = f"hl7|{outcome.sr_sop_instance_uid}".encode()
    return hashlib.sha256(basis).hexdigest()[:CONTROL_ID_LENGTH].upper()


def result_status(outcome: StudyOutcome) -> str:
    """``C`` (corrected) for a result that replaces an earlier one of the study, else ``F``."""
    return "C" if outcome.replaces_sr_sop_instance_uid else "F"


def build_oru(outcome: StudyOutcome, *, message_control_id: str, parties: Parties) -> str:
    """The ORU^R01 message of ``outcome`` in ER7 (segments separated by carriage returns)."""
    if outcome.finding not in codes.FINDING_VALUES:
        raise Hl7Error(f"unknown study finding {outcome.finding!r}")
    problem = fraction_problem(outcome)
    if problem:
        raise Hl7Error(problem)
    try:
        msg = _oru(outcome, message_control_id, parties)
        if not msg.validate():
            raise Hl7Error("the ORU^R01 message does not validate")
        return str(msg.to_er7())
    except HL7apyException as exc:
        # hl7apy's messages may quote the offending value (a patient's name): only the kind of
        # problem goes on, and the structural ones that name a segment or field, not a value.
        detail = f": {exc}" if isinstance(exc, (ValidationError, ChildNotFound)) else ""
        why = f"{type(exc).__name__}{detail}"
        raise Hl7Error(f"the ORU^R01 message cannot be built: {why}") from None


def _oru(outcome: StudyOutcome, message_control_id: str, parties: Parties) -> Message:
    """The message, segment by segment (hl7apy checks each value as it is set)."""
    msg = Message("ORU_R01", version=VERSION, validation_level=VALIDATION_LEVEL.STRICT)
    _msh(msg, outcome, message_control_id, parties)
    result = msg.add_group("ORU_R01_PATIENT_RESULT")
    _pid(result.add_group("ORU_R01_PATIENT").pid, outcome, parties)
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    status = result_status(outcome)
    _orc_obr(order, outcome, status)
    note = order.add_segment("NTE")
    note.nte_1 = "1"
    _put(note.nte_3, codes.RESEARCH_USE_ONLY)
    for set_id, (value_type, concept, value) in enumerate(_observations(outcome), start=1):
        obx = order.add_group("ORU_R01_OBSERVATION").obx
        obx.obx_1 = str(set_id)
        obx.obx_2 = value_type
        obx.obx_3 = _coded(concept)
        if isinstance(value, codes.Concept):
            obx.obx_5 = _coded(value)
        elif value_type == "NM":
            obx.obx_5 = value
        else:
            obx.obx_5 = _escaped(value)  # OBX-5's type varies: hl7apy takes it as ER7 only
        obx.obx_11 = status
        obx.obx_14 = _timestamp(outcome.issued)
    return msg


def parse_oru(er7: str) -> Message:
    """Parse an ORU^R01 message (strictly); raises :class:`Hl7Error` when it is not one."""
    try:
        msg = parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    except HL7apyException as exc:
        raise Hl7Error(f"not an HL7 v2 message: {exc}") from exc
    if msg.name != "ORU_R01" or msg.msh.msh_9.to_er7() not in {"ORU^R01", "ORU^R01^ORU_R01"}:
        raise Hl7Error(f"not an ORU^R01 message: {msg.msh.msh_9.to_er7()}")
    return msg


def message_control_id(er7: str) -> str:
    """MSH-10 of a message, read from its MSH segment alone (the rest is the receiver's)."""
    first = er7.split(SEGMENT_SEPARATOR, 1)[0]
    if not first.startswith("MSH"):
        raise Hl7Error("the message does not start with an MSH segment")
    try:
        msh = parse_segment(first, version=VERSION, validation_level=VALIDATION_LEVEL.TOLERANT)
        control = str(msh.msh_10.to_er7())
    except HL7apyException as exc:
        raise Hl7Error(f"unreadable MSH segment: {exc}") from exc
    if not control:
        raise Hl7Error("the message has no MSH-10 control ID")
    return control


def parse_ack(er7: str) -> Ack:
    """Read an ACK's MSA (code, control ID) and its reason (MSA-3, else ERR-8 / ERR-3)."""
    try:
        msg = parse_message(er7, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
        msa = msg.msa
        code = msa.msa_1.to_er7()
        acked = msa.msa_2.to_er7()
        text = msa.msa_3.to_er7() if msa.msa_3.children else ""
        if not text:
            for err in msg.children.get("ERR") or []:
                text = err.err_8.to_er7() or err.err_3.to_er7()
                if text:
                    break
    except (HL7apyException, AttributeError, IndexError) as exc:
        raise Hl7Error(f"the answer is not an HL7 ACK: {exc}") from exc
    if not code:
        raise Hl7Error("the ACK has no MSA-1 acknowledgment code")
    return Ack(code=code, control_id=acked, text=text)


def _msh(msg: Message, outcome: StudyOutcome, control: str, parties: Parties) -> None:
    msh = msg.msh
    _put(msh.msh_3.hd_1, parties.sending_application)
    if parties.sending_facility:
        _put(msh.msh_4.hd_1, parties.sending_facility)
    if parties.receiving_application:
        _put(msh.msh_5.hd_1, parties.receiving_application)
    if parties.receiving_facility:
        _put(msh.msh_6.hd_1, parties.receiving_facility)
    msh.msh_7 = _timestamp(outcome.issued)
    msh.msh_9 = "ORU^R01^ORU_R01"
    _put(msh.msh_10, control)
    msh.msh_11 = "P"
    msh.msh_12 = VERSION
    msh.msh_18 = "UNICODE UTF-8"


def _pid(pid: object, outcome: StudyOutcome, parties: Parties) -> None:
    pid.pid_1 = "1"  # type: ignore[attr-defined]
    # PID-3 and PID-5 are required: an unknown one is sent as the HL7 null ``""``.
    if not outcome.patient_id:
        pid.pid_3 = NULL  # type: ignore[attr-defined]
    else:
        _put(pid.pid_3.cx_1, outcome.patient_id)  # type: ignore[attr-defined]
        if parties.assigning_authority:
            _put(pid.pid_3.cx_4.hd_1, parties.assigning_authority)  # type: ignore[attr-defined]
        pid.pid_3.cx_5 = "MR"  # type: ignore[attr-defined]  # identifier type: medical record number
    if not outcome.patient_name or not outcome.patient_name.split("=")[0].strip("^ "):
        pid.pid_5 = NULL  # type: ignore[attr-defined]
    else:
        # DICOM PN: family^given^middle^prefix^suffix (first, alphabetic group);
        # HL7 XPN: family^given^further given^suffix^prefix.
        parts = (outcome.patient_name.split("=")[0].split("^") + [""] * 5)[:5]
        family, given, middle, prefix, suffix = parts
        xpn = pid.pid_5  # type: ignore[attr-defined]
        components = (
            (xpn.xpn_1.fn_1, family),
            (xpn.xpn_2, given),
            (xpn.xpn_3, middle),
            (xpn.xpn_4, suffix),
            (xpn.xpn_5, prefix),
        )
        for component, value in components:
            if value:
                _put(component, value)
    if outcome.patient_birth_date and _DA.fullmatch(outcome.patient_birth_date):
        pid.pid_7 = outcome.patient_birth_date  # type: ignore[attr-defined]
    pid.pid_8 = _SEXES.get((outcome.patient_sex or "").strip().upper(), "U")  # type: ignore[attr-defined]


def _orc_obr(order: object, outcome: StudyOutcome, status: str) -> None:
    orc = order.orc  # type: ignore[attr-defined]
    obr = order.obr  # type: ignore[attr-defined]
    orc.orc_1 = "RE"  # observations to follow
    obr.obr_1 = "1"
    if outcome.accession_number:
        _put(orc.orc_3.ei_1, outcome.accession_number)
        _put(obr.obr_3.ei_1, outcome.accession_number)
        _put(obr.obr_18, outcome.accession_number)  # placer field 1: IHE's Accession Number
    obr.obr_4 = _coded(codes.REPORT)
    obr.obr_7 = _timestamp(outcome.issued)
    obr.obr_22 = _timestamp(outcome.issued)
    obr.obr_24 = "RAD"
    obr.obr_25 = status


def _observations(
    outcome: StudyOutcome,
) -> list[tuple[str, codes.Concept, codes.Concept | str]]:
    """(value type, OBX-3, OBX-5) of each observation, in order."""
    rows: list[tuple[str, codes.Concept, codes.Concept | str]] = [
        ("CWE", codes.COVID19, codes.FINDING_VALUES[outcome.finding]),
    ]
    if outcome.probability is not None:
        rows.append(("NM", codes.PROBABILITY, _number(outcome.probability)))
    if outcome.threshold is not None:
        rows.append(("NM", codes.THRESHOLD, _number(outcome.threshold)))
    if outcome.operating_point:
        rows.append(("ST", codes.OPERATING_POINT, outcome.operating_point))
    rows.append(("ST", codes.ALGORITHM_VERSION, outcome.model_version))
    rows.append(("ST", codes.STUDY_INSTANCE_UID, outcome.study_instance_uid))
    return rows


def _coded(concept: codes.Concept) -> str:
    """A CWE ``code^text^system``; our concepts hold no HL7 delimiters (checked by a test)."""
    return f"{concept.code}^{concept.display}^{concept.scheme}"


def _put(element: object, value: str) -> None:
    """Set ``element`` to ``value`` as a typed HL7 value, so hl7apy escapes its delimiters
    (a string assigned directly would be parsed as ER7, ``^`` splitting it into components)."""
    datatype = element.datatype  # type: ignore[attr-defined]
    element.value = datatype_factory(datatype, value, version=VERSION)  # type: ignore[attr-defined]


def _escaped(value: str) -> str:
    """``value`` as escaped ER7 text (hl7apy's ST escaping), for a field of varying type."""
    return str(datatype_factory("ST", value, version=VERSION).to_er7())


def _number(value: float) -> str:
    """An NM: plain decimal, four places (the model's probabilities carry no more)."""
    return f"{value:.4f}"


def _timestamp(when: dt.datetime) -> str:
    """A TS/DTM in UTC with its offset (``YYYYMMDDHHMMSS+0000``)."""
    if when.tzinfo is None:
        raise Hl7Error("the study result's time has no time zone")
    return when.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S+0000")
