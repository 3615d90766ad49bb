"""What happens to one received instance, from bytes on the wire to a recorded job.

This is the C-STORE decision sequence of the design, kept free of pynetdicom so it can be tested
directly (:mod:`dicom_node.scp` adapts the pynetdicom event to it):

1. refuse storage classes we do not take (0x0122), validate the request's SOP Instance UID;
2. check the dataset's structure strictly (:mod:`dicom_node.structure`) and parse its header
   with pydicom (0xC000 when either fails);
3. validate the SOP Instance, Study and Series UIDs and that they match the request (0xA900);
4. check the spool's free-space watermark (0xA700);
5. write the file durably to the spool, then record the job row; if either fails, the file is
   rolled back and the answer is 0xA700 -- nothing half-written is kept;
6. answer Success (0x0000). Enqueueing the analysis is the caller's business, after this returns.

Reasons are logged with UIDs and the calling AE only -- never patient names or IDs -- and go back
to the sender as the response's Error Comment (64 characters at most).
"""

from __future__ import annotations

import errno
import logging
import zlib
from dataclasses import dataclass, field
from enum import IntEnum
from io import BytesIO
from typing import Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from common.uids import uid_problem
from dicom_node.contexts import is_accepted_sop_class
from dicom_node.spool import Spool, part10_header
from dicom_node.structure import StructureError, check_structure

log = logging.getLogger(__name__)

ERROR_COMMENT_MAX = 64
"""Error Comment (0000,0902) is LO: 64 characters at most."""
MAX_INFLATED_BYTES = 128 * 2**20
"""Largest dataset a Deflated transfer may inflate to: a CR/DX is 40 MB at most; beyond this
the dataset is answered 0xC000 instead of costing the listener unbounded memory."""
_INFLATE_SLICE = 4 * 2**20


class Status(IntEnum):
    """C-STORE response statuses the listener uses (PS3.4 B.2.3, PS3.7 C)."""

    SUCCESS = 0x0000
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH = 0xA900
    CANNOT_UNDERSTAND = 0xC000


class ReceiptOutcome(Protocol):
    """What the job store answers for a receipt (``store.ReceiptOutcome``)."""

    @property
    def job_id(self) -> int: ...
    @property
    def created(self) -> bool: ...
    @property
    def changed(self) -> bool: ...
    @property
    def needs_analysis(self) -> bool: ...


class JobRecorder(Protocol):
    """The part of ``store.JobStore`` the listener uses."""

    def record_received(
        self,
        *,
        sop_instance_uid: str,
        sop_class_uid: str,
        study_instance_uid: str,
        series_instance_uid: str,
        transfer_syntax_uid: str,
        calling_ae: str,
        spool_path: str,
        sha256: str,
        size_bytes: int,
        accession_number: str | None = None,
    ) -> ReceiptOutcome:
        """Insert or update the job of one received SOP Instance; raise on database error."""
        ...


@dataclass(frozen=True)
class IntakeResult:
    """The answer to one C-STORE: status, a reason for logs and the sender, and the job."""

    status: Status
    reason: str = ""
    job_id: int | None = None
    needs_analysis: bool = False
    offending_elements: tuple[int, ...] = field(default=())
    # What was stored, for the audit trail (not for logs: the Patient ID is patient data).
    study_instance_uid: str | None = None
    patient_id: str | None = None
    created: bool = False
    changed: bool = False

    @property
    def ok(self) -> bool:
        """Whether the instance was stored and recorded."""
        return self.status == Status.SUCCESS

    @property
    def error_comment(self) -> str:
        """The reason trimmed to fit the response's Error Comment."""
        return self.reason[:ERROR_COMMENT_MAX]


ACCESSION_NUMBER = 0x00080050
_REQUIRED_UIDS: tuple[tuple[str, int], ...] = (
    ("SOPClassUID", 0x00080016),
    ("SOPInstanceUID", 0x00080018),
    ("StudyInstanceUID", 0x0020000D),
    ("SeriesInstanceUID", 0x0020000E),
)


class Intake:
    """Decides the fate of received instances: spool + job row, or a failure status.

    Thread-safe: pynetdicom calls :meth:`receive` from one thread per association; writers of
    the same SOP Instance are serialised by the spool's lock.
    """

    def __init__(self, spool: Spool, store: JobRecorder) -> None:
        self.spool = spool
        self.store = store

    def receive(
        self,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        calling_ae: str,
        dataset: bytes,
    ) -> IntakeResult:
        """Handle one C-STORE request whose dataset arrived encoded as ``dataset``.

        ``sop_class_uid`` / ``sop_instance_uid`` are the request's Affected SOP Class / Instance
        UIDs, ``transfer_syntax_uid`` the presentation context's, ``dataset`` the encoded
        dataset without file meta. Never raises for bad input or a failing disk or database.
        """
        result = self._receive(
            sop_class_uid, sop_instance_uid, transfer_syntax_uid, calling_ae, dataset
        )
        if result.ok:
            log.info(
                "C-STORE from %s: SOP Instance %s stored (job %s)",
                calling_ae,
                sop_instance_uid,
                result.job_id,
            )
        else:
            log.warning(
                "C-STORE from %s refused with 0x%04X: %s (request SOP Instance %s)",
                calling_ae,
                int(result.status),
                result.reason,
                _loggable_uid(sop_instance_uid),
            )
        return result

    def _receive(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        calling_ae: str,
        dataset: bytes,
    ) -> IntakeResult:
        if not is_accepted_sop_class(sop_class_uid):
            name = UID(sop_class_uid).name if uid_problem(sop_class_uid) is None else "unknown"
            return IntakeResult(
                Status.SOP_CLASS_NOT_SUPPORTED, f"SOP class not accepted here: {name}"
            )
        problem = uid_problem(sop_instance_uid)
        if problem is not None:
            return _mismatch(f"AffectedSOPInstanceUID {problem}", 0x00001000)

        # A deflated dataset is inflated once, bounded, and then checked and read as the
        # explicit VR little endian stream it is; the spool keeps the bytes as received.
        plain: bytes | bytearray = dataset
        plain_syntax = transfer_syntax_uid
        try:
            if transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
                plain, plain_syntax = _inflate(dataset), ExplicitVRLittleEndian
            check_structure(plain, plain_syntax)
        except StructureError as exc:
            return IntakeResult(Status.CANNOT_UNDERSTAND, f"malformed dataset: {exc}")
        header = part10_header(sop_class_uid, sop_instance_uid, transfer_syntax_uid)
        try:
            ds = _read_header(header, plain, plain_syntax)
            values = {kw: _raw_text(ds, tag) for kw, tag in _REQUIRED_UIDS}
            accession = _accession_number(ds)
        except Exception as exc:  # pydicom raises many types for malformed input
            return IntakeResult(
                Status.CANNOT_UNDERSTAND, f"dataset cannot be parsed ({type(exc).__name__})"
            )
        for keyword, tag in _REQUIRED_UIDS:
            problem = uid_problem(values[keyword])
            if problem is not None:
                return _mismatch(f"{keyword} {problem}", tag)
        if values["SOPInstanceUID"] != sop_instance_uid:
            return _mismatch("SOPInstanceUID differs from the request's", 0x00080018)
        if values["SOPClassUID"] != sop_class_uid:
            return _mismatch("SOPClassUID differs from the request's", 0x00080016)

        try:
            room = self.spool.has_room_for(len(header) + len(dataset))
        except OSError as exc:
            return _out_of_resources(f"spool unavailable ({type(exc).__name__})")
        if not room:
            return _out_of_resources("spool disk below its free-space watermark")

        with self.spool.lock(sop_instance_uid):
            try:
                pending = self.spool.write(sop_instance_uid, (header, dataset))
            except OSError as exc:
                return _out_of_resources(f"spool write failed ({_os_error(exc)})")
            spooled = pending.file
            try:
                outcome = self.store.record_received(
                    sop_instance_uid=sop_instance_uid,
                    sop_class_uid=sop_class_uid,
                    study_instance_uid=str(values["StudyInstanceUID"]),
                    series_instance_uid=str(values["SeriesInstanceUID"]),
                    transfer_syntax_uid=transfer_syntax_uid,
                    calling_ae=calling_ae,
                    spool_path=str(spooled.path),
                    sha256=spooled.sha256,
                    size_bytes=spooled.size_bytes,
                    accession_number=accession,
                )
            except Exception as exc:  # any database failure: undo the file, answer 0xA700
                log.error(
                    "job store failed for SOP Instance %s: %s",
                    sop_instance_uid,
                    type(exc).__name__,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                try:
                    pending.rollback()
                except OSError as undo_exc:
                    log.error(
                        "could not roll back spool file %s: %s", spooled.path, _os_error(undo_exc)
                    )
                return _out_of_resources(f"job store unavailable ({type(exc).__name__})")
            pending.commit()
        return IntakeResult(
            Status.SUCCESS,
            job_id=outcome.job_id,
            needs_analysis=outcome.needs_analysis,
            study_instance_uid=values["StudyInstanceUID"],
            patient_id=_raw_text(ds, 0x00100020),
            created=outcome.created,
            changed=outcome.changed,
        )


def _inflate(data: bytes, limit: int | None = None) -> bytearray:
    """The dataset of a Deflated Explicit VR Little Endian transfer, at most ``limit`` bytes.

    Without the bound a deflate bomb -- a megabyte that inflates to a gigabyte -- would cost
    the listener a gigabyte per association (twice that while zlib grows its buffer). Inflated
    in slices into one buffer, so memory stays near ``limit`` even for a bomb; beyond it the
    dataset is refused.
    """
    limit = MAX_INFLATED_BYTES if limit is None else limit
    decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = bytearray()
    pending = data
    try:
        while pending and not decompressor.eof:
            inflated += decompressor.decompress(pending, _INFLATE_SLICE)
            pending = decompressor.unconsumed_tail
            if len(inflated) > limit:
                break
        if len(inflated) <= limit:
            inflated += decompressor.flush()
    except zlib.error as exc:
        raise StructureError(f"deflated data cannot be inflated ({exc})") from None
    if len(inflated) > limit:
        raise StructureError(f"deflated data inflates to more than {limit // 2**20} MiB")
    return inflated


def _read_header(header: bytes, dataset: bytes | bytearray, transfer_syntax_uid: str) -> Dataset:
    """The dataset's elements before Pixel Data, parsed by pydicom (values stay raw).

    Little-endian, non-deflated datasets are read in place (no copy of the pixel data);
    the deflated syntax goes through ``dcmread`` on the whole file, which inflates it.
    """
    syntax = UID(transfer_syntax_uid)
    if syntax.is_deflated or not syntax.is_little_endian:
        return dcmread(BytesIO(header + dataset), stop_before_pixels=True)
    return read_dataset(BytesIO(dataset), syntax.is_implicit_VR, True, stop_when=_at_pixel_data)


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    del vr, length
    return tag >= 0x7FE00010


def _raw_text(ds: Dataset, tag: int) -> str | None:
    """The value of a text element as sent, without pydicom converting it.

    Reading the raw bytes keeps pydicom's value validation -- which logs the offending value,
    whatever a sender put there -- out of the intake path. Trailing NUL/space padding is
    removed as PS3.5 allows; anything non-ASCII becomes U+FFFD and fails UID validation.
    """
    elem = ds.get_item(tag)
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace").rstrip("\x00 ")
    return None if value is None else str(value)


def _accession_number(ds: Dataset) -> str | None:
    """Accession Number (SH, at most 16 characters) as sent, printable ASCII only; None if empty.

    Kept on the job so that an operator can find it by the number a radiologist quotes.
    """
    value = _raw_text(ds, ACCESSION_NUMBER)
    if not value:
        return None
    text = "".join(ch for ch in value if " " <= ch <= "~").strip()[:16]
    return text or None


def _mismatch(reason: str, tag: int) -> IntakeResult:
    return IntakeResult(Status.DATASET_DOES_NOT_MATCH, reason, offending_elements=(tag,))


def _out_of_resources(reason: str) -> IntakeResult:
    return IntakeResult(Status.OUT_OF_RESOURCES, reason)


def _os_error(exc: OSError) -> str:
    """An OSError without its file name (which could be long); e.g. ``EACCES``."""
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def _loggable_uid(value: str) -> str:
    """The UID itself when valid; otherwise a placeholder (it may carry anything)."""
    return value if uid_problem(value) is None else "<invalid>"
