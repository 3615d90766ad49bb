"""Staging C-STORE datasets in the spool from the PDUs as they arrive."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import sop_class
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_items import PresentationDataValueItem

from dicom_node import streaming
from dicom_node.spool import Spool, part10_header
from dicom_node.streaming import IncomingStreams

CR = sop_class.ComputedRadiographyImageStorage
UID = "1.2.826.0.1.3680043.8.498.77"


class FakeAssoc:
    """Hashable stand-in for a pynetdicom Association (one accepted context, id 1)."""

    def __init__(self) -> None:
        self.accepted_contexts = [
            SimpleNamespace(context_id=1, transfer_syntax=[ExplicitVRLittleEndian])
        ]


def command(
    field: int = 0x0001, sop_class_uid: str = CR, uid: str = UID, dataset: bool = True
) -> bytes:
    cs = Dataset()
    cs.AffectedSOPClassUID = sop_class_uid
    cs.CommandField = field
    cs.MessageID = 1
    cs.Priority = 0
    cs.CommandDataSetType = 0x0001 if dataset else 0x0101
    cs.AffectedSOPInstanceUID = uid
    data = encode(cs, True, True)
    assert data is not None
    return data


def pdu(*pdvs: tuple[int, bytes]) -> SimpleNamespace:
    p = P_DATA_TF()
    for control, data in pdvs:
        item = PresentationDataValueItem()
        item.presentation_context_id = 1
        item.presentation_data_value = bytes([control]) + data
        p.presentation_data_value_items.append(item)
    return p


def event(assoc: FakeAssoc, p: P_DATA_TF) -> SimpleNamespace:
    return SimpleNamespace(assoc=assoc, pdu=p)


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    s = Spool(tmp_path / "spool")
    s.ensure()
    return s


def send(
    streams: IncomingStreams,
    assoc: FakeAssoc,
    cmd: bytes,
    data: bytes,
    chunk: int = 1000,
    last: bool = True,
) -> None:
    streams.on_pdu(event(assoc, pdu((0x03, cmd))))
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for index, piece in enumerate(pieces):
        final = last and index == len(pieces) - 1
        streams.on_pdu(event(assoc, pdu((0x02 if final else 0x00, piece))))


def test_dataset_is_staged_behind_the_spool_header(spool: Spool) -> None:
    streams = IncomingStreams(spool, kick_bytes=4096)
    assoc = FakeAssoc()
    data = os.urandom(10_000)
    send(streams, assoc, command(), data)
    staged = streams.take(assoc)
    assert staged is not None and staged.fd >= 0
    expected = part10_header(CR, UID, ExplicitVRLittleEndian) + data
    assert staged.path.parent == spool.root and staged.path.name.startswith(".")
    assert stat.S_IMODE(staged.path.stat().st_mode) == 0o600
    assert staged.size_bytes == len(expected)
    assert staged.sha256 == hashlib.sha256(expected).hexdigest()
    assert streams.take(assoc) is None  # handed over once
    spool.adopt(UID, staged).commit()
    assert (spool.root / f"{UID}.dcm").read_bytes() == expected
    assert sorted(os.listdir(spool.root)) == [f"{UID}.dcm"]


def test_write_back_starts_early_and_the_file_is_synced_at_the_end(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranges: list[tuple[int, int]] = []
    synced: list[int] = []
    monkeypatch.setattr(streaming, "start_writeback", lambda fd, o, n: ranges.append((o, n)))
    monkeypatch.setattr(streaming, "datasync", synced.append)
    streams = IncomingStreams(spool, kick_bytes=4096)
    assoc = FakeAssoc()
    send(streams, assoc, command(), os.urandom(20_000))
    staged = streams.take(assoc)
    assert staged is not None
    assert len(ranges) >= 3
    assert ranges[0][0] == 0
    assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert ranges[-1][0] + ranges[-1][1] <= staged.size_bytes
    assert synced == [staged.fd]  # synced by the writer before the handler takes it
    staged.discard()


@pytest.mark.parametrize(
    "cmd",
    [
        command(sop_class_uid=sop_class.ComprehensiveSRStorage),  # refused class
        command(uid="1.2/../../x"),  # unsafe UID
        command(field=0x0030, dataset=False),  # C-ECHO
    ],
)
def test_what_the_intake_would_refuse_is_not_staged(spool: Spool, cmd: bytes) -> None:
    streams = IncomingStreams(spool)
    assoc = FakeAssoc()
    send(streams, assoc, cmd, b"x" * 100)
    assert streams.take(assoc) is None
    assert os.listdir(spool.root) == []


def test_no_staging_below_the_watermark(tmp_path: Path) -> None:
    spool = Spool(tmp_path, min_free_bytes=100, disk_usage=lambda _p: (0, 0, 50))
    streams = IncomingStreams(spool)
    assoc = FakeAssoc()
    send(streams, assoc, command(), b"x" * 100)
    assert streams.take(assoc) is None
    assert os.listdir(tmp_path) == []


def test_an_incomplete_dataset_is_dropped(spool: Spool) -> None:
    streams = IncomingStreams(spool)
    assoc = FakeAssoc()
    send(streams, assoc, command(), b"x" * 5000, last=False)
    assert streams.take(assoc) is None
    assert os.listdir(spool.root) == []


def test_closing_the_connection_drops_what_is_staged(spool: Spool) -> None:
    streams = IncomingStreams(spool)
    assoc = FakeAssoc()
    send(streams, assoc, command(), b"x" * 5000, last=False)
    streams.on_close(SimpleNamespace(assoc=assoc))
    assert os.listdir(spool.root) == []


def test_a_new_request_drops_an_untaken_file(spool: Spool) -> None:
    streams = IncomingStreams(spool)
    assoc = FakeAssoc()
    send(streams, assoc, command(), b"first")
    send(streams, assoc, command(uid=UID + ".2"), b"second")
    staged = streams.take(assoc)
    assert staged is not None and staged.path.read_bytes().endswith(b"second")
    assert os.listdir(spool.root) == [staged.path.name]
    staged.discard()


def test_associations_are_staged_separately(spool: Spool) -> None:
    streams = IncomingStreams(spool)
    one, two = FakeAssoc(), FakeAssoc()
    streams.on_pdu(event(one, pdu((0x03, command()))))
    streams.on_pdu(event(two, pdu((0x03, command(uid=UID + ".2")))))
    streams.on_pdu(event(one, pdu((0x02, b"one"))))
    streams.on_pdu(event(two, pdu((0x02, b"two"))))
    a, b = streams.take(one), streams.take(two)
    assert a is not None and b is not None
    assert a.path.read_bytes().endswith(b"one") and b.path.read_bytes().endswith(b"two")
    a.discard()
    b.discard()


def test_a_failing_disk_means_no_staged_file_and_no_exception(spool: Spool) -> None:
    streams = IncomingStreams(spool)
    assoc = FakeAssoc()
    shutil.rmtree(spool.root)
    send(streams, assoc, command(), b"x" * 100)  # must not raise into pynetdicom
    assert streams.take(assoc) is None
