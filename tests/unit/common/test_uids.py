"""UID validation: what may name a spool file and what may not."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.uids import MAX_UID_LENGTH, InvalidUIDError, is_valid_uid, uid_problem, validate_uid


@pytest.mark.parametrize(
    "uid",
    [
        "1.2.840.10008.5.1.4.1.1.1",
        "1.3.6.1.4.1.5962.1.1.9.1.1.20040826185059.5457",
        "0",
        "2.25.329800735698586629295641978511506172918",
        "1." + "2" * (MAX_UID_LENGTH - 2),
        "1.2.03",  # leading zero: non-conformant but harmless, tolerated
    ],
)
def test_valid_uids_pass_unchanged(uid: str) -> None:
    assert validate_uid(uid) == uid
    assert is_valid_uid(uid)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (None, "missing"),
        ("", "empty"),
        ("1." + "2" * (MAX_UID_LENGTH - 1), "65 characters"),
        ("1.2/3", "'/' at 3"),
        ("../../etc/passwd", "'/' at 2"),
        ("1.2\\3", "'\\\\' at 3"),
        ("C:1.2", "'C' at 0"),
        ("1.2.3 ", "' ' at 5"),
        ("1.2.3\x00", "'\\x00' at 5"),
        ("1.2.\u0663", "at 4"),  # an Arabic-Indic digit: str.isdigit() would accept it
        ("1..2", "empty component"),
        (".1.2", "empty component"),
        ("1.2.", "empty component"),
        (".", "empty component"),
        ("..", "empty component"),
        (b"1.2.3", "not text"),
        (123, "not text"),
    ],
)
def test_invalid_uids_are_refused_with_the_rule(value: object, fragment: str) -> None:
    problem = uid_problem(value)
    assert problem is not None and fragment in problem
    with pytest.raises(InvalidUIDError, match="SOPInstanceUID"):
        validate_uid(value, "SOPInstanceUID")
    assert not is_valid_uid(value)


def test_error_message_does_not_repeat_the_value() -> None:
    with pytest.raises(InvalidUIDError) as info:
        validate_uid("Doe^Jane/12345", "SOPInstanceUID")
    assert "Doe" not in str(info.value) and "12345" not in str(info.value)


@given(st.text(max_size=80))
def test_anything_accepted_is_a_safe_file_name(value: str) -> None:
    if is_valid_uid(value):
        assert os.sep not in value and "/" not in value and "\\" not in value
        assert value not in {".", ".."} and not value.startswith(".")
        assert len(value) <= MAX_UID_LENGTH
        assert set(value) <= set("0123456789.")


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=8))
def test_dotted_numbers_within_64_characters_are_accepted(parts: list[int]) -> None:
    uid = ".".join(map(str, parts))
    assert is_valid_uid(uid) == (len(uid) <= MAX_UID_LENGTH)
