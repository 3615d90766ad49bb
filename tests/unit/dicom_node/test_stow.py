"""The STOW-RS body parser and response: multipart/related edge cases and PS3.18 statuses."""

from __future__ import annotations

from typing import Any

import pytest

from dicom_node.intake import IntakeResult, Status
from dicom_node.stow import Outcome, StowError, response_body, split_multipart

CT = 'multipart/related; type="application/dicom"; boundary="b-1"'


def body(*parts: bytes, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    out = preamble
    for part in parts:
        out += b"--b-1\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
    return out + b"--b-1--\r\n" + epilogue


def test_parts_come_back_byte_for_byte_with_preamble_and_epilogue() -> None:
    parts = [b"first\r\n--b-0 not a delimiter", b"", b"\x00\xff" * 100]
    found = split_multipart(CT, body(*parts, preamble=b"\r\n", epilogue=b"trailer"))
    assert [p.data for p in found] == parts


def test_a_part_without_content_type_is_application_dicom_and_headers_are_case_blind() -> None:
    raw = b"--b-1\r\ncontent-TYPE: Application/DICOM\r\n\r\nA\r\n--b-1\r\n\r\nB\r\n--b-1--"
    assert [p.data for p in split_multipart(CT, raw)] == [b"A", b"B"]


@pytest.mark.parametrize(
    ("content_type", "raw", "status", "words"),
    [
        ("application/dicom", body(b"x"), 415, "not multipart/related"),
        (
            'multipart/related; type="application/dicom+json"; boundary=b-1',
            body(b"x"),
            415,
            "+json",
        ),
        ('multipart/related; type="application/dicom"', body(b"x"), 400, "boundary"),
        (CT, body(b"x")[:-12], 400, "truncated"),
        (CT, b"--b-1\r\nContent-Type: application/dicom\r\n", 400, "headers"),
        (CT, b"no delimiter at all", 400, "start with its boundary"),
        (CT, b"--b-1--\r\n", 400, "without a part"),
        (CT, b"--b-1\r\nContent-Type: image/jpeg\r\n\r\nx\r\n--b-1--", 415, "image/jpeg"),
        (CT, b"--b-1\r\nnot a header\r\n\r\nx\r\n--b-1--", 400, "colon"),
    ],
)
def test_a_malformed_request_is_refused_with_its_reason(
    content_type: str, raw: bytes, status: int, words: str
) -> None:
    with pytest.raises(StowError) as caught:
        split_multipart(content_type, raw)
    assert caught.value.status == status and words in caught.value.reason


def _outcome(status: Status) -> Outcome:
    study = "1.2.3" if status == Status.SUCCESS else None
    return Outcome(
        IntakeResult(status, study_instance_uid=study), "1.2.840.10008.5.1.4.1.1.1", "9.9"
    )


@pytest.mark.parametrize(
    ("statuses", "http"),
    [
        ([Status.SUCCESS, Status.SUCCESS], 200),
        ([Status.SUCCESS, Status.CANNOT_UNDERSTAND], 202),
        ([Status.OUT_OF_RESOURCES], 409),
    ],
)
def test_the_http_status_says_whether_all_some_or_none_were_stored(
    statuses: list[Status], http: int
) -> None:
    code, body_json = response_body([_outcome(s) for s in statuses], "https://node/dicom-web")
    answer: dict[str, Any] = body_json
    assert code == http
    failed = answer.get("00081198", {}).get("Value", [])
    assert [f["00081197"]["Value"][0] for f in failed] == [int(s) for s in statuses if s != 0]
    stored = answer.get("00081199", {}).get("Value", [])
    assert len(stored) == statuses.count(Status.SUCCESS)
    if stored:
        assert answer["00081190"]["Value"] == ["https://node/dicom-web/studies/1.2.3"]
