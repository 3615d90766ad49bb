"""Security measures: who may associate, DICOM TLS, no patient data in logs, file modes.

- Access control: calling-AE and host allow-lists reject associations; every decision lands in
  the audit log (``log_dir/audit.log``, JSON lines), never in the application log.
- DICOM TLS: certificates made here with the ``openssl`` CLI (a CA, the node's certificate for
  127.0.0.1, a client's, and a client of another CA). dcmtk ``storescu +tls`` and our sender
  get in; a client without a certificate, with one of another CA, or without TLS is refused
  during the handshake and nothing is stored.
- With real ``deepcovid node`` and ``worker`` processes (the node on TLS, DEBUG logging):
  instances carrying a distinctive patient name, ID and birth date -- one analysed, one the gate
  rejects -- leave none of those values in any log file, process output, job reason or event,
  and everything the node kept (spool, results, logs) is owner-only (0600 files, 0700 folders).
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.events import Event

from audit import Recorder, open_recorder
from audit.sinks.json_log import read_events
from common.settings import Settings
from dicom_client.scu import Destination, Sender
from dicom_node.scp import Listener, _host_allowed, start_server
from store import JobStore
from store.migrate import upgrade
from store.outbox import NewResult, Outbox
from tests.harness.factories import DICOM_DIR, load_cxr, wrap_pixels
from tests.harness.net import wait_for
from tests.harness.services import ServiceProcess
from worker.delivery import deliver_due

FILE = DICOM_DIR / "nih_chestxray_DX_nhsx_test.dcm"
COVID_IMAGE = "images/covid/figure1__covid__COVID-00001.jpg"


# --- certificates -------------------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    """PEM files: our CA, the node's and a client's certificate, and a rogue CA's client."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


def _make_leaf(d: Path, name: str, ca: str, extensions: str) -> None:
    (d / f"{name}.ext").write_text(extensions)
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-set_serial", str(abs(hash(name)) % 10**12 + 1), "-days", "2",
        "-out", f"{name}.crt", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    assert shutil.which("openssl"), "the openssl command is not installed"
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "rogue-ca")
    leaf = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    _make_leaf(
        d,
        "node",
        "ca",
        leaf + "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    _make_leaf(d, "client", "ca", leaf + "extendedKeyUsage=clientAuth\n")
    _make_leaf(d, "rogue", "rogue-ca", leaf + "extendedKeyUsage=clientAuth\n")
    return Pki(
        ca=d / "ca.crt",
        server_cert=d / "node.crt",
        server_key=d / "node.key",
        client_cert=d / "client.crt",
        client_key=d / "client.key",
        rogue_ca=d / "rogue-ca.crt",
        rogue_cert=d / "rogue.crt",
        rogue_key=d / "rogue.key",
    )


def tls_settings(pki: Pki, **more: object) -> dict[str, object]:
    """Settings of a node that requires DICOM TLS with a client certificate of our CA."""
    return {"tls_cert": pki.server_cert, "tls_key": pki.server_key, "tls_ca": pki.ca, **more}


# --- an in-process listener -----------------------------------------------------------------
@dataclass
class Node:
    listener: Listener
    store: JobStore
    settings: Settings

    @property
    def port(self) -> int:
        return self.listener.address[1]

    @property
    def audit(self) -> list[dict[str, object]]:
        assert self.settings.storage.log_dir is not None
        return read_events(self.settings.storage.log_dir / "audit.log")

    def stored(self) -> int:
        return sum(self.store.counts().values())


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """``node_factory(**settings)`` starts a listener on loopback; all are stopped at the end."""
    running: list[Node] = []
    recorders: list[Recorder] = []

    def start(**overrides: object) -> Node:
        root = tmp_path / f"node{len(running)}"
        url = f"sqlite:///{root / 'jobs.sqlite'}"
        root.mkdir()
        upgrade(url)
        fields: dict[str, object] = {
            "data_dir": root / "data",
            "bind_address": "127.0.0.1",
            "port": 0,
            "min_free_space_mb": 1,
            "database_url": url,
            "allowed_calling_aes": ["STORESCU", "ECHOSCU", "TESTSCU"],
        }
        settings = Settings(**{**fields, **overrides})  # type: ignore[arg-type]
        store = JobStore(url)

        def enqueue(job_id: int) -> None:
            del job_id  # no worker here: the listener's part is what is tested

        recorder = open_recorder(ae_title=settings.listener.ae_title, log_dir=settings.storage.logs)
        recorders.append(recorder)
        node = Node(
            start_server(settings, store=store, enqueue=enqueue, recorder=recorder), store, settings
        )
        running.append(node)
        return node

    yield start
    for node in running:
        node.listener.shutdown()
        node.store.engine.dispose()
    for recorder in recorders:
        recorder.close()


def dcmtk(tool: str, port: int, *options: str, aet: str = "STORESCU", aec: str = "DEEPCOVID"):  # type: ignore[no-untyped-def]
    assert shutil.which(tool), "dcmtk is not installed (apt-get install -y dcmtk)"
    files = [str(FILE)] if tool == "storescu" else []
    return subprocess.run(
        [tool, "-aet", aet, "-aec", aec, "-to", "10", *options, "127.0.0.1", str(port), *files],
        capture_output=True,
        text=True,
        timeout=60,
    )


def tls_options(key: Path, cert: Path, ca: Path) -> tuple[str, ...]:
    return ("+tls", str(key), str(cert), "+cf", str(ca))


# --- access control and the audit log -------------------------------------------------------
def test_rejected_associations_are_audited_apart_from_the_application_log(
    node_factory, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    node = node_factory()
    assert dcmtk("storescu", node.port, aet="INTRUDER").returncode != 0
    assert dcmtk("storescu", node.port, aec="SOMEONE_ELSE").returncode != 0
    assert dcmtk("echoscu", node.port, aet="ECHOSCU").returncode == 0
    assert node.stored() == 0

    events = wait_for(lambda: len(node.audit) >= 3 and node.audit, timeout=10, what="audit")
    by_outcome = {(e["outcome"], e["calling_ae"]): e for e in events}
    intruder = by_outcome[("rejected", "INTRUDER")]
    assert intruder["event"] == "association"
    assert intruder["reason"] == "calling AE title not allowed"
    assert intruder["called_ae"] == "DEEPCOVID"
    assert intruder["peer_address"] == "127.0.0.1" and isinstance(intruder["peer_port"], int)
    wrong_called = by_outcome[("rejected", "STORESCU")]
    assert wrong_called["reason"] == "called AE title not recognised"
    assert wrong_called["called_ae"] == "SOMEONE_ELSE"
    assert by_outcome[("accepted", "ECHOSCU")]["reason"] == ""
    assert all(str(e["time"]).endswith("+00:00") for e in events)
    # The audit logger does not propagate: the application log has its own lines, not these.
    assert not [r for r in caplog.records if r.name.startswith("deepcovid.audit")]
    assert not [r for r in caplog.records if '"outcome"' in r.getMessage()]


def test_a_host_outside_allowed_hosts_is_rejected_and_audited(node_factory) -> None:  # type: ignore[no-untyped-def]
    elsewhere = node_factory(allowed_hosts=["10.0.0.0/8", "192.0.2.7"])
    result = dcmtk("storescu", elsewhere.port)
    assert result.returncode != 0
    assert elsewhere.stored() == 0
    assert [(e["outcome"], e["reason"], e["calling_ae"]) for e in elsewhere.audit] == [
        ("rejected", "host not allowed", "STORESCU")
    ]

    loopback = node_factory(allowed_hosts=["127.0.0.0/8"])
    assert dcmtk("storescu", loopback.port).returncode == 0
    assert loopback.stored() == 1
    assert [e["outcome"] for e in loopback.audit] == ["accepted"]


def test_allowed_hosts_must_be_addresses_or_networks() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        Settings(allowed_hosts=["pacs.example.org"])


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.20.31", True),
        ("10.1.21.31", False),
        ("::ffff:10.1.20.31", True),  # an IPv4 peer on a dual-stack socket
        ("2001:db8::7", True),
        ("2001:db9::7", False),
        ("not-an-address", False),
    ],
)
def test_host_check_matches_networks(address: str, allowed: bool) -> None:
    networks = [ipaddress.ip_network(n) for n in ("10.1.20.0/24", "2001:db8::/32")]
    assert _host_allowed(address, networks) is allowed


def test_tls_settings_that_cannot_work_are_refused(pki: Pki) -> None:
    with pytest.raises(ValueError, match="tls_key is set but tls_cert is not"):
        Settings(tls_key=pki.server_key)
    with pytest.raises(ValueError, match="needs tls_ca"):
        Settings(tls_cert=pki.server_cert, tls_require_client_cert=True)
    assert Settings(tls_cert=pki.server_cert, tls_ca=pki.ca).tls.client_cert_required
    assert not Settings(tls_cert=pki.server_cert).tls.client_cert_required


# --- DICOM TLS ----------------------------------------------------------------------------
def test_storescu_over_tls_with_a_client_certificate_is_stored(pki: Pki, node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(**tls_settings(pki))
    result = dcmtk("storescu", node.port, *tls_options(pki.client_key, pki.client_cert, pki.ca))
    assert result.returncode == 0, result.stderr
    assert node.stored() == 1
    assert [e["outcome"] for e in node.audit] == ["accepted"]


def test_our_sender_over_tls_is_stored_and_checks_the_node(pki: Pki, node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(**tls_settings(pki))
    destination = Destination("DEEPCOVID", "127.0.0.1", node.port)
    ours = Settings(tls_cert=pki.client_cert, tls_key=pki.client_key, tls_ca=pki.ca)
    sender = Sender(destination, calling_ae="TESTSCU", tls=ours.tls.client_context())
    report = sender.send_files([FILE])
    assert report.ok, report.results
    assert node.stored() == 1

    # A sender that does not trust the node's CA does not send to it.
    distrust = Settings(tls_cert=pki.client_cert, tls_key=pki.client_key, tls_ca=pki.rogue_ca)
    tls = distrust.tls.client_context()
    sender = Sender(destination, calling_ae="TESTSCU", tls=tls, max_attempts=1)
    copy = wrap_pixels(load_cxr(COVID_IMAGE)[:64, :64])
    assert not sender.send_datasets([copy]).ok
    assert node.stored() == 1


@pytest.mark.parametrize("client", ["no certificate", "another CA", "no TLS"])
def test_a_client_without_a_valid_certificate_is_refused(
    pki: Pki, node_factory, client: str
) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(**tls_settings(pki))
    options = {
        "no certificate": ("+tla", "+cf", str(pki.ca)),
        "another CA": tls_options(pki.rogue_key, pki.rogue_cert, pki.ca),
        "no TLS": (),
    }[client]
    result = dcmtk("storescu", node.port, *options)
    assert result.returncode != 0
    assert node.stored() == 0
    assert not any(node.settings.storage.spool.iterdir())
    events = wait_for(lambda: node.audit, timeout=10, what="the audit line")
    assert [(e["event"], e["outcome"]) for e in events] == [("tls_handshake", "rejected")]
    assert str(events[0]["reason"]).startswith("TLS handshake failed")
    assert events[0]["peer_address"] == "127.0.0.1"


def test_our_sender_without_a_valid_certificate_is_refused(pki: Pki, node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(**tls_settings(pki))
    rogue = Settings(tls_cert=pki.rogue_cert, tls_key=pki.rogue_key, tls_ca=pki.ca)
    destination = Destination("DEEPCOVID", "127.0.0.1", node.port)
    tls = rogue.tls.client_context()
    sender = Sender(destination, calling_ae="TESTSCU", tls=tls, max_attempts=1)
    assert not sender.send_files([FILE]).ok
    assert node.stored() == 0


def test_tls_client_certificate_may_be_optional(pki: Pki, node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(**tls_settings(pki, tls_require_client_cert=False))
    result = dcmtk("storescu", node.port, "+tla", "+cf", str(pki.ca))
    assert result.returncode == 0, result.stderr
    assert node.stored() == 1


def test_a_stalled_handshake_does_not_hold_up_other_clients(pki: Pki, node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(**tls_settings(pki))
    with socket.create_connection(("127.0.0.1", node.port)):  # connects, never says a word
        result = dcmtk("storescu", node.port, *tls_options(pki.client_key, pki.client_cert, pki.ca))
        assert result.returncode == 0, result.stderr
    assert node.stored() == 1


def _tls_store_scp(pki: Pki) -> tuple[AE, object, list[str]]:
    """A pynetdicom Storage SCP that speaks DICOM TLS only and requires a client certificate."""
    received: list[str] = []

    def on_store(event: Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.load_verify_locations(pki.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ae = AE(ae_title="PACS")
    ae.supported_contexts = StoragePresentationContexts
    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        ssl_context=ctx,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    return ae, server, received


def test_results_are_delivered_over_tls_when_destination_tls_is_set(
    pki: Pki, tmp_path: Path
) -> None:
    ae, server, received = _tls_store_scp(pki)
    try:
        port = server.server_address[1]  # type: ignore[attr-defined]
        url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
        upgrade(url)
        store = JobStore(url)
        ds = dcmread(FILE)
        outbox = Outbox(store)
        for name in ("plain", "tls"):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            path = tmp_path / f"{name}.dcm"
            ds.save_as(path, enforce_file_format=True)
            job = store.record_received(
                sop_instance_uid=generate_uid(),
                sop_class_uid=str(ds.SOPClassUID),
                study_instance_uid=str(ds.StudyInstanceUID),
                series_instance_uid=str(ds.SeriesInstanceUID),
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                calling_ae="TEST",
                spool_path=str(path),
                sha256="0" * 64,
                size_bytes=1,
            ).job_id
            result = NewResult(
                "sr",
                str(ds.SOPInstanceUID),
                str(ds.SOPClassUID),
                str(ds.SeriesInstanceUID),
                str(ds.StudyInstanceUID),
                str(path),
            )
            outbox.add(job, [result], model_version="v1", destination=f"PACS@127.0.0.1:{port}")
            common = {"data_dir": tmp_path / "data", "delivery_verify": False}
            common |= {"tls_cert": pki.client_cert, "tls_key": pki.client_key, "tls_ca": pki.ca}
            settings = Settings(**common, destination_tls=(name == "tls"))  # type: ignore[arg-type]
            stored = deliver_due(outbox, settings, job_id=job)
            row = outbox.for_job(job)[0]
            if name == "plain":  # the destination speaks TLS only: nothing gets through
                assert stored == 0 and row.delivery_state == "pending" and row.last_error
            else:
                assert stored == 1 and row.delivery_state == "sent", row
        assert received == [str(ds.SOPInstanceUID)]
        store.engine.dispose()
    finally:
        ae.shutdown()


# --- real processes: no patient data in logs, owner-only files ------------------------------
PATIENT_NAME = "Zyxwvutsr^Qwertyuiopa"
PATIENT_ID = "PID8675309XQ"
BIRTH_DATE = "19230417"
SECRETS = ("Zyxwvutsr", "Qwertyuiopa", PATIENT_ID, BIRTH_DATE, "1923-04-17")


def phi_instances(out: Path) -> list[Path]:
    """One analysable chest X-ray and one lateral view (the gate rejects it), same patient."""
    out.mkdir()
    pixels = load_cxr(COVID_IMAGE)
    paths = []
    study = generate_uid()
    for name, view in (("frontal", "PA"), ("lateral", "LL")):
        ds = wrap_pixels(
            pixels,
            view_position=view,
            patient_name=PATIENT_NAME,
            patient_id=PATIENT_ID,
            study_instance_uid=study,
        )
        ds.PatientBirthDate = BIRTH_DATE
        ds.OtherPatientIDs = PATIENT_ID
        path = out / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def owner_only(root: Path) -> list[str]:
    """Paths under ``root`` (itself included) whose mode is not 0700 (folder) / 0600 (file)."""
    loose = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        expected = 0o700 if path.is_dir() else 0o600
        if mode != expected:
            loose.append(f"{path.relative_to(root.parent)} {mode:o}")
    return loose


def test_patient_data_stays_out_of_logs_and_files_are_owner_only(
    pki: Pki, settings_env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    env = {
        **settings_env,
        "DEEPCOVID_LOG_LEVEL": "DEBUG",
        "DEEPCOVID_TLS_CERT": str(pki.server_cert),
        "DEEPCOVID_TLS_KEY": str(pki.server_key),
        "DEEPCOVID_TLS_CA": str(pki.ca),
    }
    port = int(env["DEEPCOVID_PORT"])
    data = Path(env["DEEPCOVID_DATA_DIR"])
    client = tls_options(pki.client_key, pki.client_cert, pki.ca)
    node = ServiceProcess(["node"], env, tmp_path / "node.out").start()
    services.append(node)

    def echo() -> bool:
        assert node.proc is not None and node.proc.poll() is None, node.output()
        return dcmtk("echoscu", port, *client, aet="ECHOSCU").returncode == 0

    wait_for(echo, timeout=90, what="the node to answer C-ECHO over TLS")
    services.append(ServiceProcess(["worker"], env, tmp_path / "worker.out").start())
    files = phi_instances(tmp_path / "send")
    res = subprocess.run(
        ["storescu", "-aec", "DEEPCOVID", *client, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    store = JobStore(f"sqlite:///{data / 'jobs.sqlite'}")
    wait_for(
        lambda: store.counts() == {"delivered": 1, "rejected": 1},
        timeout=240,
        what="one job delivered (results folder) and one rejected by the gate",
    )
    for svc in services:
        svc.stop()  # flush and close every log before reading them

    texts: dict[str, str] = {}
    for path in (data / "logs").rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_text(errors="replace")
    texts["node output"] = node.output()
    texts["worker output"] = services[1].output()
    for job in store.list(limit=10):
        texts[f"job {job.id} reason"] = job.reason or ""
        for event in store.events(job.id):
            texts[f"job {job.id} event {event.state}"] = event.message or ""
        for row in Outbox(store).for_job(job.id):
            texts[f"result {row.id} error"] = row.last_error or ""
    assert {"node.log", "worker.log", "audit.log"} <= {Path(k).name for k in texts}
    assert any("lateral views are not analysed" in t for t in texts.values())  # the gate spoke
    leaks = [(where, s) for where, text in texts.items() for s in SECRETS if s in text]
    assert not leaks, leaks

    spooled = list((data / "spool").glob("*.dcm"))
    results = list((data / "results").rglob("*.dcm"))
    assert len(spooled) == 2 and results, "both instances spooled, the analysed one has results"
    assert all(PATIENT_ID.encode() in f.read_bytes() for f in spooled)  # the values were there
    for path in (data / "spool", data / "results", data / "logs", data / "jobs.sqlite"):
        assert not owner_only(path), owner_only(path)


def test_deepcovid_send_tls_option(
    pki: Pki,
    node_factory,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    """``deepcovid send --tls`` uses the settings' certificate and trusts the settings' CA."""
    from common.settings import get_settings
    from deepcovid.cli import main

    node = node_factory(**tls_settings(pki))
    monkeypatch.setenv("DEEPCOVID_TLS_CERT", str(pki.client_cert))
    monkeypatch.setenv("DEEPCOVID_TLS_KEY", str(pki.client_key))
    monkeypatch.setenv("DEEPCOVID_TLS_CA", str(pki.ca))
    get_settings.cache_clear()
    try:
        to = f"DEEPCOVID@127.0.0.1:{node.port}"
        assert (
            main(["send", str(FILE), "--to", to, "--calling-ae", "TESTSCU", "--attempts", "1"]) == 1
        ), "plain TCP refused"
        assert node.stored() == 0
        assert main(["send", str(FILE), "--to", to, "--calling-ae", "TESTSCU", "--tls"]) == 0
        assert node.stored() == 1
    finally:
        get_settings.cache_clear()
