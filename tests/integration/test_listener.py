"""The DICOM listener on loopback, with a real SQLite job store and a recording enqueue.

Clients: dcmtk ``echoscu``/``storescu`` for the ordinary traffic, pynetdicom for crafted bad
input, and our own sender (``dicom_client.scu`` and ``deepcovid send``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, _config, sop_class

from common.settings import Settings
from dicom_client.scu import send_datasets, send_files
from dicom_node.scp import Listener, start_server
from store import JobStore
from store.migrate import upgrade
from tests.harness.factories import DICOM_DIR
from tests.harness.net import REPO, wait_for

ALLOWED = ["STORESCU", "ECHOSCU", "TESTSCU"]
FILES = sorted(DICOM_DIR.glob("*.dcm"))
PATIENT_SECRETS = ("CompressedSamples", "9RG1", "19400305", "Covid0000")


@dataclass
class Node:
    """A running listener and what it writes to."""

    listener: Listener
    store: JobStore
    spool: Path
    db_path: Path
    enqueued: list[int] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.listener.address[1]

    def spooled(self) -> list[str]:
        """Every name in the spool folder, hidden temporary files included."""
        return sorted(os.listdir(self.spool))

    def jobs(self) -> int:
        return sum(self.store.counts().values())


def make_node(tmp_path: Path, **overrides: object) -> Iterator[Node]:
    db_path = tmp_path / "jobs.sqlite"
    url = f"sqlite:///{db_path}"
    upgrade(url)
    store = JobStore(url)
    fields: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "bind_address": "127.0.0.1",
        "port": 0,
        "allowed_calling_aes": ALLOWED,
        "min_free_space_mb": 1,
        "database_url": url,
    }
    settings = Settings(**{**fields, **overrides})  # type: ignore[arg-type]
    enqueued: list[int] = []
    lock = threading.Lock()

    def enqueue(job_id: int) -> None:
        with lock:
            enqueued.append(job_id)

    listener = start_server(settings, store=store, enqueue=enqueue)
    try:
        yield Node(listener, store, settings.storage.spool, db_path, enqueued)
    finally:
        listener.shutdown()
        store.engine.dispose()


started_node = contextlib.contextmanager(make_node)
"""``with started_node(tmp_path, **setting_overrides) as node:`` for tests needing settings."""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    yield from make_node(tmp_path)


def storescu(port: int, files: list[Path], *options: str, aet: str = "STORESCU"):  # type: ignore[no-untyped-def]
    assert shutil.which("storescu"), "dcmtk is not installed (apt-get install -y dcmtk)"
    return subprocess.run(
        [
            "storescu",
            "-R",
            "-aet",
            aet,
            "-aec",
            "DEEPCOVID",
            *options,
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def send_all_with_storescu(port: int) -> None:
    """Each file with the transfer syntax it is stored in (storescu proposes one family)."""
    by_name = {f.name: f for f in FILES}
    for options, names in (
        (("-xv",), ["RG1_J2KR.dcm"]),
        (("-xw",), ["RG1_J2KI.dcm"]),
        ((), ["RG1_UNCR.dcm", "nih_chestxray_DX_nhsx_test.dcm"]),
    ):
        result = storescu(port, [by_name[n] for n in names], *options)
        assert result.returncode == 0, result.stderr


def same_dataset(sent: Dataset, received: Dataset) -> bool:
    """Dataset equality, ignoring trailing padding (FFFC,FFFC): dcmtk drops it when sending."""
    for ds in (sent, received):
        if (0xFFFC, 0xFFFC) in ds:
            del ds[0xFFFC, 0xFFFC]
    return sent == received


def pynetdicom_store(
    port: int, payload: Dataset | Path, sop_class_uid: str, calling_ae: str = "TESTSCU"
) -> int:
    """C-STORE one crafted dataset (or file, sent unparsed) with pynetdicom; the status."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(sop_class_uid)
    assoc = ae.associate("127.0.0.1", port, ae_title="DEEPCOVID")
    assert assoc.is_established
    try:
        rsp = assoc.send_c_store(payload)
    finally:
        assoc.release()
    return int(rsp.Status)


def cr_copy(**changes: object) -> Dataset:
    """The NIH Secondary Capture with fresh UIDs and ``changes`` applied (None deletes)."""
    ds = dcmread(DICOM_DIR / "nih_chestxray_DX_nhsx_test.dcm")
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def crafted_file(tmp_path: Path, ds: Dataset, meta_uid: str) -> Path:
    """A Part 10 file whose file meta names ``meta_uid`` whatever the dataset holds.

    Sent by path (unparsed), pynetdicom takes the request's Affected SOP Instance UID from the
    file meta, so the dataset itself can lack or mangle its SOP Instance UID.
    """
    ds.file_meta.MediaStorageSOPInstanceUID = meta_uid
    path = tmp_path / f"crafted-{generate_uid()}.dcm"
    ds.save_as(path, enforce_file_format=False)
    return path


# --- dcmtk clients ------------------------------------------------------------------------
def test_echoscu_gets_success(node: Node) -> None:
    result = subprocess.run(
        ["echoscu", "-aet", "ECHOSCU", "-aec", "DEEPCOVID", "127.0.0.1", str(node.port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_storescu_files_arrive_spooled_and_equal(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        send_all_with_storescu(node.port)
    assert node.jobs() == len(FILES)
    for path in FILES:
        sent = dcmread(path)
        job = node.store.get_by_uid(sent.SOPInstanceUID)
        assert job is not None and job.state == "received"
        spooled = Path(job.spool_path)
        assert spooled == node.spool / f"{sent.SOPInstanceUID}.dcm"
        assert oct(spooled.stat().st_mode & 0o777) == oct(0o600)
        received = dcmread(spooled)
        assert job.transfer_syntax_uid == sent.file_meta.TransferSyntaxUID
        assert received.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert job.calling_ae == "STORESCU"
        assert job.study_instance_uid == sent.StudyInstanceUID
        assert job.size_bytes == spooled.stat().st_size
        assert same_dataset(sent, received), path.name
    assert sorted(node.spooled()) == sorted(f"{dcmread(p).SOPInstanceUID}.dcm" for p in FILES)
    wait_for(lambda: len(node.enqueued) == len(FILES), timeout=30, what="enqueues")
    assert sorted(node.enqueued) == sorted(j.id for j in node.store.list())
    for secret in PATIENT_SECRETS:
        assert secret not in caplog.text


def test_resending_is_idempotent(node: Node) -> None:
    send_all_with_storescu(node.port)
    send_all_with_storescu(node.port)
    assert node.jobs() == len(FILES)
    assert all(j.times_received == 2 for j in node.store.list())
    assert len(node.spooled()) == len(FILES)


def test_calling_ae_not_allowed_is_rejected_and_nothing_stored(node: Node) -> None:
    result = storescu(node.port, FILES[-1:], aet="INTRUDER")
    assert result.returncode != 0
    assert "Association Rejected" in result.stderr
    echo = subprocess.run(
        ["echoscu", "-aet", "INTRUDER", "-aec", "DEEPCOVID", "127.0.0.1", str(node.port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert echo.returncode != 0
    assert node.spooled() == [] and node.jobs() == 0


def test_wrong_called_ae_is_rejected(node: Node) -> None:
    result = subprocess.run(
        ["echoscu", "-aet", "ECHOSCU", "-aec", "SOMEONE", "127.0.0.1", str(node.port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_transfer_syntaxes_arrive_as_sent(node: Node, syntax: str) -> None:
    ds = cr_copy()
    ds.compress(syntax)
    assert send_datasets([ds], "DEEPCOVID", "127.0.0.1", node.port, calling_ae="TESTSCU").ok
    job = node.store.get_by_uid(ds.SOPInstanceUID)
    assert job is not None and job.transfer_syntax_uid == syntax
    received = dcmread(job.spool_path)
    assert received.file_meta.TransferSyntaxUID == syntax
    assert received.PixelData == ds.PixelData


def test_deflated_transfer_arrives_and_reads_back_equal(node: Node, tmp_path: Path) -> None:
    path = FILES[-1]  # the NIH Secondary Capture, implicit VR little endian on disk
    result = storescu(node.port, [path], "-xd")
    assert result.returncode == 0, result.stderr
    sent = dcmread(path)
    job = node.store.get_by_uid(sent.SOPInstanceUID)
    assert job is not None and job.transfer_syntax_uid == DeflatedExplicitVRLittleEndian
    assert same_dataset(sent, dcmread(job.spool_path))


def test_maximum_associations_is_enforced(tmp_path: Path) -> None:
    with started_node(tmp_path, max_associations=1) as node:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(sop_class.Verification)
        first = ae.associate("127.0.0.1", node.port, ae_title="DEEPCOVID")
        assert first.is_established

        def free_the_slot(_seconds: float) -> None:
            """The sender's back-off: release the first association, then wait until the node's
            thread for it has ended (the release answer is sent before the thread exits, and a
            retry that arrives in between is still over the limit)."""
            first.release()
            wait_for(
                lambda: not node.listener.server.active_associations,
                timeout=10,
                interval=0.01,
                what="the released association's thread to end",
            )

        try:
            second = ae.associate("127.0.0.1", node.port, ae_title="DEEPCOVID")
            assert second.is_rejected  # transient: "local limit exceeded"
            report = send_datasets(
                [cr_copy()],
                "DEEPCOVID",
                "127.0.0.1",
                node.port,
                calling_ae="TESTSCU",
                max_attempts=2,
                sleep=free_the_slot,  # frees the slot, then retry
            )
        finally:
            if first.is_established:
                first.release()
        assert report.ok and report.results[0].attempts == 2


# --- bad input ------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("SR", 0x0122),
        ("no SOP Instance UID", 0xA900),
        ("path characters in the dataset's SOP Instance UID", 0xA900),
        ("path characters in the request's SOP Instance UID", 0xA900),
        ("no Study Instance UID", 0xA900),
        ("value length past the end", 0xC000),
    ],
)
def test_bad_input_gets_its_status_and_leaves_nothing(
    node: Node, tmp_path: Path, case: str, expected: int
) -> None:
    sc = sop_class.SecondaryCaptureImageStorage
    good_uid = generate_uid()
    if case == "SR":
        ds = cr_copy(SOPClassUID=sop_class.ComprehensiveSRStorage)
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        status = pynetdicom_store(node.port, ds, sop_class.ComprehensiveSRStorage)
    elif case == "no SOP Instance UID":
        path = crafted_file(tmp_path, cr_copy(SOPInstanceUID=None), good_uid)
        status = pynetdicom_store(node.port, path, sc)
    elif case == "path characters in the dataset's SOP Instance UID":
        path = crafted_file(tmp_path, cr_copy(SOPInstanceUID="1.2.3/../../../tmp/x"), good_uid)
        status = pynetdicom_store(node.port, path, sc)
    elif case == "path characters in the request's SOP Instance UID":
        ds = cr_copy()
        ds.SOPInstanceUID = "../../1.2.3"
        status = pynetdicom_store(node.port, ds, sc)
    elif case == "no Study Instance UID":
        status = pynetdicom_store(node.port, cr_copy(StudyInstanceUID=None), sc)
    else:
        ds = cr_copy()
        path = crafted_file(tmp_path, ds, ds.SOPInstanceUID)
        data = path.read_bytes()
        path.write_bytes(data[:-1000])  # Pixel Data declares 1000 bytes more than follow
        status = pynetdicom_store(node.port, path, sc)
    assert status == expected
    assert node.spooled() == []
    assert node.jobs() == 0
    # the listener keeps serving
    assert pynetdicom_store(node.port, cr_copy(), sc) == 0x0000


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Makes a folder unwritable even for root (chmod, then the immutable attribute)."""
    made: list[Path] = []

    def make(folder: Path) -> None:
        folder.chmod(0o500)
        made.append(folder)
        probe = folder / ".probe"
        try:
            probe.write_bytes(b"")
        except OSError:
            return
        probe.unlink()
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a folder unwritable here (root without chattr)")

    yield make
    for folder in made:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o700)


def test_unwritable_spool_answers_out_of_resources(
    node: Node,
    unwritable: Callable[[Path], None],
) -> None:
    unwritable(node.spool)
    ds = cr_copy()
    assert pynetdicom_store(node.port, ds, ds.SOPClassUID) == 0xA700
    assert node.spooled() == [] and node.jobs() == 0


def test_database_failure_answers_out_of_resources_and_keeps_no_file(node: Node) -> None:
    with sqlite3.connect(node.db_path) as conn:  # a real failure: the table is gone
        conn.execute("ALTER TABLE jobs RENAME TO jobs_away")
    ds = cr_copy()
    assert pynetdicom_store(node.port, ds, ds.SOPClassUID) == 0xA700
    assert node.spooled() == []
    with sqlite3.connect(node.db_path) as conn:
        conn.execute("ALTER TABLE jobs_away RENAME TO jobs")
    assert pynetdicom_store(node.port, ds, ds.SOPClassUID) == 0x0000
    assert node.spooled() == [f"{ds.SOPInstanceUID}.dcm"]


def test_below_the_free_space_watermark_answers_out_of_resources(tmp_path: Path) -> None:
    free_mb = shutil.disk_usage(tmp_path).free // 2**20
    with started_node(tmp_path, min_free_space_mb=free_mb + 1024) as node:
        ds = cr_copy()
        assert pynetdicom_store(node.port, ds, ds.SOPClassUID) == 0xA700
        assert node.spooled() == [] and node.jobs() == 0


# --- our own sender -------------------------------------------------------------------------
def test_our_sender_delivers_files_and_datasets(node: Node) -> None:
    report = send_files(FILES, "DEEPCOVID", "127.0.0.1", node.port, calling_ae="TESTSCU")
    assert report.ok, report.failed
    ds = cr_copy()
    assert send_datasets([ds], "DEEPCOVID", "127.0.0.1", node.port, calling_ae="TESTSCU").ok
    assert node.jobs() == len(FILES) + 1
    for path in FILES:
        sent = dcmread(path)
        assert same_dataset(sent, dcmread(node.spool / f"{sent.SOPInstanceUID}.dcm"))


def test_our_sender_reports_refusals_without_retrying(node: Node) -> None:
    sr = cr_copy(SOPClassUID=sop_class.ComprehensiveSRStorage)
    report = send_datasets(
        [sr],
        "DEEPCOVID",
        "127.0.0.1",
        node.port,
        calling_ae="TESTSCU",
        max_attempts=3,
        sleep=lambda _s: None,
    )
    result = report.results[0]
    assert result.status == 0x0122 and result.attempts == 1
    assert "SOP class not accepted" in (result.error or "")
    rejected = send_files(FILES[:1], "DEEPCOVID", "127.0.0.1", node.port, calling_ae="INTRUDER")
    assert not rejected.ok and "rejected (permanent)" in (rejected.results[0].error or "")


def test_concurrent_senders_of_one_instance_make_one_job(node: Node) -> None:
    ds = cr_copy()
    reports: list[bool] = []

    def send() -> None:
        reports.append(
            send_datasets([ds], "DEEPCOVID", "127.0.0.1", node.port, calling_ae="TESTSCU").ok
        )

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert reports == [True] * 4
    assert node.jobs() == 1
    assert node.spooled() == [f"{ds.SOPInstanceUID}.dcm"]
    assert node.store.get_by_uid(ds.SOPInstanceUID).times_received == 4  # type: ignore[union-attr]


def test_send_command_exit_status(node: Node, tmp_path: Path) -> None:
    folder = tmp_path / "outbox"
    folder.mkdir()
    for path in FILES:
        shutil.copy(path, folder / path.name)
    command = [
        sys.executable,
        "-m",
        "deepcovid.cli",
        "send",
        "--to",
        f"DEEPCOVID@127.0.0.1:{node.port}",
        "--calling-ae",
        "TESTSCU",
        "--attempts",
        "1",
    ]
    env = {**os.environ, "DEEPCOVID_DATA_DIR": str(tmp_path / "cli")}
    ok = subprocess.run(
        [*command, str(folder)], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )
    assert ok.returncode == 0, ok.stderr
    assert f"sent {len(FILES)} of {len(FILES)} file(s)" in ok.stdout
    assert node.jobs() == len(FILES)
    not_dicom = tmp_path / "notes.txt"
    not_dicom.write_text("not DICOM")
    bad = subprocess.run(
        [*command, str(folder / FILES[0].name), str(not_dicom)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert bad.returncode == 1
    assert "1 failed" in bad.stdout and "notes.txt" in bad.stderr
