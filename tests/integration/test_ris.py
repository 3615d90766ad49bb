"""RIS notification end to end: real MLLP and FHIR receivers on loopback, the real outbox.

The receivers (``tests.harness.ris``) judge each message with the reference libraries: the MLLP
listener parses it strictly as an HL7 v2.5.1 ORU^R01 with hl7apy and answers AA or AE (with the
reason); the FHIR endpoint validates the Bundle with fhir.resources and answers 200 or 400. A
study result is queued with :func:`worker.notify.queue_notifications` (as the study-level result
does) and delivered by the delivery loop (:mod:`worker.delivery`), which checks the ACK / status.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hl7apy.parser import parse_message

from common.settings import Settings
from ris import fhir_http, mllp
from ris.errors import RisRefused, RisUnavailable
from ris.fhir import build_bundle, to_json
from ris.hl7 import Parties, build_oru, control_id
from ris.outcome import ImageOutcome
from store import JobState, JobStore
from store.migrate import upgrade
from store.outbox import NewResult, Outbox
from tests.harness.factories import record_job
from tests.harness.net import free_port, wait_for
from tests.harness.ris import FhirReceiver, MllpReceiver, study_outcome
from worker import delivery
from worker.notify import FHIR_KIND, HL7_KIND, queue_notifications

PATIENT_ID = "PAT-RIS-5519"
PATIENT_NAME = "Testperson^Rita"
RIS_DOWN_S = 120
"""How long the RIS is unreachable in the outage test (the issue's two minutes)."""

OUTCOME = study_outcome(
    study_instance_uid="1.2.3",  # the study of tests.harness.factories.record_job
    accession_number="ACC-77",
    patient_id=PATIENT_ID,
    patient_name=PATIENT_NAME,
    patient_birth_date="19700101",
    probability=0.81,
    operating_point="paper",
    model_version="v-test",
    images=(ImageOutcome("1.2.3.4.5", "1.2.3.4", "present", 0.81, None),),
    sr_sop_instance_uid="1.2.826.0.1.3680043.8.498.77",
    kos_sop_instance_uid="1.2.826.0.1.3680043.8.498.78",
    issued=dt.datetime(2026, 12, 6, 18, 0, tzinfo=dt.UTC),
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade(url)
    store = JobStore(url)
    yield store
    store.engine.dispose()


@pytest.fixture
def receivers() -> Iterator[tuple[MllpReceiver, FhirReceiver]]:
    hl7, fhir = MllpReceiver().start(), FhirReceiver().start()
    yield hl7, fhir
    hl7.stop()
    fhir.stop()


@pytest.fixture(scope="module")
def receiver_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (also the sender's trust anchor) and its key."""
    assert shutil.which("openssl"), "the openssl command is not installed"
    d = tmp_path_factory.mktemp("ris-pki")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", "ris.key", "-out", "ris.crt", "-subj", "/CN=ris",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        cwd=d, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return d / "ris.crt", d / "ris.key"


def _study_result(store: JobStore, tmp_path: Path, uid: str = "1.2.826.0.99.1") -> int:
    """A job whose study SR is in the outbox (kept), as the study-level result leaves it."""
    job = record_job(store, uid)
    store.set_state(job, JobState.RESULTS_BUILT)
    sr = tmp_path / "sr.dcm"
    sr.write_bytes(b"stand-in")
    Outbox(store).add(
        job,
        [
            NewResult(
                "study_sr",
                OUTCOME.sr_sop_instance_uid,
                "1.2.840.10008.5.1.4.1.1.88.22",
                "1.2.3.9",
                "1.2.3",
                str(sr),
            )
        ],
        model_version="v-test",
        destination=None,
    )
    return job


def _ris_rows(outbox: Outbox, job: int) -> list:
    return [r for r in outbox.for_job(job) if r.kind in {HL7_KIND, FHIR_KIND}]


# --- the senders against the receivers --------------------------------------------------------


def test_mllp_send_gets_aa_for_a_valid_oru_and_ae_with_the_reason_for_a_malformed_one(
    receivers: tuple[MllpReceiver, FhirReceiver],
) -> None:
    hl7, _ = receivers
    address = mllp.MllpAddress.parse(hl7.url)
    message = build_oru(OUTCOME, message_control_id=control_id(OUTCOME), parties=Parties())
    ack = mllp.send(address, message, control_id=control_id(OUTCOME), timeout_s=5)
    assert ack.code == "AA" and ack.control_id == control_id(OUTCOME)
    assert hl7.received.accepted == [message]
    broken = "\r".join(s for s in message.split("\r") if not s.startswith("OBR"))
    with pytest.raises(RisRefused, match=r"answered AE: .+"):
        mllp.send(address, broken, control_id=control_id(OUTCOME), timeout_s=5)
    assert len(hl7.received.accepted) == 1


def test_mllp_unreachable_or_silent_is_worth_retrying() -> None:
    closed = mllp.MllpAddress("127.0.0.1", free_port())
    with pytest.raises(RisUnavailable):
        mllp.send(closed, "MSH|^~\\&|X", control_id="1", timeout_s=2)
    silent = MllpReceiver().start()
    silent.silent = True
    try:
        with pytest.raises(RisUnavailable, match=r"[Tt]ime"):
            mllp.send(
                mllp.MllpAddress.parse(silent.url), "MSH|^~\\&|X", control_id="1", timeout_s=0.5
            )
    finally:
        silent.stop()


def test_fhir_post_is_accepted_refused_with_the_reason_or_retried(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    good = FhirReceiver(token="s3cret-token").start()
    busy = FhirReceiver(status=503).start()
    try:
        body = to_json(build_bundle(OUTCOME))
        endpoint = fhir_http.FhirEndpoint.parse(good.url)
        assert fhir_http.post_bundle(endpoint, body, timeout_s=5, token_file=token) == 200
        assert len(good.received.accepted) == 1
        assert good.headers[0]["Content-Type"].startswith("application/fhir+json")
        with pytest.raises(RisRefused, match="HTTP 401: bearer token"):
            fhir_http.post_bundle(endpoint, body, timeout_s=5)
        bad = json.loads(body)
        del bad["entry"][1]["resource"]["code"]
        with pytest.raises(RisRefused, match=r"HTTP 400: invalid Bundle"):
            fhir_http.post_bundle(endpoint, json.dumps(bad).encode(), timeout_s=5, token_file=token)
        with pytest.raises(RisUnavailable, match="HTTP 503"):
            fhir_http.post_bundle(fhir_http.FhirEndpoint.parse(busy.url), body, timeout_s=5)
        closed = fhir_http.FhirEndpoint.parse(f"fhir+http://127.0.0.1:{free_port()}/fhir")
        with pytest.raises(RisUnavailable):
            fhir_http.post_bundle(closed, body, timeout_s=2)
    finally:
        good.stop()
        busy.stop()


# --- through the outbox ----------------------------------------------------------------------


def test_a_study_result_reaches_both_riss_exactly_once_and_logs_name_no_patient(
    receivers: tuple[MllpReceiver, FhirReceiver],
    store: JobStore,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    hl7, fhir = receivers
    settings = Settings(data_dir=tmp_path / "data", destination=f"{hl7.url},{fhir.url}")
    job = _study_result(store, tmp_path)
    assert queue_notifications(store, OUTCOME, settings) == 2
    assert queue_notifications(store, OUTCOME, settings) == 0  # idempotent
    outbox = Outbox(store)
    rows = _ris_rows(outbox, job)
    assert sorted((r.kind, r.destination) for r in rows) == sorted(
        [(HL7_KIND, hl7.url), (FHIR_KIND, fhir.url)]
    )
    for row in rows:
        path = Path(row.path)
        assert path.parent == settings.storage.results / OUTCOME.study_instance_uid
        assert path.stat().st_mode & 0o777 == 0o600
    assert delivery.deliver_due(outbox, settings) == 2
    assert {r.delivery_state for r in _ris_rows(outbox, job)} == {"sent"}
    assert delivery.deliver_due(outbox, settings) == 0
    assert queue_notifications(store, OUTCOME, settings) == 0
    assert delivery.deliver_due(outbox, settings) == 0
    assert len(hl7.received.accepted) == 1 and len(fhir.received.accepted) == 1
    msg = parse_message(hl7.received.accepted[0], find_groups=True)
    pid = msg.oru_r01_patient_result.oru_r01_patient.pid
    assert pid.pid_3.cx_1.to_er7() == PATIENT_ID  # the identifiers travel in the message
    order = msg.oru_r01_patient_result.oru_r01_order_observation
    assert order.obr.obr_25.to_er7() == "F"
    report = next(
        e["resource"]
        for e in json.loads(fhir.received.accepted[0])["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    assert report["status"] == "final"
    assert store.get(job).state == JobState.DELIVERED  # type: ignore[union-attr]

    replacement = dataclasses.replace(
        OUTCOME,
        finding="absent",
        probability=0.2,
        sr_sop_instance_uid="1.2.826.0.1.3680043.8.498.79",
        replaces_sr_sop_instance_uid=OUTCOME.sr_sop_instance_uid,
    )
    assert queue_notifications(store, replacement, settings) == 2
    assert delivery.deliver_due(outbox, settings) == 2
    assert len(hl7.received.accepted) == 2 and len(fhir.received.accepted) == 2
    corrected = parse_message(hl7.received.accepted[1], find_groups=True)
    assert corrected.oru_r01_patient_result.oru_r01_order_observation.obr.obr_25.to_er7() == "C"
    assert '"status": "corrected"' in fhir.received.accepted[1]

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert OUTCOME.study_instance_uid in logged or "RIS message" in logged
    assert PATIENT_ID not in logged and "Testperson" not in logged and "ACC-77" not in logged


def test_a_naive_result_time_is_taken_as_utc_and_a_bad_message_leaves_the_other(
    receivers: tuple[MllpReceiver, FhirReceiver], store: JobStore, tmp_path: Path
) -> None:
    """SQLite hands the study result's time back without a zone; the store keeps UTC."""
    hl7, fhir = receivers
    settings = Settings(data_dir=tmp_path / "data", destination=f"{hl7.url},{fhir.url}")
    job = _study_result(store, tmp_path)
    naive = dataclasses.replace(
        OUTCOME, issued=OUTCOME.issued.replace(tzinfo=None), operating_point="x" * 300
    )  # too long for an HL7 ST: no ORU^R01, the Bundle still goes
    assert queue_notifications(store, naive, settings) == 1
    (row,) = _ris_rows(Outbox(store), job)
    assert row.kind == FHIR_KIND
    assert json.loads(Path(row.path).read_bytes())["timestamp"] == "2026-12-06T18:00:00+00:00"


def test_mllp_over_tls_and_fhir_over_https_verify_the_receivers_certificate(
    store: JobStore, tmp_path: Path, receiver_cert: tuple[Path, Path]
) -> None:
    cert, key = receiver_cert
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    hl7, fhir = MllpReceiver(tls=server).start(), FhirReceiver(tls=server).start()
    try:
        trusting = Settings(
            data_dir=tmp_path / "data",
            destinations=[{"url": hl7.url, "tls": True, "ca": cert}, {"url": fhir.url, "ca": cert}],
        )
        job = _study_result(store, tmp_path)
        assert queue_notifications(store, OUTCOME, trusting) == 2
        outbox = Outbox(store)
        assert delivery.deliver_due(outbox, trusting) == 2
        assert len(hl7.received.accepted) == 1 and len(fhir.received.accepted) == 1
        # The same receivers, not trusted (the system's CAs): nothing is sent in the clear.
        untrusting = Settings(
            data_dir=tmp_path / "data",
            destinations=[{"url": hl7.url, "tls": True}, {"url": fhir.url}],
        )
        replacement = dataclasses.replace(
            OUTCOME,
            sr_sop_instance_uid="1.2.826.0.1.3680043.8.498.80",
            replaces_sr_sop_instance_uid=OUTCOME.sr_sop_instance_uid,
        )
        assert queue_notifications(store, replacement, untrusting) == 2
        assert delivery.deliver_due(outbox, untrusting) == 0
        waiting = [r for r in _ris_rows(outbox, job) if r.delivery_state == "pending"]
        assert len(waiting) == 2
        assert all("CERTIFICATE_VERIFY_FAILED" in (r.last_error or "") for r in waiting), waiting
        assert len(hl7.received.accepted) == 1 and len(fhir.received.accepted) == 1
    finally:
        hl7.stop()
        fhir.stop()


def test_doctor_reaches_each_ris_without_sending_a_report(tmp_path: Path) -> None:
    from deepcovid.doctor import check_ris

    token = tmp_path / "token"
    token.write_text("t0ken")
    hl7, fhir = MllpReceiver().start(), FhirReceiver(token="t0ken").start()
    try:
        assert check_ris(Settings(data_dir=tmp_path, destination="PACS@127.0.0.1:104")) is None
        settings = Settings(
            data_dir=tmp_path,
            destination=hl7.url,
            destinations=[{"url": fhir.url, "token_file": token}],
        )
        finding = check_ris(settings)
        assert finding is not None and finding.level == "ok", finding
        assert "accepts connections" in finding.detail and "FHIR 4.0.1" in finding.detail
        fhir.fhir_version = "5.0.0"
        finding = check_ris(settings)
        assert finding is not None and finding.failed and "not R4" in finding.detail
        fhir.fhir_version = "4.0.1"
        hl7.stop()
        finding = check_ris(settings)
        assert finding is not None and finding.failed and hl7.url in finding.detail
        assert "t0ken" not in finding.detail + finding.fix
        assert hl7.received.accepted == [] and fhir.received.accepted == []
    finally:
        hl7.stop()
        fhir.stop()


def test_a_lost_answer_resends_the_same_message_the_receiver_can_recognise(
    receivers: tuple[MllpReceiver, FhirReceiver], store: JobStore, tmp_path: Path
) -> None:
    """The one duplicate the outbox cannot prevent: the RIS took the message, its answer was
    lost. The resend carries the same MSH-10 and the same conditional FHIR requests."""
    hl7, fhir = receivers
    hl7.lose_answers = fhir.lose_answers = 1
    settings = Settings(
        data_dir=tmp_path / "data", destination=f"{hl7.url},{fhir.url}", delivery_backoff_s=0.01
    )
    job = _study_result(store, tmp_path)
    assert queue_notifications(store, OUTCOME, settings) == 2
    outbox = Outbox(store)
    assert delivery.deliver_due(outbox, settings) == 0
    assert {r.delivery_state for r in _ris_rows(outbox, job)} == {"pending"}
    time.sleep(0.1)
    assert delivery.deliver_due(outbox, settings) == 2
    assert [r.attempts for r in _ris_rows(outbox, job)] == [2, 2]
    first, second = hl7.received.accepted
    assert first == second  # the same MSH-10: a receiver drops the duplicate by it
    assert parse_message(first).msh.msh_10.to_er7() == control_id(OUTCOME)
    assert fhir.received.accepted[0] == fhir.received.accepted[1]
    requests = [e["request"] for e in json.loads(fhir.received.accepted[0])["entry"]]
    assert [r["method"] for r in requests] == ["POST", "PUT", "PUT"]
    assert "ifNoneExist" in requests[0]  # the Patient: created only if none has the identifier


def test_no_ris_configured_writes_and_queues_nothing(store: JobStore, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", destination="PACS@127.0.0.1:104")
    job = _study_result(store, tmp_path)
    assert queue_notifications(store, OUTCOME, settings) == 0
    assert _ris_rows(Outbox(store), job) == []
    assert not (settings.storage.results / OUTCOME.study_instance_uid).exists()


def test_a_message_the_ris_refuses_is_failed_at_once_with_its_reason(
    receivers: tuple[MllpReceiver, FhirReceiver], store: JobStore, tmp_path: Path
) -> None:
    hl7, _ = receivers
    settings = Settings(data_dir=tmp_path / "data", destination=hl7.url)
    job = _study_result(store, tmp_path)
    assert queue_notifications(store, OUTCOME, settings) == 1
    outbox = Outbox(store)
    (row,) = _ris_rows(outbox, job)
    # Malformed on the way (an OBR lost): the listener's hl7apy parse refuses it with AE.
    message = Path(row.path).read_bytes().decode()
    kept = [s for s in message.split("\r") if not s.startswith("OBR")]
    Path(row.path).write_bytes("\r".join(kept).encode())
    assert delivery.deliver_due(outbox, settings) == 0
    (row,) = _ris_rows(outbox, job)
    assert row.delivery_state == "failed" and row.attempts == 1
    assert "answered AE" in (row.last_error or "") and "refused" in (row.last_error or "")
    assert hl7.received.accepted == [] and len(hl7.received.answers) == 1


@pytest.mark.slow
def test_a_ris_unreachable_for_two_minutes_gets_each_message_once_after(
    store: JobStore, tmp_path: Path
) -> None:
    hl7 = MllpReceiver()
    fhir = FhirReceiver()  # ports reserved, nothing listening yet: connections are refused
    settings = Settings(
        data_dir=tmp_path / "data",
        destination=f"{hl7.url},{fhir.url}",
        delivery_backoff_s=1.0,  # 1, 2, 4 ... 64 s: several attempts in the two minutes
        ris_timeout_s=5.0,
    )
    job = _study_result(store, tmp_path)
    assert queue_notifications(store, OUTCOME, settings) == 2
    outbox = Outbox(store)
    stop = delivery.start_dispatcher(outbox, settings, interval_s=0.5)
    try:
        time.sleep(RIS_DOWN_S)
        rows = _ris_rows(outbox, job)
        assert {r.delivery_state for r in rows} == {"pending"}, rows
        assert all(r.attempts >= 3 for r in rows), [r.attempts for r in rows]
        assert all(r.last_error for r in rows)
        hl7.start()
        fhir.start()
        wait_for(
            lambda: {r.delivery_state for r in _ris_rows(outbox, job)} == {"sent"},
            timeout=150,
            what="both RIS messages delivered after the outage",
        )
        time.sleep(3)  # a few more dispatcher rounds: nothing is sent again
    finally:
        stop.set()
        hl7.stop()
        fhir.stop()
    assert len(hl7.received.accepted) == 1 and len(fhir.received.accepted) == 1
    assert len(hl7.received.answers) == 1
