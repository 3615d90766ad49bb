"""The deployment's pieces run for real: the node's health check (the compose file's own
``python -c`` command) against live and dead endpoints, and ``deploy/orthanc``'s configuration
and Lua auto-routing script in the real Orthanc of the test machines: CR/DX is forwarded to the
node, CT is not, and the node's own results are not sent back to it. What can be checked on the
files alone is in ``tests/unit/test_compose.py``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from common.settings import Settings
from tests.harness.factories import CR_IMAGE_STORAGE, CT_IMAGE_STORAGE, wrap_pixels
from tests.harness.net import free_port, wait_for
from tests.unit.test_compose import AUTOROUTING_LUA, ORTHANC_CONFIG, SECRETS, load_compose


# --- the node's health check, run for real against the node's own endpoints -----------------
def _healthcheck_code() -> str:
    test = load_compose()["services"]["node"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    return str(test[3])


def _run_healthcheck(port: int) -> int:
    env = {"DEEPCOVID_MONITORING_PORT": str(port), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", _healthcheck_code()], env=env, timeout=60, capture_output=True
    )
    return done.returncode


def test_node_healthcheck_passes_against_a_live_node(tmp_path: Path) -> None:
    from dicom_node.ops.server import start_monitoring

    port = free_port()
    settings = Settings(
        data_dir=tmp_path, monitoring_bind="127.0.0.1", monitoring_port=port, min_free_space_mb=1
    )
    server = start_monitoring(settings)
    assert server is not None
    try:
        assert _run_healthcheck(port) == 0
    finally:
        server.shutdown()
    assert _run_healthcheck(port) != 0  # stopped: nothing listens any more


def test_node_healthcheck_fails_when_the_endpoint_says_no() -> None:
    import http.server
    import threading

    class Dead(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Dead)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        assert _run_healthcheck(httpd.server_address[1]) != 0
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_node_healthcheck_fails_when_nothing_listens() -> None:
    assert _run_healthcheck(free_port()) != 0


# --- Orthanc with deploy/orthanc's configuration and Lua script, for real ---------------------
def _orthanc_rest(port: int, path: str) -> Any:
    import base64
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    token = base64.b64encode(f"admin:{SECRETS['ORTHANC_ADMIN_PASSWORD']}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _store(ds: Dataset, port: int, calling_ae: str) -> int:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="ORTHANC")
    assert assoc.is_established, f"Orthanc refused an association from {calling_ae}"
    status = assoc.send_c_store(ds)
    assoc.release()
    return int(status.Status)


def _small(sop_class_uid: str, modality: str) -> Dataset:
    pixels = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096).astype(np.uint16)
    return wrap_pixels(pixels, modality=modality, sop_class_uid=sop_class_uid, bits_stored=12)


def test_orthanc_autorouting_forwards_cr_dx_and_skips_the_nodes_own_results(
    tmp_path: Path,
) -> None:
    assert shutil.which("Orthanc"), "Orthanc missing: scripts/test-services.sh installs it"
    received: list[tuple[str, str]] = []  # (SOP Instance UID, calling AE) as the node saw them

    def on_store(event: evt.Event) -> int:
        received.append(
            (str(event.request.AffectedSOPInstanceUID), str(event.assoc.requestor.ae_title))
        )
        return 0x0000

    # A node AE title other than the default proves the script reads DEEPCOVID_AE_TITLE.
    node_aet = "DCNODE"
    node = AE(ae_title=node_aet)
    node.require_called_aet = True  # orthanc.json's modality AET must be the substituted one
    for uid in (CR_IMAGE_STORAGE, CT_IMAGE_STORAGE):
        node.add_supported_context(uid)
    node_port, dicom_port, http_port = free_port(), free_port(), free_port()
    server = node.start_server(
        ("127.0.0.1", node_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )

    config = json.loads(ORTHANC_CONFIG.read_text())
    config.update(
        StorageDirectory=str(tmp_path / "db"),
        IndexDirectory=str(tmp_path / "db"),
        DicomPort=dicom_port,
        HttpPort=http_port,
        RemoteAccessAllowed=False,
        LuaScripts=[str(AUTOROUTING_LUA)],
    )
    config["DicomModalities"]["deepcovid"].update(Host="127.0.0.1", Port=node_port)
    config_file = tmp_path / "orthanc.json"
    config_file.write_text(json.dumps(config))
    log = (tmp_path / "orthanc.log").open("wb")
    orthanc = subprocess.Popen(
        ["Orthanc", str(config_file)],
        env={
            "PATH": "/usr/bin:/bin:/usr/sbin",
            "DEEPCOVID_AE_TITLE": node_aet,
            "ORTHANC_ADMIN_PASSWORD": SECRETS["ORTHANC_ADMIN_PASSWORD"],
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: _try(lambda: _orthanc_rest(http_port, "/system")),
            timeout=30,
            what="Orthanc's REST API",
        )
        first_cr = _small(CR_IMAGE_STORAGE, "CR")
        first_dx = _small(CR_IMAGE_STORAGE, "DX")
        ct = _small(CT_IMAGE_STORAGE, "CT")
        own_result = _small(CR_IMAGE_STORAGE, "CR")  # what the node sends back as DCNODE
        default_aet = _small(CR_IMAGE_STORAGE, "CR")  # from an AE named like the default
        last_cr = _small(CR_IMAGE_STORAGE, "CR")
        for ds, calling_ae in (
            (first_cr, "MODALITY"),
            (first_dx, "MODALITY"),
            (ct, "MODALITY"),
            (own_result, node_aet),
            (default_aet, "DEEPCOVID"),
            (last_cr, "MODALITY"),
        ):
            assert _store(ds, dicom_port, calling_ae) == 0x0000
        # Orthanc runs the Lua callbacks one after the other in arrival order: once the last
        # CR has reached the node, the CT and the node's own result have been passed over.
        uids = lambda: {uid for uid, _ in received}  # noqa: E731
        wait_for(
            lambda: last_cr.SOPInstanceUID in uids(),
            timeout=30,
            what="Orthanc to forward the last CR to the node",
        )
        time.sleep(0.5)
        assert uids() == {
            first_cr.SOPInstanceUID,
            first_dx.SOPInstanceUID,
            default_aet.SOPInstanceUID,
            last_cr.SOPInstanceUID,
        }
        assert {ae.strip() for _, ae in received} == {"ORTHANC"}
        assert len(_orthanc_rest(http_port, "/instances")) == 6  # everything stays in Orthanc

        # Delivery verification: the node (AE DEEPCOVID, a declared modality) may C-FIND.
        finder = AE(ae_title=node_aet)
        finder.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = finder.associate("127.0.0.1", dicom_port, ae_title="ORTHANC")
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = own_result.StudyInstanceUID
        query.SeriesInstanceUID = own_result.SeriesInstanceUID
        query.SOPInstanceUID = own_result.SOPInstanceUID
        matches = [
            identifier
            for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            )
            if status and status.Status in (0xFF00, 0xFF01)
        ]
        assoc.release()
        assert [m.SOPInstanceUID for m in matches] == [own_result.SOPInstanceUID]
    finally:
        orthanc.terminate()
        try:
            orthanc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            orthanc.kill()
        log.close()
        assert server is not None
        server.shutdown()


def _try(call: Any) -> Any:
    """``call()``, or None when it raises (a server not up yet)."""
    try:
        return call()
    except Exception:
        return None
