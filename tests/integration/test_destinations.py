"""Several destinations at once, DICOMweb among them, against real Orthancs.

One Orthanc with the DICOMweb plugin takes results by STOW-RS (confirmed by QIDO-RS), another
by C-STORE (confirmed by C-FIND); each gets each result exactly once, with its own outbox row,
state and back-off, also when the DICOMweb one is down for a while. Over HTTPS the destination's
certificate is verified against its CA and the bearer token read from its file is sent, and
never logged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from common.settings import Settings
from dicom_node.enqueuer import Enqueuer
from dicom_node.intake import Intake
from dicom_node.ops.server import make_app
from dicom_node.spool import Spool
from dicom_node.stow import StowService
from dicom_node.webserver import ThreadedServer
from store import JobState, JobStore
from store.migrate import upgrade
from store.outbox import NewResult, Outbox
from store.tokens import Tokens
from tests.harness.factories import record_job, wrap_pixels
from tests.harness.orthanc import Orthanc
from tests.integration.test_security import Pki, _make_ca, _make_leaf
from worker import delivery


@pytest.fixture
def web_pacs(tmp_path: Path) -> Iterator[Orthanc]:
    orthanc = Orthanc(tmp_path / "web", node_aet="DEEPCOVID", node_port=1, dicomweb=True)
    orthanc.start()
    yield orthanc
    orthanc.stop()


@pytest.fixture
def dimse_pacs(tmp_path: Path) -> Iterator[Orthanc]:
    orthanc = Orthanc(tmp_path / "dimse", node_aet="DEEPCOVID", node_port=1, aet="SECOND")
    orthanc.start()
    yield orthanc
    orthanc.stop()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """Our CA with a server certificate for 127.0.0.1, and a rogue CA (test_security's)."""
    d = tmp_path / "pki"
    d.mkdir()
    _make_ca(d, "ca")
    _make_ca(d, "rogue-ca")
    leaf = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    _make_leaf(d, "node", "ca", leaf + "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n")
    none = d / "none"
    return Pki(
        d / "ca.crt", d / "node.crt", d / "node.key", none, none, d / "rogue-ca.crt", none, none
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade(url)
    store = JobStore(url)
    yield store
    store.engine.dispose()


def _results(tmp_path: Path, n: int) -> list[NewResult]:
    """``n`` small DICOM files of one study (stand-ins for an SR, SC, GSPS ...)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    study = None
    out = []
    for i in range(n):
        ds = wrap_pixels(np.full((32, 32), i * 20, dtype=np.uint8), study_instance_uid=study)
        study = str(ds.StudyInstanceUID)
        path = tmp_path / f"result{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(
            NewResult(
                "sc",
                str(ds.SOPInstanceUID),
                str(ds.SOPClassUID),
                str(ds.SeriesInstanceUID),
                study,
                str(path),
            )
        )
    return out


def _queued(
    store: JobStore, results: list[NewResult], settings: Settings, uid: str = "1.2.826.0.99.1"
) -> tuple[Outbox, int]:
    job = record_job(store, uid)
    store.set_state(job, JobState.RESULTS_BUILT)
    outbox = Outbox(store)
    delivery.queue(outbox, job, results, model_version="v1", settings=settings)
    return outbox, job


def test_each_result_reaches_a_stowrs_and_a_dimse_destination_once(
    web_pacs: Orthanc, dimse_pacs: Orthanc, store: JobStore, tmp_path: Path
) -> None:
    web = f"{web_pacs.url}/dicom-web"
    dimse = f"SECOND@127.0.0.1:{dimse_pacs.dicom_port}"
    settings = Settings(data_dir=tmp_path / "data", destination=f"{web},{dimse}")
    results = _results(tmp_path, 3)
    outbox, job = _queued(store, results, settings)
    rows = outbox.for_job(job)
    assert sorted(r.destination or "" for r in rows) == sorted([web] * 3 + [dimse] * 3)
    assert delivery.deliver_due(outbox, settings) == 6
    states = {(r.destination, r.sop_instance_uid): r.delivery_state for r in outbox.for_job(job)}
    assert set(states.values()) == {"confirmed"}, states  # QIDO-RS and C-FIND found them
    assert web_pacs.instance_count() == 3 and dimse_pacs.instance_count() == 3
    study = results[0].study_instance_uid or ""
    assert len(web_pacs.study_sop_classes(study)) == 3
    assert store.get(job).state == JobState.DELIVERED  # type: ignore[union-attr]
    # Queued again (a re-analysis with the same model): nothing new, nothing sent twice.
    assert delivery.queue(outbox, job, results, model_version="v1", settings=settings) == 0
    assert delivery.deliver_due(outbox, settings) == 0
    assert web_pacs.instance_count() == 3


def test_a_dicomweb_destination_down_gets_every_result_once_when_back(
    web_pacs: Orthanc, dimse_pacs: Orthanc, store: JobStore, tmp_path: Path
) -> None:
    web = f"{web_pacs.url}/dicom-web"
    dimse = f"SECOND@127.0.0.1:{dimse_pacs.dicom_port}"
    settings = Settings(
        data_dir=tmp_path / "data", destination=f"{web},{dimse}", delivery_backoff_s=0.01
    )
    outbox, job = _queued(store, _results(tmp_path, 2), settings)
    web_pacs.stop()
    assert delivery.deliver_due(outbox, settings) == 2, "the C-STORE destination is not held up"
    by_dest = {r.destination: r for r in outbox.for_job(job)}
    assert by_dest[web].delivery_state == "pending" and "cannot reach" in (
        by_dest[web].last_error or ""
    )
    assert by_dest[dimse].delivery_state == "confirmed"
    web_pacs.start()
    assert delivery.deliver_due(outbox, settings) == 2
    assert {r.delivery_state for r in outbox.for_job(job)} == {"confirmed"}
    assert [r.attempts for r in outbox.for_job(job) if r.destination == web] == [2, 2]
    assert web_pacs.instance_count() == 2 and dimse_pacs.instance_count() == 2


def test_a_refusal_fails_at_once_and_an_unknown_destination_text_says_why(
    web_pacs: Orthanc, store: JobStore, tmp_path: Path
) -> None:
    bad = tmp_path / "not-dicom.dcm"
    bad.write_bytes(b"not DICOM")
    settings = Settings(data_dir=tmp_path / "data", destination=f"{web_pacs.url}/dicom-web")
    result = NewResult("sc", "1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", "1.2.3", str(bad))
    outbox, job = _queued(store, [result], settings)
    assert delivery.deliver_due(outbox, settings) == 0
    (row,) = outbox.for_job(job)
    assert row.delivery_state == "failed" and row.attempts == 1, row
    assert "cannot read" in (row.last_error or "")
    typo = Settings(data_dir=tmp_path / "data", destination="ftp://pacs/dicom-web")
    outbox2, job2 = _queued(store, [result], typo, uid="1.2.826.0.99.2")
    delivery.deliver_due(outbox2, typo)
    (row2,) = outbox2.for_job(job2)
    assert row2.delivery_state == "failed" and "selects no destination type" in (
        row2.last_error or ""
    )


def test_an_https_destination_is_verified_and_sent_its_token_which_is_never_logged(
    pki: Pki, store: JobStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The node's own STOW-RS intake over HTTPS (our CA) as the destination: the right CA and
    token deliver; a rogue CA or a wrong token keep the row pending with the reason."""
    receiver = Node(tmp_path / "receiver")
    server = ThreadedServer(
        make_app(receiver.service.routes()),
        "127.0.0.1",
        0,
        certfile=pki.server_cert,
        keyfile=pki.server_key,
    )
    try:
        url = f"https://127.0.0.1:{server.port}/dicom-web"
        token_file = tmp_path / "token"
        token_file.write_text(receiver.token + "\n")
        wrong = tmp_path / "wrong-token"
        wrong.write_text("not-the-token")
        cases = [
            ({"ca": pki.rogue_ca, "token_file": token_file}, "pending", "cannot reach"),
            ({"ca": pki.ca, "token_file": wrong}, "pending", "HTTP 401"),
            ({"ca": pki.ca, "token_file": token_file}, "sent", None),  # no QIDO-RS there
        ]
        for i, (options, state, error) in enumerate(cases):
            results = _results(tmp_path / f"case{i}", 1)
            settings = Settings(
                data_dir=tmp_path / "data",
                destinations=[{"url": url, **options}],
            )
            outbox, job = _queued(store, results, settings, uid=f"1.2.826.0.99.{10 + i}")
            delivery.deliver_due(outbox, settings)
            (row,) = outbox.for_job(job)
            assert row.delivery_state == state, row
            assert error is None or error in (row.last_error or ""), row
        (received,) = receiver.store.list()
        assert received.sop_instance_uid == results[0].sop_instance_uid
        assert received.calling_ae == "sender"
        assert receiver.token not in caplog.text
    finally:
        server.shutdown()
        receiver.close()


class Node:
    """A STOW-RS intake (the node's) on its own spool and job store, with one sender's token."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True)
        url = f"sqlite:///{root / 'jobs.sqlite'}"
        upgrade(url)
        self.store = JobStore(url)
        spool = Spool(root / "spool")
        spool.ensure()
        self.enqueuer = Enqueuer(lambda job_id: None)
        self.service = StowService(
            Intake(spool, self.store),
            Tokens(self.store).authenticate,
            self.enqueuer.submit,
            max_bytes=2**26,
        )
        self.token = Tokens(self.store).add("sender")

    def close(self) -> None:
        self.enqueuer.close()
        self.store.engine.dispose()
