"""Validation of DICOM UIDs received from the network.

A UID received in a C-STORE request or dataset is untrusted text. Before it names a file in the
spool or a row in the job store it must be a UID by the rules of PS3.5 §9.1 as far as they matter
for safety: only the characters ``0``-``9`` and ``.``, at most 64 characters, no empty component
(so no leading, trailing or doubled dot, and never ``.`` or ``..``). Such a string cannot contain a
path separator, a drive letter, whitespace or a control character, so it is safe as a file name.

Leading zeros in a component are tolerated in what we *receive*: the standard forbids them, but
archives hold such UIDs and refusing them would lose real studies while adding no safety. What we
*write* must follow the standard to the letter: ``strict=True`` refuses them too.
"""

from __future__ import annotations

import re

MAX_UID_LENGTH = 64
"""Longest UID allowed by PS3.5 §9.1."""

_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")


class InvalidUIDError(ValueError):
    """A string that is not a safe DICOM UID; the message says which rule it breaks.

    The message never repeats the offending value itself (it may hold anything a sender put
    there, patient data included); it names the attribute, the rule broken and at most the
    first offending character with its position.
    """


def uid_problem(value: object, *, strict: bool = False) -> str | None:
    """Why ``value`` is not a valid UID, or ``None`` when it is one.

    ``strict``: also refuse a component with a leading zero (``1.02``), as PS3.5 §9.1 does; use it
    for UIDs we create.

    Trailing NUL and space padding (how UIDs are padded to even length on the wire) are not
    stripped here: pydicom strips them when decoding, so a value that still carries them is bad.
    """
    if value is None:
        return "missing"
    if not isinstance(value, str):
        return f"not text (a {type(value).__name__})"
    if not value:
        return "empty"
    if len(value) > MAX_UID_LENGTH:
        return f"{len(value)} characters long, more than {MAX_UID_LENGTH}"
    for position, char in enumerate(value):
        if char not in "0123456789.":
            return f"has invalid character {char!r} at {position}"
    if not _UID_RE.fullmatch(value):
        return "has an empty component (leading, trailing or doubled '.')"
    if strict and any(len(c) > 1 and c[0] == "0" for c in value.split(".")):
        return "has a component with a leading zero"
    return None


def validate_uid(value: object, attribute: str = "UID") -> str:
    """Return ``value`` unchanged when it is a valid UID, else raise :class:`InvalidUIDError`.

    ``attribute`` names the element in the error message, e.g. ``"SOPInstanceUID"``.
    """
    problem = uid_problem(value)
    if problem is not None:
        raise InvalidUIDError(f"{attribute} {problem}")
    assert isinstance(value, str)
    return value


def is_valid_uid(value: object, *, strict: bool = False) -> bool:
    """Whether ``value`` is a valid UID (see :func:`uid_problem` for ``strict``)."""
    return uid_problem(value, strict=strict) is None
