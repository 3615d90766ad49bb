"""The sender's parsing, grouping and bounded retry policy (with a scripted association)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.dataset import Dataset

from dicom_client import scu
from dicom_client.scu import Destination, Sender, SendResult
from tests.harness.factories import DICOM_DIR
from tests.unit.dicom_node.conftest import small_cr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ORTHANC@pacs:4242", Destination("ORTHANC", "pacs", 4242)),
        ("DEEPCOVID@127.0.0.1:11112", Destination("DEEPCOVID", "127.0.0.1", 11112)),
        ("AE@[::1]:104", Destination("AE", "::1", 104)),
    ],
)
def test_destination_parses_and_prints_back(text: str, expected: Destination) -> None:
    assert Destination.parse(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    "text",
    [
        "pacs:4242",
        "AE@pacs",
        "AE@:104",
        "@pacs:104",
        "AE@pacs:0",
        "AE@pacs:x",
        "AE@pacs:70000",
        "SEVENTEEN_CHARS_AE@pacs:104",
    ],
)
def test_bad_destinations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Destination.parse(text)


class FakeAssociation:
    """Answers each C-STORE from a script of statuses (None: no response, then aborted)."""

    def __init__(
        self, script: Iterator[int | None], established: bool = True, rejected: int | None = None
    ) -> None:
        self.script = script
        self.is_established = established
        self.is_rejected = rejected is not None
        self.acceptor = SimpleNamespace(
            primitive=SimpleNamespace(result=rejected, reason_str="Calling AE title not recognised")
        )
        self.accepted_contexts: list[Any] = []
        self.rejected_contexts: list[Any] = []
        self.sent: list[Any] = []

    def send_c_store(self, payload: Any) -> Dataset:
        self.sent.append(payload)
        status = next(self.script)
        rsp = Dataset()
        if status is None:
            self.is_established = False
            return rsp
        rsp.Status = status
        if status:
            rsp.ErrorComment = "because"
        return rsp

    def release(self) -> None:
        self.is_established = False


def scripted(monkeypatch: pytest.MonkeyPatch, associations: list[FakeAssociation]) -> Sender:
    queue = iter(associations)
    monkeypatch.setattr(Sender, "_associate", lambda self, contexts: next(queue))
    return Sender(
        Destination("PACS", "127.0.0.1", 104), max_attempts=3, backoff_s=2, sleep=sleeps.append
    )


sleeps: list[float] = []


@pytest.fixture(autouse=True)
def _clear_sleeps() -> None:
    sleeps.clear()


def datasets(n: int) -> list[Dataset]:
    return [small_cr() for _ in range(n)]


def test_all_stored_in_one_association(monkeypatch: pytest.MonkeyPatch) -> None:
    assoc = FakeAssociation(iter([0x0000, 0xB000]))
    seen: list[SendResult] = []
    report = scripted(monkeypatch, [assoc]).send_datasets(datasets(2), seen.append)
    assert report.ok and len(assoc.sent) == 2 and sleeps == []
    assert [r.status for r in report.results] == [0x0000, 0xB000]
    assert report.results[1].error == "status 0xB000: because"  # a warning is kept
    assert len(seen) == 2


def test_out_of_resources_is_retried_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    first = FakeAssociation(iter([0x0000, 0xA700]))
    second = FakeAssociation(iter([0x0000]))
    report = scripted(monkeypatch, [first, second]).send_datasets(datasets(2))
    assert report.ok
    assert report.results[0].attempts == 1 and report.results[1].attempts == 2
    assert sleeps == [2]
    assert second.sent == [first.sent[1]]


def test_retries_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assocs = [FakeAssociation(iter([0xA700])) for _ in range(3)]
    seen: list[SendResult] = []
    report = scripted(monkeypatch, assocs).send_datasets(datasets(1), seen.append)
    assert not report.ok
    result = report.results[0]
    assert result.attempts == 3 and result.status == 0xA700
    assert result.error == "status 0xA700: because"
    assert sleeps == [2, 4]
    assert seen == [result]  # reported once, at the end


@pytest.mark.parametrize("status", [0x0122, 0xA900, 0xC000, 0x0117])
def test_refusals_are_not_retried(monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    report = scripted(monkeypatch, [FakeAssociation(iter([status, 0x0000]))]).send_datasets(
        datasets(2)
    )
    assert [r.ok for r in report.results] == [False, True]
    assert report.results[0].attempts == 1 and sleeps == []
    assert len(report.failed) == 1


def test_lost_association_retries_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    first = FakeAssociation(iter([0x0000, None]))
    second = FakeAssociation(iter([0x0000, 0x0000]))
    report = scripted(monkeypatch, [first, second]).send_datasets(datasets(3))
    assert report.ok
    assert len(second.sent) == 2  # the unanswered one and the one never sent


def test_permanent_rejection_is_final_transient_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = scripted(monkeypatch, [FakeAssociation(iter([]), False, rejected=1)]).send_datasets(
        datasets(1)
    )
    assert not report.ok and report.results[0].attempts == 1
    assert "rejected (permanent)" in (report.results[0].error or "")
    sleeps.clear()
    report = scripted(
        monkeypatch,
        [FakeAssociation(iter([]), False, rejected=2), FakeAssociation(iter([0x0000]))],
    ).send_datasets(datasets(1))
    assert report.ok and report.results[0].attempts == 2


def test_no_connection_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    assocs = [FakeAssociation(iter([]), established=False) for _ in range(3)]
    report = scripted(monkeypatch, assocs).send_datasets(datasets(1))
    assert not report.ok and report.results[0].attempts == 3
    assert "could not connect" in (report.results[0].error or "")


def test_files_are_sent_by_path_with_their_own_transfer_syntax(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    contexts: list[Any] = []
    assoc = FakeAssociation(iter([0] * 4))

    def associate(self: Sender, ctx: Any) -> FakeAssociation:
        contexts.extend(ctx)
        return assoc

    monkeypatch.setattr(Sender, "_associate", associate)
    not_dicom = tmp_path / "notes.txt"
    not_dicom.write_text("hello")
    files = sorted(DICOM_DIR.glob("RG1_*.dcm"))
    report = Sender(Destination("PACS", "h", 104)).send_files([*files, not_dicom])
    assert [r.ok for r in report.results] == [True, True, True, False]
    assert "not a readable DICOM file" in (report.results[3].error or "")
    assert assoc.sent == files
    assert {syntaxes for _, syntaxes in contexts} == {
        ("1.2.840.10008.1.2.4.90",),
        ("1.2.840.10008.1.2.4.91",),
        ("1.2.840.10008.1.2.1",),
    }


def test_more_than_128_contexts_are_split_over_associations() -> None:
    items = [
        scu._Item(SendResult(str(i)), Path(str(i)), (f"1.2.3.{i}", ("1.2.840.10008.1.2",)))
        for i in range(300)
    ]
    groups = scu._group_by_contexts(items)
    assert [len(g) for g in groups] == [128, 128, 44]
    assert sum(len({i.context for i in g}) for g in groups) == 300


def test_datasets_are_sent_in_their_file_meta_transfer_syntax() -> None:
    from pydicom import dcmread
    from pydicom.uid import ImplicitVRLittleEndian, RLELossless

    bare = small_cr()
    del bare.file_meta
    assert scu._prepare_encoding(bare) == ImplicitVRLittleEndian
    assert bare.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian

    ds = dcmread(DICOM_DIR / "nih_chestxray_DX_nhsx_test.dcm")  # read as implicit VR
    ds.compress(RLELossless)
    assert ds.original_encoding == (True, True)  # pynetdicom would fall back to implicit
    assert scu._prepare_encoding(ds) == RLELossless
    assert ds.original_encoding == (False, True)
