"""Stand-in RIS receivers on loopback: an HL7 v2 MLLP listener and a FHIR server endpoint.

Both judge what they receive with the reference libraries, not with the node's own code: the MLLP
listener parses each message strictly with hl7apy, checks it is a valid ORU^R01 (structure and
required fields) and answers AA, or AE with the reason; the FHIR endpoint validates the posted
Bundle with ``fhir.resources`` (R4B models) and answers 200 with a transaction-response Bundle,
or 400 with an OperationOutcome. Each keeps what it accepted, so a test can count deliveries.
Both run in threads of the test process and can be stopped and started again on the same port
(a RIS that is down for a while). :func:`study_outcome` is the sample study result the RIS tests and
benchmark send.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message
from pydantic import ValidationError

from ris.outcome import ImageOutcome, StudyOutcome
from tests.harness.net import free_port

START, END = b"\x0b", b"\x1c\x0d"


@dataclass
class Received:
    """What a receiver was sent: accepted messages, and every answer it gave."""

    accepted: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    accepted_at: list[float] = field(default_factory=list)
    """Wall-clock time (``time.time()``) of each accepted message."""
    lock: threading.Lock = field(default_factory=threading.Lock)


def _ack(message_er7: str, code: str, text: str) -> str:
    """An ACK (hl7apy) answering the message: MSA-1 ``code``, MSA-2 its control ID, MSA-3."""
    first = message_er7.split("\r", 1)[0].split("|")
    control = first[9] if len(first) > 9 else ""
    ack = Message("ACK", version="2.5.1")
    ack.msh.msh_3 = "TESTRIS"
    ack.msh.msh_9 = "ACK^R01^ACK"
    ack.msh.msh_10 = "ACK" + control[:17]
    ack.msh.msh_11 = "P"
    ack.msa.msa_1 = code
    ack.msa.msa_2 = control
    if text:
        ack.msa.msa_3 = "".join(c if c.isalnum() or c in " .,:;-_()'" else " " for c in text)[:80]
    return str(ack.to_er7())


def judge_oru(er7: str) -> str | None:
    """Why ``er7`` is not a valid HL7 v2.5.1 ORU^R01, or None when it is one."""
    try:
        msg = parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        if msg.name != "ORU_R01":
            return f"not an ORU^R01 but {msg.name}"
        if not msg.validate():
            return "does not validate"
        result = msg.oru_r01_patient_result
        order = result.oru_r01_order_observation
        if not order.obr.obr_4.to_er7():
            return "OBR-4 missing"
        if not order.oru_r01_observation:
            return "no OBX"
    except (HL7apyException, AttributeError, IndexError, ValueError) as exc:
        return f"invalid ORU^R01: {exc.__class__.__name__}"
    return None


class MllpReceiver:
    """An MLLP listener answering AA for a valid ORU^R01 and AE (with the reason) otherwise.

    ``answer``: force this code (``"AE"``/``"AR"``) for every message; ``silent``: accept the
    connection and never answer (a hung RIS); ``lose_answers``: take (and keep) that many
    messages, then close the connection instead of answering (the ACK lost on the way);
    ``tls``: a server context (MLLP inside TLS).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        answer: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.port = port or free_port()
        self.answer = answer
        self.tls = tls
        self.silent = False
        self.lose_answers = 0
        self.received = Received()
        self._server: socketserver.ThreadingTCPServer | None = None

    @property
    def url(self) -> str:
        """The destination text of this receiver."""
        return f"mllp://127.0.0.1:{self.port}"

    def start(self) -> MllpReceiver:
        """Listen (again) on the receiver's port."""
        receiver = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                conn.settimeout(10)
                if receiver.tls is not None:
                    try:
                        conn = receiver.tls.wrap_socket(conn, server_side=True)
                    except (ssl.SSLError, OSError):
                        return  # the client refused our certificate
                data = bytearray()
                while True:
                    try:
                        chunk = conn.recv(65536)
                    except (TimeoutError, OSError):
                        return
                    if not chunk:
                        return
                    data += chunk
                    while START in data and END in data:
                        start = data.index(START)
                        end = data.index(END, start)
                        message = data[start + 1 : end].decode("utf-8")
                        del data[: end + len(END)]
                        if receiver.silent:
                            continue
                        answer = receiver._answer(message)
                        with receiver.received.lock:
                            lose = receiver.lose_answers > 0
                            receiver.lose_answers -= lose
                        if lose:
                            return  # taken, but the ACK never reaches the sender
                        conn.sendall(START + answer.encode() + END)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused until :meth:`start`)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _answer(self, message: str) -> str:
        problem = judge_oru(message)
        code = self.answer or ("AE" if problem else "AA")
        text = problem or ("refused by the test" if code != "AA" else "")
        answer = _ack(message, code, text)
        with self.received.lock:
            if code == "AA":
                self.received.accepted.append(message)
                self.received.accepted_at.append(time.time())
            self.received.answers.append(answer)
        return answer


def judge_bundle(data: Any) -> str | None:
    """Why ``data`` is not an acceptable transaction Bundle, or None when it is one."""
    try:
        Bundle.model_validate(data)
    except (ValidationError, KeyError, TypeError, ValueError) as exc:
        return f"invalid Bundle: {str(exc).splitlines()[0]}"
    if data.get("type") != "transaction":
        return "not a transaction Bundle"
    types = [e.get("resource", {}).get("resourceType") for e in data.get("entry", [])]
    if "DiagnosticReport" not in types or "Observation" not in types:
        return "no DiagnosticReport and Observation"
    return None


class FhirReceiver:
    """A FHIR endpoint taking transaction Bundles at ``/fhir``.

    ``status``: force this HTTP status for every POST; ``token``: the bearer token it requires;
    ``lose_answers``: take (and keep) that many Bundles, then close the connection instead of
    answering; ``tls``: a server context (HTTPS).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        status: int | None = None,
        token: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.port = port or free_port()
        self.status = status
        self.token = token
        self.tls = tls
        self.fhir_version = "4.0.1"
        self.lose_answers = 0
        """What ``GET /fhir/metadata`` states."""
        self.received = Received()
        self.headers: list[dict[str, str]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The destination text of this receiver."""
        scheme = "fhir+https" if self.tls is not None else "fhir+http"
        return f"{scheme}://127.0.0.1:{self.port}/fhir"

    def start(self) -> FhirReceiver:
        """Listen (again) on the receiver's port."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/fhir/metadata":
                    status, answer = 404, _outcome("not-found", self.path)
                elif receiver.token is not None and (
                    self.headers.get("Authorization") != f"Bearer {receiver.token}"
                ):
                    status, answer = 401, _outcome("login", "bearer token missing or wrong")
                else:
                    status, answer = (
                        200,
                        {
                            "resourceType": "CapabilityStatement",
                            "status": "active",
                            "kind": "instance",
                            "fhirVersion": receiver.fhir_version,
                            "format": ["json"],
                        },
                    )
                self._reply(status, answer)

            def _reply(self, status: int, answer: Any) -> None:
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.received.lock:
                    receiver.headers.append(dict(self.headers.items()))
                status, answer = receiver._answer(self.path, dict(self.headers.items()), body)
                with receiver.received.lock:
                    lose = receiver.lose_answers > 0
                    receiver.lose_answers -= lose
                if lose:
                    self.close_connection = True  # taken, but the answer never reaches the sender
                    return
                self._reply(status, answer)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if path.rstrip("/") != "/fhir":
            return 404, _outcome("not-found", f"no FHIR base at {path}")
        if self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
            return 401, _outcome("login", "bearer token missing or wrong")
        if self.status is not None and self.status >= 300:
            return self.status, _outcome("transient", f"forced HTTP {self.status}")
        try:
            data = json.loads(body)
        except ValueError:
            return 400, _outcome("structure", "not JSON")
        problem = judge_bundle(data)
        if problem:
            return 400, _outcome("invalid", problem)
        with self.received.lock:
            self.received.accepted.append(body.decode("utf-8"))
            self.received.accepted_at.append(time.time())
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        entries = [
            {"response": {"status": "201 Created", "lastModified": now}} for _ in data["entry"]
        ]
        return self.status or 200, {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": entries,
        }


def _outcome(code: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }


_SAMPLE_OUTCOME = StudyOutcome(
    study_instance_uid="1.2.826.0.1.3680043.8.498.1",
    accession_number="ACC0042",
    patient_id="PAT-7731",
    patient_name="Doe^Jane^Q^Dr^III",
    patient_birth_date="19650412",
    patient_sex="F",
    finding="present",
    probability=0.7231,
    threshold=0.4,
    operating_point="clinical",
    model_version="deepcovid-2026.12",
    images=(
        ImageOutcome(
            "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3", "present", 0.72, None
        ),
        ImageOutcome(
            "1.2.826.0.1.3680043.8.498.4",
            "1.2.826.0.1.3680043.8.498.3",
            "rejected",
            None,
            "lateral view (from the image)",
        ),
    ),
    sr_sop_instance_uid="1.2.826.0.1.3680043.8.498.10",
    kos_sop_instance_uid="1.2.826.0.1.3680043.8.498.11",
    replaces_sr_sop_instance_uid=None,
    issued=dt.datetime(2026, 12, 6, 17, 30, 5, tzinfo=dt.UTC),
)


def study_outcome(**changes: Any) -> StudyOutcome:
    """A sample study result for the RIS messages (fictitious patient; a finding, a frontal image
    analysed and a lateral one rejected, SR and KOS sent), with ``changes`` to its fields."""
    return dataclasses.replace(_SAMPLE_OUTCOME, **changes)
