"""DICOMweb STOW-RS intake: ``POST /dicom-web/studies`` and ``/dicom-web/studies/{uid}``.

The HTTP twin of the C-STORE listener. Each part of a ``multipart/related;
type="application/dicom"`` body is a DICOM Part 10 file; its file meta gives what a C-STORE
request carries (SOP Class, SOP Instance, transfer syntax) and the dataset after it goes through
the very same :class:`dicom_node.intake.Intake` (storage classes, strict structure, UIDs, spool
watermark, fsync'd spool file and job row) before the response is sent, so a 200 means durable,
exactly as a C-STORE Success does. The response is PS3.18's (10.5.3): DICOM JSON with the
Referenced SOP Sequence (stored) and the Failed SOP Sequence with each Failure Reason -- the
C-STORE status the intake chose -- and a ``Warning: 299`` header per distinct reason in words;
HTTP 200 when all were stored, 202 when some, 409 when none.

Refused whole, before anything is stored (4xx with the reason in a JSON body): no or an unknown
bearer token (401), a body over ``console.dicomweb_max_mb`` (413), a content type other than
multipart/related of application/dicom parts (415), a truncated or malformed multipart body
(400). A part that is not DICOM is a failure of that instance (0xC000), not of the others.

Senders authenticate with a bearer token (``deepcovid tokens add NAME``); the token's name
stands in the job's calling-AE column (at most 16 characters) and the audit trail's
instances-received event names it as the source.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO

from pydicom import Dataset
from pydicom.filereader import _read_file_meta_info
from pydicom.tag import Tag
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

import audit
from audit import events
from dicom_node.intake import Intake, IntakeResult, Status

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
PARALLEL_PARTS = 4
"""Parts of one request taken at once (bench_intake: the disk's fsync waits overlap)."""
STUDY_INSTANCE_UID = Tag(0x0020, 0x000D)
_PARAM_RE = re.compile(r';\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


class StowError(Exception):
    """The whole request is refused: an HTTP status and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Part:
    """One body part: its content type and bytes."""

    content_type: str
    data: bytes


def media_type(header: str) -> tuple[str, dict[str, str]]:
    """``multipart/related; type="application/dicom"; boundary=x`` -> (type, parameters)."""
    main, _, rest = header.partition(";")
    params = {key.lower(): value.strip().strip('"') for key, value in _PARAM_RE.findall(";" + rest)}
    return main.strip().lower(), params


def split_multipart(content_type: str, body: bytes) -> list[Part]:
    """The parts of a STOW-RS body; :class:`StowError` for a wrong type or a malformed body."""
    kind, params = media_type(content_type)
    if kind != "multipart/related":
        raise StowError(415, f"content type {kind or '(none)'} is not multipart/related")
    part_type = params.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        raise StowError(415, f"parts of type {part_type} are not taken; send application/dicom")
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 70:
        raise StowError(400, "multipart/related without a valid boundary parameter")
    delimiter = b"--" + boundary.encode("latin-1")
    start = body.find(delimiter)
    if start < 0 or (start > 0 and body[start - 2 : start] != b"\r\n"):
        raise StowError(400, "multipart body does not start with its boundary")
    parts: list[Part] = []
    pos = start + len(delimiter)
    separator = b"\r\n" + delimiter
    while True:
        if body[pos : pos + 2] == b"--":
            break  # the close delimiter
        line_end = body.find(b"\r\n", pos)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise StowError(400, "multipart body truncated or malformed after a boundary")
        head_end = body.find(b"\r\n\r\n", line_end)
        if head_end < 0:
            raise StowError(400, "multipart body truncated in a part's headers")
        headers = _part_headers(body[line_end + 2 : head_end])
        next_delimiter = body.find(separator, head_end + 4)
        if next_delimiter < 0:
            raise StowError(400, "multipart body truncated: no closing boundary")
        part_kind = media_type(headers.get("content-type", "application/dicom"))[0]
        if part_kind != "application/dicom":
            raise StowError(415, f"a part of type {part_kind}; only application/dicom is taken")
        parts.append(Part(part_kind, body[head_end + 4 : next_delimiter]))
        pos = next_delimiter + len(separator)
    if not parts:
        raise StowError(400, "multipart body without a part")
    return parts


def _part_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(b"\r\n"):
        if not line:
            continue  # a part without headers: application/dicom
        name, colon, value = line.partition(b":")
        if not colon:
            raise StowError(400, "multipart part header without a colon")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return headers


@dataclass(frozen=True)
class Outcome:
    """What became of one part."""

    result: IntakeResult
    sop_class_uid: str
    sop_instance_uid: str


def receive_part(intake: Intake, data: bytes, sender: str, study_uid: str | None = None) -> Outcome:
    """One Part 10 file through the C-STORE intake (``sender`` as the calling AE)."""
    if len(data) < 132 or data[128:132] != b"DICM":
        failure = IntakeResult(Status.CANNOT_UNDERSTAND, "not a DICOM Part 10 file")
        return Outcome(failure, "", "")
    fp = BytesIO(data)
    fp.seek(132)
    try:
        meta = _read_file_meta_info(fp)
        sop_class = str(meta.MediaStorageSOPClassUID)
        sop_instance = str(meta.MediaStorageSOPInstanceUID)
        syntax = str(meta.TransferSyntaxUID)
    except Exception as exc:  # pydicom raises many types for malformed input
        failure = IntakeResult(
            Status.CANNOT_UNDERSTAND, f"file meta cannot be read ({type(exc).__name__})"
        )
        return Outcome(failure, "", "")
    dataset = data[fp.tell() :]
    if study_uid is not None and _study_of(data) != study_uid:
        mismatch = IntakeResult(
            Status.DATASET_DOES_NOT_MATCH, "StudyInstanceUID differs from the request's study"
        )
        return Outcome(mismatch, sop_class, sop_instance)
    result = intake.receive(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        transfer_syntax_uid=syntax,
        calling_ae=sender[:16],
        dataset=dataset,
    )
    return Outcome(result, sop_class, sop_instance)


def _study_of(data: bytes) -> str | None:
    from pydicom import dcmread

    try:
        ds = dcmread(BytesIO(data), stop_before_pixels=True, specific_tags=[STUDY_INSTANCE_UID])
    except Exception:  # the intake says what is wrong with it
        return None
    value = ds.get("StudyInstanceUID")
    return str(value) if value else None


def response_body(outcomes: list[Outcome], base_url: str) -> tuple[int, dict[str, object]]:
    """PS3.18 10.5.3 response: HTTP status and the DICOM JSON body."""
    ds = Dataset()
    stored = [o for o in outcomes if o.result.ok]
    failed = [o for o in outcomes if not o.result.ok]
    studies = sorted({o.result.study_instance_uid for o in stored if o.result.study_instance_uid})
    if len(studies) == 1:
        ds.RetrieveURL = f"{base_url}/studies/{studies[0]}"
    referenced = []
    for o in stored:
        item = Dataset()
        item.ReferencedSOPClassUID = o.sop_class_uid
        item.ReferencedSOPInstanceUID = o.sop_instance_uid
        item.RetrieveURL = f"{base_url}/studies/{o.result.study_instance_uid}"
        referenced.append(item)
    failures = []
    for o in failed:
        item = Dataset()
        if o.sop_class_uid:
            item.ReferencedSOPClassUID = o.sop_class_uid
        if o.sop_instance_uid:
            item.ReferencedSOPInstanceUID = o.sop_instance_uid
        item.FailureReason = int(o.result.status)
        failures.append(item)
    if referenced:
        ds.ReferencedSOPSequence = referenced
    if failures:
        ds.FailedSOPSequence = failures
    status = 200 if not failed else 202 if stored else 409
    return status, ds.to_json_dict()


class StowService:
    """The STOW-RS endpoints, bound to an intake, a token check and an enqueue function."""

    def __init__(
        self,
        intake: Intake,
        authenticate: Callable[[str], str | None],
        enqueue: Callable[[int], None],
        *,
        max_bytes: int,
        recorder: audit.Recorder | None = None,
    ) -> None:
        self.intake = intake
        self.authenticate = authenticate
        self.enqueue = enqueue
        self.max_bytes = max_bytes
        self.recorder = recorder
        self._pool = ThreadPoolExecutor(max_workers=PARALLEL_PARTS, thread_name_prefix="stow")

    def routes(self) -> list[BaseRoute]:
        """``/dicom-web/studies`` and ``/dicom-web/studies/{study}`` (POST)."""
        return [
            Mount(
                "/dicom-web",
                routes=[
                    Route("/studies", self.store, methods=["POST"]),
                    Route("/studies/{study}", self.store, methods=["POST"]),
                ],
            )
        ]

    async def store(self, request: Request) -> Response:
        """One STOW-RS request: authenticate, read (bounded), split, take each part."""
        try:
            sender = await run_in_threadpool(self._sender, request)
            body = await self._body(request)
            parts = split_multipart(request.headers.get("content-type", ""), body)
        except StowError as exc:
            log.warning("STOW-RS from %s refused (%d): %s", _client(request), exc.status, exc)
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=headers)
        study = request.path_params.get("study")
        outcomes = await run_in_threadpool(self._take, parts, sender, study)
        for o in outcomes:
            if o.result.ok and o.result.needs_analysis and o.result.job_id is not None:
                self.enqueue(o.result.job_id)
        self._audit(request, sender, outcomes)
        base = f"{request.url.scheme}://{request.url.netloc}/dicom-web"
        status, body_json = response_body(outcomes, base)
        reasons = sorted({o.result.reason for o in outcomes if not o.result.ok})
        headers = {"Warning": ", ".join(f'299 deepcovid "{_quoted(r)}"' for r in reasons)}
        log.info(
            "STOW-RS from %s (%s): %d stored, %d failed",
            sender,
            _client(request),
            sum(o.result.ok for o in outcomes),
            sum(not o.result.ok for o in outcomes),
        )
        return JSONResponse(
            body_json,
            status_code=status,
            media_type=DICOM_JSON,
            headers=headers if reasons else None,
        )

    def _sender(self, request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise StowError(401, "a bearer token is required (deepcovid tokens add NAME)")
        name = self.authenticate(token.strip())
        if name is None:
            raise StowError(401, "the bearer token is not valid")
        return name

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise StowError(413, f"request body over {self.max_bytes // 2**20} MiB")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_bytes:
                raise StowError(413, f"request body over {self.max_bytes // 2**20} MiB")
            chunks.append(chunk)
        return b"".join(chunks)

    def _take(self, parts: list[Part], sender: str, study: str | None) -> list[Outcome]:
        """Each part through the intake, several at once: hashing and fsync release the GIL,
        so one part's disk wait overlaps another's checks (the answer keeps the parts' order)."""
        if len(parts) == 1:
            return [receive_part(self.intake, parts[0].data, sender, study)]
        return list(
            self._pool.map(lambda part: receive_part(self.intake, part.data, sender, study), parts)
        )

    def _audit(self, request: Request, sender: str, outcomes: list[Outcome]) -> None:
        recorder = self.recorder or audit.current()
        by_study: dict[str, list[Outcome]] = {}
        for o in outcomes:
            if o.result.ok and o.result.study_instance_uid:
                by_study.setdefault(o.result.study_instance_uid, []).append(o)
        for study_uid, items in by_study.items():
            recorder.record(
                events.InstancesReceived(
                    calling_ae=sender[:16],
                    peer_address=_client(request),
                    study_instance_uid=study_uid,
                    sop_classes=events.count_sop_classes(o.sop_class_uid for o in items),
                    patient_id=items[0].result.patient_id,
                    received_as="C"
                    if any(o.result.created for o in items)
                    else "U"
                    if any(o.result.changed for o in items)
                    else "R",
                )
            )


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
