"""Patient and Study identity of a result object, copied verbatim from its source image.

Results must land in the source's study and be indistinguishable from it at the patient and
study levels, or ``dcentvfy`` (and a PACS reconciling studies) sees two patients or two
studies. highdicom's builders copy only part of this (not StudyDescription, not
IssuerOfPatientID, ...), so every builder finishes with :func:`copy_identity`.
"""

from __future__ import annotations

import copy
import functools
import re
import warnings
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from pydicom.dataset import Dataset

P = ParamSpec("P")
R = TypeVar("R")

PATIENT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDsSequence",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
)
"""Patient module attributes (PS3.3 C.7.1.1) that identify the patient."""

STUDY_KEYWORDS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
)
"""General Study (C.7.2.1) and Patient Study (C.7.2.2) attributes."""

TYPE2_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
"""Type 2 attributes every result must carry, empty when the source lacks them."""


_VALID = {"PatientAge": re.compile(r"^\d{3}[DWMY]$")}
"""Values copied only when well formed: a malformed source value would fail ``dciodvfy`` in
every result (the NIH Secondary Capture has PatientAge ``81`` instead of ``081Y``)."""


def _copyable(source: Dataset, keyword: str) -> bool:
    if keyword not in source:
        return False
    pattern = _VALID.get(keyword)
    return pattern is None or bool(pattern.match(str(source[keyword].value or "")))


def copy_identity(source: Dataset, target: Dataset) -> Dataset:
    """Make ``target``'s patient and study attributes equal to ``source``'s; returns target.

    Attributes absent from the source are removed from the target, except the Type 2 ones,
    which stay present and empty. Optional Patient Study values that are malformed in the
    source (see ``_VALID``) are left out.
    """
    if "SpecificCharacterSet" in source:
        target.SpecificCharacterSet = copy.deepcopy(source.SpecificCharacterSet)
    for keyword in PATIENT_KEYWORDS + STUDY_KEYWORDS:
        if _copyable(source, keyword):
            target[keyword] = copy.deepcopy(source[keyword])
        elif keyword in TYPE2_KEYWORDS:
            setattr(target, keyword, None)
        elif keyword in target:
            del target[keyword]
    return target


def header_only(source: Dataset) -> Dataset:
    """A copy of ``source`` without its pixel data, for metadata use by the builders.

    Type 2 patient/study attributes the source lacks are added empty, since highdicom's
    constructors read them unconditionally (the NIH Secondary Capture has no
    PatientBirthDate or AccessionNumber).
    """
    header = Dataset()
    for element in source:
        if element.tag.group == 0x7FE0 or element.keyword in {
            "FloatPixelData",
            "DoubleFloatPixelData",
        }:
            continue
        header.add(copy.deepcopy(element))
    if hasattr(source, "file_meta"):
        header.file_meta = copy.deepcopy(source.file_meta)
    for keyword in TYPE2_KEYWORDS:
        if keyword not in header:
            setattr(header, keyword, None)
    return header


def without_identifier_warnings(func: Callable[P, R]) -> Callable[P, R]:
    """Silence highdicom's person-name warnings inside a builder.

    highdicom warns about single-component names ("The string 'Doe' is unlikely to
    represent ...") and quotes the name: the source's value, which we copy verbatim anyway.
    Such a warning would put a patient name into the worker's log.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=".*unlikely to represent the intended person name"
            )
            return func(*args, **kwargs)

    return wrapper
