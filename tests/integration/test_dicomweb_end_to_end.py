"""DICOMweb in and out, end to end: the issue's done-when test.

A study sent by ``dicomweb-client`` STOW-RS to the node (bearer token) is analysed, and its
results -- SR, SC, GSPS and Parametric Map -- are stored in one Orthanc by STOW-RS (confirmed
by QIDO-RS) and in a second by C-STORE (confirmed by C-FIND), each exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from store import JobStore
from store.migrate import upgrade
from store.outbox import Outbox
from store.tokens import Tokens
from tests.harness.factories import load_cxr, wrap_pixels
from tests.harness.net import wait_for
from tests.harness.orthanc import Orthanc
from tests.harness.services import ServiceProcess

SR = "1.2.840.10008.5.1.4.1.1.88.34"
SC = "1.2.840.10008.5.1.4.1.1.7"
PM = "1.2.840.10008.5.1.4.1.1.30"
PR = "1.2.840.10008.5.1.4.1.1.11.1"
COVID_IMAGE = "images/covid/figure1__covid__COVID-00001.jpg"


@pytest.fixture
def pacs_pair(tmp_path: Path) -> Iterator[tuple[Orthanc, Orthanc]]:
    web = Orthanc(tmp_path / "web", node_aet="DEEPCOVID", node_port=1, dicomweb=True)
    dimse = Orthanc(tmp_path / "dimse", node_aet="DEEPCOVID", node_port=1, aet="SECOND")
    web.start()
    dimse.start()
    yield web, dimse
    web.stop()
    dimse.stop()


def _new_instances(orthanc: Orthanc) -> list[str]:
    """SOP Instance UIDs of every instance Orthanc stored, once per store (repeats count)."""
    changes = orthanc.get("/changes?limit=1000")["Changes"]
    ids = [c["ID"] for c in changes if c["ChangeType"] == "NewInstance"]
    return [orthanc.get(f"/instances/{i}")["MainDicomTags"]["SOPInstanceUID"] for i in ids]


def test_a_study_sent_by_stow_rs_reaches_a_stow_rs_and_a_c_store_destination_once_each(
    settings_env: dict[str, str],
    pacs_pair: tuple[Orthanc, Orthanc],
    services: list[ServiceProcess],
    tmp_path: Path,
) -> None:
    web, dimse = pacs_pair
    env = dict(settings_env)
    web_url = f"{web.url}/dicom-web"
    dimse_text = f"SECOND@127.0.0.1:{dimse.dicom_port}"
    env["DEEPCOVID_DESTINATION"] = f"{web_url},{dimse_text}"
    env["DEEPCOVID_DELIVERY_BACKOFF_S"] = "2"
    env["DEEPCOVID_VIEW_CHECK"] = "false"  # the header gate suffices for this frontal CR
    db_url = f"sqlite:///{Path(env['DEEPCOVID_DATA_DIR']) / 'jobs.sqlite'}"
    Path(env["DEEPCOVID_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    upgrade(db_url)
    store = JobStore(db_url)
    token = Tokens(store).add("modality1")
    for name in ("node", "worker"):
        services.append(ServiceProcess([name], env, tmp_path / f"{name}.log").start())
    node_url = f"http://127.0.0.1:{env['DEEPCOVID_MONITORING_PORT']}"

    def up() -> bool:
        try:
            return requests.get(f"{node_url}/health/live", timeout=2).ok
        except requests.RequestException:
            return False

    wait_for(up, timeout=90, what="the node's web server")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    client = DICOMwebClient(f"{node_url}/dicom-web", session=session)
    cr = wrap_pixels(load_cxr(COVID_IMAGE))
    answer = client.store_instances([cr])
    assert [str(i.ReferencedSOPInstanceUID) for i in answer.ReferencedSOPSequence] == [
        str(cr.SOPInstanceUID)
    ]

    def job_delivered() -> bool:
        jobs = [j for j in store.list() if j.sop_instance_uid == str(cr.SOPInstanceUID)]
        return bool(jobs) and jobs[0].state == "delivered"

    wait_for(job_delivered, timeout=300, what="the job delivered to both destinations")
    job = next(j for j in store.list() if j.sop_instance_uid == str(cr.SOPInstanceUID))
    assert job.calling_ae == "modality1"
    rows = [r for j in store.list() for r in Outbox(store).for_job(j.id)]  # study-level too
    by_dest: dict[str, list[str]] = {web_url: [], dimse_text: []}
    for row in rows:
        assert row.delivery_state == "confirmed", row  # QIDO-RS / C-FIND found it
        by_dest[row.destination or ""].append(row.sop_instance_uid)
    assert sorted(by_dest[web_url]) == sorted(by_dest[dimse_text])
    assert {r.kind for r in rows if r.job_id == job.id} >= {"sr", "sc", "pr", "pm"}
    for orthanc, dest in ((web, web_url), (dimse, dimse_text)):
        classes = orthanc.study_sop_classes(str(cr.StudyInstanceUID))
        assert {SR, SC, PR, PM} <= set(classes), (dest, classes)
        stored = _new_instances(orthanc)
        assert sorted(stored) == sorted(by_dest[dest]), f"{dest}: each result stored once"
    store.engine.dispose()
