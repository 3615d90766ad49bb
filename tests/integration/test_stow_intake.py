"""STOW-RS intake on the node's web server, sent to by ``dicomweb-client`` and by hand.

The server is the node's own (uvicorn on a thread, :func:`dicom_node.ops.server.make_app`),
its intake the C-STORE intake on a real spool and SQLite job store. What a 200 promises is
checked on disk (spool file, job row); each bad request is refused whole with its reason and
leaves no file and no job behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread

from dicom_node.enqueuer import Enqueuer
from dicom_node.intake import Intake
from dicom_node.ops.server import make_app
from dicom_node.spool import Spool
from dicom_node.stow import StowService
from dicom_node.webserver import ThreadedServer
from store import JobStore
from store.migrate import upgrade
from store.tokens import Tokens
from tests.harness.factories import wrap_pixels

BOUNDARY = "deepcovid-test-boundary"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


class Node:
    """The STOW-RS service on a real server, spool and job store."""

    def __init__(self, root: Path, max_bytes: int = 64 * 2**20) -> None:
        url = f"sqlite:///{root / 'jobs.sqlite'}"
        upgrade(url)
        self.store = JobStore(url)
        self.spool = Spool(root / "spool")
        self.spool.ensure()
        self.enqueued: list[int] = []
        self.enqueuer = Enqueuer(self.enqueued.append)
        service = StowService(
            Intake(self.spool, self.store),
            Tokens(self.store).authenticate,
            self.enqueuer.submit,
            max_bytes=max_bytes,
        )
        self.token = Tokens(self.store).add("modality1")
        self.server = ThreadedServer(make_app(service.routes()), "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.port}/dicom-web"

    def client(self, token: str | None = None) -> DICOMwebClient:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token or self.token}"
        client = DICOMwebClient(self.url, session=session)
        client.set_http_retry_params(retry=False)
        return client

    def post(
        self, body: bytes, content_type: str = CONTENT_TYPE, **headers: str
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": content_type, **headers}
        return requests.post(f"{self.url}/studies", data=body, headers=headers, timeout=30)

    def spooled(self) -> list[Path]:
        return sorted(p for p in self.spool.root.iterdir() if p.is_file())

    def close(self) -> None:
        self.server.shutdown()
        self.enqueuer.close()
        self.store.engine.dispose()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    yield n
    n.close()


def _instances(n: int, study: str | None = None) -> list[Dataset]:
    out = []
    for i in range(n):
        ds = wrap_pixels(np.full((64, 64), 40 + i, dtype=np.uint8), study_instance_uid=study)
        study = str(ds.StudyInstanceUID)
        out.append(ds)
    return out


def _part10(ds: Dataset) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _multipart(*parts: bytes, close: bool = True) -> bytes:
    body = b""
    for part in parts:
        body += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
    return body + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def test_dicomweb_client_stores_a_study_durably_and_gets_a_ps3_18_answer(node: Node) -> None:
    instances = _instances(3)
    answer = node.client().store_instances(instances)
    stored = [str(item.ReferencedSOPInstanceUID) for item in answer.ReferencedSOPSequence]
    assert stored == [str(ds.SOPInstanceUID) for ds in instances]
    assert "FailedSOPSequence" not in answer
    assert str(answer.RetrieveURL).endswith(f"/studies/{instances[0].StudyInstanceUID}")
    jobs = node.store.list()
    assert sorted(j.sop_instance_uid for j in jobs) == sorted(stored)
    assert {j.calling_ae for j in jobs} == {"modality1"}
    for job in jobs:  # the spool holds the file the sender sent, whole
        assert dcmread(job.spool_path).SOPInstanceUID == job.sop_instance_uid
    node.enqueuer.close()
    assert sorted(node.enqueued) == sorted(j.id for j in jobs)


def test_a_study_url_refuses_instances_of_another_study(node: Node) -> None:
    mine, other = _instances(1), _instances(1)
    body = _multipart(_part10(mine[0]), _part10(other[0]))
    study = str(mine[0].StudyInstanceUID)
    res = requests.post(
        f"{node.url}/studies/{study}",
        data=body,
        headers={"Authorization": f"Bearer {node.token}", "Content-Type": CONTENT_TYPE},
        timeout=30,
    )
    assert res.status_code == 202, res.text
    failed = res.json()["00081198"]["Value"]
    assert failed[0]["00081155"]["Value"] == [str(other[0].SOPInstanceUID)]
    assert failed[0]["00081197"]["Value"] == [0xA900]
    assert [j.sop_instance_uid for j in node.store.list()] == [str(mine[0].SOPInstanceUID)]


def test_a_part_that_is_not_dicom_fails_alone_with_its_reason(node: Node) -> None:
    good = _instances(1)[0]
    res = node.post(_multipart(b"this is not DICOM", _part10(good)))
    assert res.status_code == 202, res.text
    failed = res.json()["00081198"]["Value"]
    assert failed[0]["00081197"]["Value"] == [0xC000]
    assert "not a DICOM Part 10 file" in res.headers["warning"]
    assert len(node.spooled()) == 1 and len(node.store.list()) == 1
    only_bad = node.post(_multipart(b"\x00" * 200))
    assert only_bad.status_code == 409, "nothing stored: conflict"
    assert len(node.spooled()) == 1 and len(node.store.list()) == 1


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("no token", 401, "bearer token is required"),
        ("unknown token", 401, "not valid"),
        ("wrong content type", 415, "not multipart/related"),
        ("parts not dicom", 415, "application/dicom"),
        ("truncated", 400, "truncated"),
        ("no boundary", 400, "boundary"),
        ("oversize", 413, "over"),
    ],
)
def test_a_bad_request_is_refused_whole_and_leaves_nothing(
    tmp_path: Path, case: str, status: int, reason: str
) -> None:
    node = Node(tmp_path, max_bytes=2**20)
    try:
        part = _part10(_instances(1)[0])
        body = _multipart(part)
        headers: dict[str, str] = {}
        content_type = CONTENT_TYPE
        if case == "no token":
            headers["Authorization"] = ""
        elif case == "unknown token":
            headers["Authorization"] = "Bearer not-a-token"
        elif case == "wrong content type":
            content_type = "application/dicom"
        elif case == "parts not dicom":
            content_type = f'multipart/related; type="image/jpeg"; boundary={BOUNDARY}'
        elif case == "truncated":
            body = _multipart(part, close=False)[: len(body) // 2]
        elif case == "no boundary":
            content_type = 'multipart/related; type="application/dicom"'
        elif case == "oversize":
            big = wrap_pixels(np.zeros((512, 512), dtype=np.uint8))
            body = _multipart(*[_part10(big)] * 5)  # 5 x 256 kB > 1 MiB
        res = node.post(body, content_type, **headers)
        assert res.status_code == status, res.text[:300]
        assert reason in res.json()["error"]
        if status == 401:
            assert res.headers["www-authenticate"] == "Bearer"
        assert node.spooled() == [] and node.store.list() == []
    finally:
        node.close()


def test_a_token_removed_is_refused(node: Node) -> None:
    assert Tokens(node.store).remove("modality1")
    res = node.post(_multipart(_part10(_instances(1)[0])))
    assert res.status_code == 401
    assert node.store.list() == []
