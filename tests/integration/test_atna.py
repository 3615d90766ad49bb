"""ATNA audit messages reach a real syslog collector, over UDP, TCP and TLS.

The collector is a small server started here on a free loopback port: it reads RFC 5426
datagrams, or RFC 6587/5425 octet-counted frames over TCP or TLS (certificate made with the
``openssl`` CLI). Every message it gets is checked against RFC 5424's header and validated
against the A.5.1 schema (``docs/schemas/dicom-audit-message.rng``).

End to end: a listener recording to a syslog collector sends User Authentication messages for
an accepted and a refused association and a DICOM Instances Transferred message for an instance
it stored (Study Instance UID and Patient ID; the Patient Name of the instance appears in no
message); result delivery sends one per study; the operator console's logins (accepted and
refused), logout and actions arrive as User Authentication, DICOM Instances Accessed and
Security Alert messages. The JSON audit log gets the same decisions as before.
"""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import audit
from audit import events
from audit.sinks.json_log import read_events
from audit.sinks.syslog import SyslogSink
from common.settings import Settings
from common.syslog import SyslogSender
from common.tls import client_context
from dicom_client.scu import SendReport, SendResult
from dicom_node.scp import start_server
from store import JobState, JobStore
from store.migrate import upgrade
from store.outbox import NewResult, Outbox
from tests.harness.factories import DICOM_DIR
from tests.harness.net import wait_for
from worker import delivery
from worker.destinations import dimse

REPO = Path(__file__).resolve().parents[2]
SCHEMA = etree.RelaxNG(etree.parse(str(REPO / "docs" / "schemas" / "dicom-audit-message.rng")))
FILE = DICOM_DIR / "nih_chestxray_DX_nhsx_test.dcm"
HEADER = re.compile(
    rb"^<85>1 \S+Z \S+ deepcovid \d+ DICOM\+RFC3881 - \xef\xbb\xbf(?P<xml><\?xml .*)$", re.DOTALL
)


class Collector:
    """A syslog collector on 127.0.0.1: UDP datagrams or octet-counted TCP/TLS frames."""

    def __init__(self, protocol: str, ssl_context: ssl.SSLContext | None = None) -> None:
        self.protocol = protocol
        self.ssl_context = ssl_context
        self.messages: list[bytes] = []
        kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        if protocol != "udp":
            self.sock.listen()
        self.sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                if self.protocol == "udp":
                    self.messages.append(self.sock.recv(70_000))
                    continue
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._read_stream, args=(conn,), daemon=True).start()

    def _read_stream(self, conn: socket.socket) -> None:
        if self.ssl_context is not None:
            conn.settimeout(10)
            try:
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                return
        conn.settimeout(0.2)
        buffer = b""
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except (TimeoutError, ssl.SSLWantReadError):
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while (space := buffer.find(b" ")) > 0 and len(buffer) >= space + 1 + int(
                    buffer[:space]
                ):
                    length = int(buffer[:space])
                    self.messages.append(buffer[space + 1 : space + 1 + length])
                    buffer = buffer[space + 1 + length :]

    def documents(self) -> list[etree._Element]:
        """Every message as XML, each checked against RFC 5424 and the A.5.1 schema."""
        docs = []
        for message in list(self.messages):
            match = HEADER.match(message)
            assert match, message[:120]
            doc = etree.fromstring(match["xml"])
            assert SCHEMA.validate(doc), SCHEMA.error_log
            docs.append(doc)
        return docs

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def event_of(doc: etree._Element) -> tuple[str, str]:
    event = doc.find("EventIdentification")
    return event.find("EventID").get("csd-code"), event.get("EventOutcomeIndicator")


@pytest.fixture(scope="module")
def collector_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (also the client's trust anchor) and its key."""
    assert shutil.which("openssl"), "the openssl command is not installed"
    d = tmp_path_factory.mktemp("syslog-pki")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", "collector.key", "-out", "collector.crt", "-subj", "/CN=collector",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        cwd=d, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return d / "collector.crt", d / "collector.key"


@pytest.fixture
def collectors() -> Iterator[list[Collector]]:
    made: list[Collector] = []
    yield made
    for c in made:
        c.close()


@pytest.mark.parametrize("protocol", ["udp", "tcp", "tls"])
def test_messages_reach_the_collector(
    protocol: str, collector_cert: tuple[Path, Path], collectors: list[Collector], tmp_path: Path
) -> None:
    server_ctx = None
    if protocol == "tls":
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(*collector_cert)
    collector = Collector(protocol, server_ctx)
    collectors.append(collector)
    sink = SyslogSink(
        "127.0.0.1",
        collector.port,
        protocol,  # type: ignore[arg-type]
        ae_title="DEEPCOVID",
        ssl_context=client_context(cert=None, key=None, ca=collector_cert[0]),
    )
    sender = sink.sender
    recorder = audit.Recorder([sink])
    for i in range(20):
        peer = {"calling_ae": f"AE{i}", "called_ae": "DEEPCOVID", "peer_address": "10.0.0.1"}
        recorder.record(
            events.AssociationAccepted(**peer, peer_port=None)
            if i % 2 == 0
            else events.AssociationRejected(**peer, peer_port=None, reason="host not allowed")
        )
    recorder.close()
    wait_for(lambda: len(collector.messages) == 20, timeout=10, what="20 messages")
    docs = collector.documents()
    users = [d.find("ActiveParticipant").get("UserID") for d in docs]
    assert users == [f"AE{i}" for i in range(20)]
    assert sender.sent == 20 and sender.dropped == 0


def test_tls_refuses_a_collector_it_cannot_verify(
    collector_cert: tuple[Path, Path], collectors: list[Collector], tmp_path: Path
) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(*collector_cert)
    collector = Collector("tls", server_ctx)
    collectors.append(collector)
    # No CA given: the system's CAs do not know the collector's self-signed certificate.
    system_cas = client_context(cert=None, key=None, ca=None)
    sender = SyslogSender("127.0.0.1", collector.port, "tls", ssl_context=system_cas)
    sender.send(b"<85>1 - - - - - - x")
    assert not sender.flush(timeout_s=1.5), "nothing may go to an unverified collector"
    sender.close(timeout_s=0.1)
    assert collector.messages == []


def test_messages_wait_while_the_collector_is_down(collectors: list[Collector]) -> None:
    port_holder = socket.socket()
    port_holder.bind(("127.0.0.1", 0))
    port = port_holder.getsockname()[1]
    port_holder.close()  # nothing listens on the port yet
    sender = SyslogSender("127.0.0.1", port, "tcp", max_backoff_s=0.5)
    for i in range(3):
        sender.send(f"<85>1 - - - - - - m{i}".encode())
    time.sleep(1.0)
    collector = Collector.__new__(Collector)
    collector.protocol, collector.ssl_context, collector.messages = "tcp", None, []
    collector.sock = socket.socket()
    collector.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    collector.sock.bind(("127.0.0.1", port))
    collector.port = port
    collector.sock.listen()
    collector.sock.settimeout(0.2)
    collector._stop = threading.Event()
    collector._thread = threading.Thread(target=collector._serve, daemon=True)
    collector._thread.start()
    collectors.append(collector)
    assert sender.flush(timeout_s=10)
    sender.close()
    wait_for(lambda: len(collector.messages) == 3, timeout=10, what="queued messages")
    assert [m[-2:] for m in collector.messages] == [b"m0", b"m1", b"m2"]


# --- end to end ------------------------------------------------------------------------------
def dcmtk(tool: str, port: int, *args: str, aet: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which(tool), "dcmtk is not installed (apt-get install -y dcmtk)"
    return subprocess.run(
        [tool, "-aet", aet, "-aec", "DEEPCOVID", "-to", "10", "127.0.0.1", str(port), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def configured(collectors: list[Collector], tmp_path: Path) -> Iterator[tuple[Collector, Path]]:
    """This process records to a UDP collector and a JSON log, as ``deepcovid node`` does."""
    collector = Collector("udp")
    collectors.append(collector)
    log_dir = tmp_path / "logs"
    audit.configure(
        audit.open_recorder(
            ae_title="DEEPCOVID",
            log_dir=log_dir,
            syslog_host="127.0.0.1",
            syslog_port=collector.port,
            syslog_protocol="udp",
        )
    )
    yield collector, log_dir
    audit.close()


def test_listener_audits_associations_and_received_instances(
    configured: tuple[Collector, Path], tmp_path: Path
) -> None:
    collector, log_dir = configured
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade(url)
    store = JobStore(url)
    settings = Settings(
        data_dir=tmp_path / "data",
        bind_address="127.0.0.1",
        port=0,
        min_free_space_mb=1,
        database_url=url,
        allowed_calling_aes=["STORESCU", "ECHOSCU"],
    )
    sent = dcmread(FILE)
    sent.PatientName, sent.PatientID = "Zyxwvut^Quuxley", "PID-ATNA-1"
    sent.save_as(tmp_path / "chest.dcm")
    listener = start_server(settings, store=store, enqueue=lambda job_id: None)
    try:
        port = listener.address[1]
        assert dcmtk("echoscu", port, aet="ECHOSCU").returncode == 0
        assert dcmtk("echoscu", port, aet="INTRUDER").returncode != 0
        assert dcmtk("storescu", port, str(tmp_path / "chest.dcm"), aet="STORESCU").returncode == 0
        wait_for(lambda: len(collector.messages) >= 4, timeout=10, what="4 audit messages")
    finally:
        listener.shutdown()
        store.engine.dispose()
    docs = collector.documents()
    events = sorted(event_of(d) for d in docs)
    assert events == [("110104", "0"), ("110114", "0"), ("110114", "0"), ("110114", "4")]
    (received,) = [d for d in docs if event_of(d)[0] == "110104"]
    study, patient = received.findall("ParticipantObjectIdentification")
    assert study.get("ParticipantObjectID") == sent.StudyInstanceUID
    assert patient.get("ParticipantObjectID") == "PID-ATNA-1"
    assert received.find("EventIdentification").get("EventActionCode") == "C"
    source = received.find("ActiveParticipant")
    assert (source.get("UserID"), source.get("NetworkAccessPointID")) == ("STORESCU", "127.0.0.1")
    everything = b"".join(collector.messages)
    assert b"Zyxwvut" not in everything and b"Quuxley" not in everything, "no Patient Name"
    (refused,) = [d for d in docs if event_of(d) == ("110114", "4")]
    assert refused.findtext("EventIdentification/EventOutcomeDescription") == (
        "calling AE title not allowed"
    )
    # The JSON audit log has the three association decisions (no transfer: no patient data).
    assert [e["outcome"] for e in read_events(log_dir / "audit.log")] == [
        "accepted",
        "rejected",
        "accepted",
    ]


class FakeSender:
    """Stands in for the C-STORE sender: every file is stored."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def send_files(self, paths: list[str]) -> SendReport:
        return SendReport(results=[SendResult(item=p, status=0) for p in paths])


def result_file(path: Path, study: str, sop_class: str) -> Path:
    ds = Dataset()
    ds.PatientName, ds.PatientID = "Doe^Jane", "PAT-77"
    ds.StudyInstanceUID, ds.SOPClassUID, ds.SOPInstanceUID = study, sop_class, generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def test_delivered_results_are_audited_per_study(
    configured: tuple[Collector, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector, _ = configured
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade(url)
    store = JobStore(url)
    study = generate_uid()
    job = store.record_received(
        sop_instance_uid=generate_uid(), sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
        study_instance_uid=study, series_instance_uid=generate_uid(),
        transfer_syntax_uid=str(ExplicitVRLittleEndian), calling_ae="MODALITY",
        spool_path="/nonexistent", sha256="0" * 64, size_bytes=1,
    ).job_id  # fmt: skip
    store.set_state(job, JobState.RESULTS_BUILT)
    classes = {"sr": "1.2.840.10008.5.1.4.1.1.88.22", "sc": "1.2.840.10008.5.1.4.1.1.7",
               "pm": "1.2.840.10008.5.1.4.1.1.30"}  # fmt: skip
    outbox = Outbox(store)
    series = generate_uid()
    results = [
        NewResult(kind, generate_uid(), uid, series, study, str(tmp_path / f"{kind}.dcm"))
        for kind, uid in classes.items()
    ]
    for r in results:
        result_file(Path(r.path), study, r.sop_class_uid)
    outbox.add(
        job,
        results,
        model_version="v1",
        destination="PACS1@127.0.0.1:104",
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        destination="PACS1@127.0.0.1:104",
        delivery_verify=False,
    )
    monkeypatch.setattr(dimse, "Sender", FakeSender)
    assert delivery.deliver_due(outbox, settings) == 3
    assert store.get(job).state == "delivered"  # type: ignore[union-attr]
    assert audit.current().flush()
    wait_for(lambda: len(collector.messages) == 1, timeout=10, what="one message for the study")
    (doc,) = collector.documents()
    assert event_of(doc) == ("110104", "0")
    assert doc.find("EventIdentification").get("EventActionCode") == "R"
    destination = doc.findall("ActiveParticipant")[1]
    assert (destination.get("UserID"), destination.get("NetworkAccessPointID")) == (
        "PACS1",
        "127.0.0.1",
    )
    study_obj, patient = doc.findall("ParticipantObjectIdentification")
    assert study_obj.get("ParticipantObjectID") == study
    assert sorted(s.get("UID") for s in study_obj.iter("SOPClass")) == sorted(classes.values())
    assert patient.get("ParticipantObjectID") == "PAT-77"
    assert b"Doe" not in collector.messages[0]


# --- the operator console --------------------------------------------------------------------
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def console_login(client: Any, name: str, password: str) -> Any:
    token = CSRF.search(client.get("/login").text)
    assert token
    form = {"username": name, "password": password, "csrf_token": token.group(1), "next": "/"}
    return client.post("/login", data=form)


def test_console_logins_and_actions_reach_the_collector(
    configured: tuple[Collector, Path], tmp_path: Path
) -> None:
    from starlette.testclient import TestClient

    from dicom_node.console.app import console_routes
    from dicom_node.console.context import ConsoleContext
    from dicom_node.ops.health import Readiness
    from dicom_node.ops.server import make_app
    from store.users import Users
    from tests.harness.factories import record_job

    collector, log_dir = configured
    settings = Settings(data_dir=tmp_path / "data", model_registry_dir=tmp_path / "registry")
    upgrade(settings.storage.db_url)
    store = JobStore(settings.storage.db_url)
    Users(store).add("alice", "correct horse battery", "admin")
    job_id = record_job(store, generate_uid())
    store.set_state(job_id, JobState.FAILED, "the model could not be loaded")
    console = ConsoleContext.create(
        settings, store=store, readiness=Readiness({}), enqueue=lambda _: None
    )
    client = TestClient(make_app(console_routes(console)), follow_redirects=False)

    assert console_login(client, "alice", "not the password").status_code == 401
    assert console_login(client, "alice", "correct horse battery").status_code == 303
    token = CSRF.search(client.get(f"/jobs/{job_id}").text)
    assert token
    response = client.post(f"/jobs/{job_id}/reanalyse", data={"csrf_token": token.group(1)})
    assert response.status_code == 303
    client.post("/deliveries/retry-failed", data={"csrf_token": token.group(1)})
    client.post("/logout", data={"csrf_token": token.group(1)})
    store.engine.dispose()

    assert audit.current().flush()
    wait_for(lambda: len(collector.messages) >= 5, timeout=10, what="5 audit messages")
    docs = collector.documents()  # each one RFC 5424 and valid against the A.5.1 schema
    summary = [
        (
            *event_of(d),
            d.findall("EventIdentification/EventTypeCode")[-1].get("csd-code"),
            d.find("ActiveParticipant").get("UserID"),
        )
        for d in docs
    ]
    assert summary == [
        ("110114", "4", "110122", "alice"),  # login refused
        ("110114", "0", "110122", "alice"),  # login
        ("110103", "0", "reanalyse", "alice"),  # DICOM Instances Accessed, on the study
        ("110113", "0", "retry-failed", "alice"),  # Security Alert: restricted function
        ("110114", "0", "110123", "alice"),  # logout
    ]
    refused = docs[0].findtext("EventIdentification/EventOutcomeDescription")
    assert refused == "wrong user name or password"
    accessed = docs[2].find("ParticipantObjectIdentification")
    assert accessed.get("ParticipantObjectID") == "1.2.3"  # the job's Study Instance UID
    assert docs[1].find("ActiveParticipant").get("NetworkAccessPointID") == "testclient"
    # The JSON audit log has the same five, in its own shape.
    assert [(e["event"], e["outcome"]) for e in read_events(log_dir / "audit.log")] == [
        ("login", "rejected"),
        ("login", "accepted"),
        ("action", "accepted"),
        ("action", "accepted"),
        ("logout", "accepted"),
    ]
