"""The C-STORE decision sequence: each outcome, its status, and nothing half-kept."""

from __future__ import annotations

import hashlib
import logging
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import sop_class

from dicom_node.intake import Intake, IntakeResult, Status
from dicom_node.spool import Spool
from tests.unit.dicom_node.conftest import FakeStore, encode, small_cr

CR = sop_class.ComputedRadiographyImageStorage
SECRETS = ("Doe", "Jane", "PID-SECRET-77")


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    s = Spool(tmp_path / "spool")
    s.ensure()
    return s


@pytest.fixture
def intake(spool: Spool, store: FakeStore) -> Intake:
    return Intake(spool, store)


def receive(
    intake: Intake,
    ds,
    *,
    syntax: str = ExplicitVRLittleEndian,
    data: bytes | None = None,
    sop_class_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> IntakeResult:
    return intake.receive(
        sop_class_uid=sop_class_uid or str(ds.SOPClassUID),
        sop_instance_uid=sop_instance_uid or str(ds.SOPInstanceUID),
        transfer_syntax_uid=syntax,
        calling_ae="MODALITY",
        dataset=encode(ds, syntax) if data is None else data,
    )


def spooled(spool: Spool) -> list[str]:
    return sorted(p.name for p in spool.root.iterdir())


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_success_spools_the_instance_and_records_the_job(
    intake: Intake, spool: Spool, store: FakeStore, syntax: str
) -> None:
    ds = small_cr()
    result = receive(intake, ds, syntax=syntax)
    assert result.status == Status.SUCCESS and result.ok
    assert result.job_id == 1 and result.needs_analysis
    path = spool.root / f"{ds.SOPInstanceUID}.dcm"
    assert spooled(spool) == [path.name]
    row = store.rows[ds.SOPInstanceUID]
    assert row["sop_class_uid"] == CR
    assert row["study_instance_uid"] == ds.StudyInstanceUID
    assert row["series_instance_uid"] == ds.SeriesInstanceUID
    assert row["transfer_syntax_uid"] == syntax
    assert row["calling_ae"] == "MODALITY"
    assert row["spool_path"] == str(path)
    assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert row["size_bytes"] == path.stat().st_size
    back = dcmread(path)
    assert back == ds
    assert back.file_meta.TransferSyntaxUID == syntax
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_deflated_datasets_are_accepted(intake: Intake, spool: Spool) -> None:
    ds = small_cr()
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = compressor.compress(encode(ds)) + compressor.flush()
    result = receive(intake, ds, syntax=DeflatedExplicitVRLittleEndian, data=data)
    assert result.ok, result.reason
    assert dcmread(spool.root / f"{ds.SOPInstanceUID}.dcm") == ds


def test_resending_identical_bytes_gives_the_same_hash(intake: Intake, store: FakeStore) -> None:
    ds = small_cr()
    receive(intake, ds)
    first = store.rows[ds.SOPInstanceUID]["sha256"]
    result = receive(intake, ds)
    assert result.ok and not result.needs_analysis
    assert store.rows[ds.SOPInstanceUID]["sha256"] == first


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI", "ignore:The value length")
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("sr", Status.SOP_CLASS_NOT_SUPPORTED),
        ("unknown class", Status.SOP_CLASS_NOT_SUPPORTED),
        ("no SOP Instance UID", Status.DATASET_DOES_NOT_MATCH),
        ("path characters in the dataset", Status.DATASET_DOES_NOT_MATCH),
        ("path characters in the request", Status.DATASET_DOES_NOT_MATCH),
        ("UID too long", Status.DATASET_DOES_NOT_MATCH),
        ("request and dataset differ", Status.DATASET_DOES_NOT_MATCH),
        ("class differs", Status.DATASET_DOES_NOT_MATCH),
        ("no Study Instance UID", Status.DATASET_DOES_NOT_MATCH),
        ("value past the end", Status.CANNOT_UNDERSTAND),
        ("garbage", Status.CANNOT_UNDERSTAND),
        ("bad deflate", Status.CANNOT_UNDERSTAND),
    ],
)
def test_bad_input_gets_its_status_and_leaves_nothing(
    intake: Intake,
    spool: Spool,
    store: FakeStore,
    case: str,
    expected: Status,
    caplog: pytest.LogCaptureFixture,
) -> None:
    uid = generate_uid()
    kwargs: dict[str, object] = {}
    ds = small_cr(SOPInstanceUID=uid)
    if case == "sr":
        ds.SOPClassUID = sop_class.ComprehensiveSRStorage
    elif case == "unknown class":
        ds.SOPClassUID = "1.2.3.4.5"
    elif case == "no SOP Instance UID":
        del ds.SOPInstanceUID
        kwargs["sop_instance_uid"] = uid
    elif case == "path characters in the dataset":
        ds.SOPInstanceUID = "1.2.3/../../evil"
        kwargs["sop_instance_uid"] = uid
    elif case == "path characters in the request":
        kwargs["sop_instance_uid"] = "../../evil"
    elif case == "UID too long":
        ds.SOPInstanceUID = "1." + "2" * 70
    elif case == "request and dataset differ":
        kwargs["sop_instance_uid"] = generate_uid()
    elif case == "class differs":
        kwargs["sop_class_uid"] = sop_class.DigitalXRayImageStorageForPresentation
    elif case == "no Study Instance UID":
        del ds.StudyInstanceUID
    elif case == "value past the end":
        kwargs["data"] = encode(ds)[:-7]
    elif case == "garbage":
        kwargs["data"] = b"\x08\x00\x18\x00UI\x40\x001.2"
    elif case == "bad deflate":
        kwargs["data"] = b"not deflated at all"
        kwargs["syntax"] = DeflatedExplicitVRLittleEndian
    data = kwargs.pop("data", None) or encode(ds, str(kwargs.get("syntax", ExplicitVRLittleEndian)))
    caplog.clear()  # building the bad dataset above made pydicom warn; only intake counts
    with caplog.at_level(logging.DEBUG):
        result = receive(intake, ds, data=data, **kwargs)  # type: ignore[arg-type]
    assert result.status == expected, result.reason
    assert result.reason and len(result.error_comment) <= 64
    assert spooled(spool) == []
    assert store.rows == {}
    assert f"0x{int(expected):04X}" in caplog.text
    assert "evil" not in caplog.text
    for secret in SECRETS:
        assert secret not in caplog.text


def test_missing_uid_names_the_offending_element(intake: Intake) -> None:
    ds = small_cr()
    uid = ds.SOPInstanceUID
    del ds.SOPInstanceUID
    result = receive(intake, ds, sop_instance_uid=uid)
    assert result.offending_elements == (0x00080018,)


def test_below_the_free_space_watermark_answers_out_of_resources(
    tmp_path: Path, store: FakeStore
) -> None:
    spool = Spool(
        tmp_path / "spool",
        min_free_bytes=10 * 2**20,
        disk_usage=lambda _p: (0, 0, 10 * 2**20 + 100),
    )
    spool.ensure()
    result = receive(Intake(spool, store), small_cr())
    assert result.status == Status.OUT_OF_RESOURCES
    assert "watermark" in result.reason
    assert spooled(spool) == [] and store.rows == {}


def test_unwritable_spool_answers_out_of_resources(tmp_path: Path, store: FakeStore) -> None:
    blocker = tmp_path / "spool"
    blocker.write_bytes(b"")  # the spool path is a file: every write fails
    result = receive(Intake(Spool(blocker), store), small_cr())
    assert result.status == Status.OUT_OF_RESOURCES
    assert store.rows == {}


def test_database_failure_rolls_the_file_back(
    intake: Intake, spool: Spool, store: FakeStore
) -> None:
    store.fail_with = RuntimeError("database is locked")
    result = receive(intake, small_cr())
    assert result.status == Status.OUT_OF_RESOURCES
    assert "job store" in result.reason
    assert spooled(spool) == []


def test_database_failure_on_a_resend_keeps_the_first_copy(
    intake: Intake, spool: Spool, store: FakeStore
) -> None:
    ds = small_cr()
    assert receive(intake, ds).ok
    path = spool.root / f"{ds.SOPInstanceUID}.dcm"
    before = path.read_bytes()
    ds.SeriesDescription = "changed content"
    store.fail_with = RuntimeError("database is locked")
    assert receive(intake, ds).status == Status.OUT_OF_RESOURCES
    assert path.read_bytes() == before
    assert spooled(spool) == [path.name]


@pytest.mark.parametrize(
    ("value", "recorded"),
    [("ACC0001", "ACC0001"), ("  A-17 ", "A-17"), ("", None), (None, None), ("X\x01Y", "XY")],
)
def test_the_accession_number_is_recorded_as_printable_text(
    intake: Intake, store: FakeStore, value: str | None, recorded: str | None
) -> None:
    ds = small_cr(AccessionNumber=value)
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        data = None
        if syntax == DeflatedExplicitVRLittleEndian:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
            data = compressor.compress(encode(ds)) + compressor.flush()
        result = receive(intake, ds, syntax=syntax, data=data)
        assert result.ok, result.reason
        assert store.rows[str(ds.SOPInstanceUID)]["accession_number"] == recorded
