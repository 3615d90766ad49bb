"""Our C-STORE sender: files or datasets to a DICOM destination, with bounded retries.

Used by the worker to deliver results and by ``deepcovid send``. Files are sent as they are on
disk (their encoded dataset is streamed without decoding, so what arrives is byte-for-byte what
was stored); datasets are encoded by pynetdicom.

Retries are bounded (a sender that resends forever floods a PACS that is down): each round opens
one association for everything still pending; an item ends after ``max_attempts`` rounds. What
is worth retrying: no connection, a transient association rejection, an association lost
mid-way, no response, and *out of resources* (0xA7xx) or *resource limitation* (0x0213)
statuses. What is not: a permanent association rejection (wrong AE title, not allowed), no
accepted presentation context, and every other failure status -- the destination has said no.
Between rounds the sender waits ``backoff_s``, doubling each round, capped at ``max_backoff_s``.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.association import Association

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128
"""Most presentation contexts one association may propose (PS3.8 §9.3.2.2: odd IDs 1..255)."""
WARNING_STATUSES = frozenset({0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007})
"""C-STORE warnings: the instance was stored (possibly with coercion)."""
RESOURCE_LIMITATION = 0x0213


@dataclass(frozen=True)
class Destination:
    """A DICOM peer: called AE title, host and port, written ``AE@host:port``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse ``AE@host:port`` (IPv6 hosts in brackets: ``AE@[::1]:104``)."""
        ae_title, at, address = text.partition("@")
        host, colon, port_text = address.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not at or not colon or not ae_title.strip() or not host:
            raise ValueError(f"destination {text!r} is not of the form AE@host:port")
        if len(ae_title) > 16:
            raise ValueError(f"AE title {ae_title!r} is longer than 16 characters")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"port {port_text!r} of destination {text!r} is not 1-65535")
        return cls(ae_title, host, int(port_text))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


@dataclass
class SendResult:
    """The fate of one file or dataset."""

    item: str
    """The file path, or ``SOP Instance UID`` for a dataset."""
    sop_instance_uid: str | None = None
    status: int | None = None
    """The destination's last C-STORE status; ``None`` when it never answered."""
    attempts: int = 0
    error: str | None = None
    """Why it failed (or the warning), for people."""

    @property
    def ok(self) -> bool:
        """Stored by the destination (Success or a Warning status)."""
        return self.status is not None and (self.status == 0 or self.status in WARNING_STATUSES)


@dataclass
class SendReport:
    """All results of one send, in the order the items were given."""

    results: list[SendResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every item was stored."""
        return all(result.ok for result in self.results)

    @property
    def failed(self) -> list[SendResult]:
        """The items that were not stored."""
        return [result for result in self.results if not result.ok]


ResultCallback = Callable[[SendResult], None]


@dataclass
class _Item:
    result: SendResult
    payload: Path | Dataset
    context: tuple[str, tuple[str, ...]]  # abstract syntax, transfer syntaxes to propose


@dataclass
class Sender:
    """Sends to one destination with the retry policy above.

    ``sleep`` is injectable so tests do not wait; ``connect_timeout_s`` bounds the TCP connect.
    ``tls`` (see :func:`common.tls.client_context`) sends over DICOM TLS, checking the
    destination's certificate against the destination's host name.
    """

    destination: Destination
    calling_ae: str = "DEEPCOVID"
    max_attempts: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 600.0
    timeout_s: float = 60.0
    connect_timeout_s: float | None = 10.0
    max_pdu: int = 0
    sleep: Callable[[float], None] = time.sleep
    tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def send_files(
        self, paths: Iterable[str | Path], on_result: ResultCallback | None = None
    ) -> SendReport:
        """C-STORE each DICOM file (Part 10, with file meta) as it is on disk."""
        # Stream files without decoding them; this pynetdicom switch only affects sending from
        # a path, which is the only way this package sends files.
        _config.STORE_SEND_CHUNKED_DATASET = True
        items: list[_Item] = []
        report = SendReport()
        for path in map(Path, paths):
            result = SendResult(str(path))
            report.results.append(result)
            try:
                meta = read_file_meta_info(path)
                sop_class = str(meta.MediaStorageSOPClassUID)
                result.sop_instance_uid = str(meta.MediaStorageSOPInstanceUID)
                syntax = str(meta.TransferSyntaxUID)
            except Exception as exc:  # pydicom raises many types for non-DICOM files
                result.error = f"not a readable DICOM file with file meta ({type(exc).__name__})"
                _notify(on_result, result)
                continue
            items.append(_Item(result, path, (sop_class, (syntax,))))
        self._send(items, on_result)
        return report

    def send_datasets(
        self, datasets: Iterable[Dataset], on_result: ResultCallback | None = None
    ) -> SendReport:
        """C-STORE datasets, encoded in their file meta's transfer syntax.

        A dataset without ``file_meta.TransferSyntaxUID`` gets one (Implicit VR Little
        Endian). A dataset read in one encoding whose file meta now names another (e.g. after
        ``Dataset.compress``) has its elements decoded and its original encoding set to the file
        meta's, so that pynetdicom encodes it as the file meta says instead of falling back to
        the encoding it was read in.
        """
        items: list[_Item] = []
        report = SendReport()
        for ds in datasets:
            uid = str(ds.get("SOPInstanceUID", ""))
            result = SendResult(uid or "<dataset without SOP Instance UID>", uid or None)
            report.results.append(result)
            if "SOPClassUID" not in ds or not uid:
                result.error = "dataset lacks SOPClassUID or SOPInstanceUID"
                _notify(on_result, result)
                continue
            syntax = _prepare_encoding(ds)
            offered: tuple[str, ...] = (syntax,)
            if not syntax.is_compressed:
                offered = tuple(
                    dict.fromkeys((syntax, ExplicitVRLittleEndian, ImplicitVRLittleEndian))
                )
            items.append(_Item(result, ds, (str(ds.SOPClassUID), offered)))
        self._send(items, on_result)
        return report

    # --- the retry loop ---------------------------------------------------------------------
    def _send(self, items: list[_Item], on_result: ResultCallback | None) -> None:
        for group in _group_by_contexts(items):
            self._send_group(group, on_result)

    def _send_group(self, items: list[_Item], on_result: ResultCallback | None) -> None:
        contexts = list(dict.fromkeys(item.context for item in items))
        pending = items
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                self.sleep(min(self.backoff_s * 2 ** (attempt - 2), self.max_backoff_s))
            for item in pending:
                item.result.attempts = attempt
            retry = self._round(pending, contexts, on_result)
            if not retry:
                return
            pending = retry
            if attempt < self.max_attempts:
                log.info(
                    "C-STORE to %s: %d item(s) to retry after attempt %d of %d",
                    self.destination,
                    len(pending),
                    attempt,
                    self.max_attempts,
                )
        for item in pending:
            _notify(on_result, item.result)

    def _round(
        self,
        items: list[_Item],
        contexts: Sequence[tuple[str, tuple[str, ...]]],
        on_result: ResultCallback | None,
    ) -> list[_Item]:
        """One association for ``items``; return those worth retrying (final ones notified)."""
        try:
            assoc = self._associate(contexts)
        except OSError as exc:  # the host name does not resolve: as "no connection", retried
            for item in items:
                item.result.error = f"cannot reach {self.destination.host}: {exc.strerror or exc}"
            return list(items)
        if not assoc.is_established:
            error, retryable = _association_failure(assoc)
            for item in items:
                item.result.error = error
                if not retryable:
                    _notify(on_result, item.result)
            return list(items) if retryable else []
        retry: list[_Item] = []
        try:
            for index, item in enumerate(items):
                if not assoc.is_established:
                    for rest in items[index:]:
                        rest.result.error = "association lost before sending"
                    retry.extend(items[index:])
                    break
                if self._store(assoc, item):
                    retry.append(item)
                else:
                    _notify(on_result, item.result)
        finally:
            if assoc.is_established:
                assoc.release()
        return retry

    def _store(self, assoc: Association, item: _Item) -> bool:
        """C-STORE one item; record the outcome; return whether it is worth retrying."""
        result = item.result
        try:
            rsp = assoc.send_c_store(item.payload)
        except ValueError as exc:  # no accepted context for it, or it cannot be encoded
            result.status, result.error = None, f"not sent: {exc}"
            return False
        except (OSError, AttributeError) as exc:
            result.status, result.error = None, f"not sent: {type(exc).__name__}: {exc}"
            return False
        status = rsp.get("Status") if rsp is not None else None
        if status is None:
            result.status, result.error = None, "no response (timeout or association aborted)"
            return True
        result.status = int(status)
        comment = rsp.get("ErrorComment")
        if result.ok:
            result.error = None if result.status == 0 else _status_text(result.status, comment)
            return False
        result.error = _status_text(result.status, comment)
        return 0xA700 <= result.status <= 0xA7FF or result.status == RESOURCE_LIMITATION

    def _associate(self, contexts: Sequence[tuple[str, tuple[str, ...]]]) -> Association:
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = self.timeout_s
        ae.dimse_timeout = self.timeout_s
        ae.network_timeout = self.timeout_s
        ae.connection_timeout = self.connect_timeout_s
        for abstract_syntax, syntaxes in contexts:
            ae.add_requested_context(abstract_syntax, list(syntaxes))
        return ae.associate(
            self.destination.host,
            self.destination.port,
            ae_title=self.destination.ae_title,
            max_pdu=self.max_pdu,
            tls_args=(self.tls, self.destination.host) if self.tls is not None else None,
        )


def send_files(
    paths: Iterable[str | Path],
    ae_title: str,
    host: str,
    port: int,
    *,
    on_result: ResultCallback | None = None,
    **options: Any,
) -> SendReport:
    """C-STORE files to ``ae_title@host:port``; ``options`` are :class:`Sender` fields."""
    sender = Sender(Destination(ae_title, host, port), **options)
    return sender.send_files(paths, on_result)


def send_datasets(
    datasets: Iterable[Dataset],
    ae_title: str,
    host: str,
    port: int,
    *,
    on_result: ResultCallback | None = None,
    **options: Any,
) -> SendReport:
    """C-STORE datasets to ``ae_title@host:port``; ``options`` are :class:`Sender` fields."""
    sender = Sender(Destination(ae_title, host, port), **options)
    return sender.send_datasets(datasets, on_result)


def _group_by_contexts(items: list[_Item]) -> list[list[_Item]]:
    """Split items so that no association needs more than :data:`MAX_CONTEXTS` contexts."""
    groups: list[list[_Item]] = []
    seen: list[set[tuple[str, tuple[str, ...]]]] = []
    for item in items:
        for group, contexts in zip(groups, seen, strict=True):
            if item.context in contexts or len(contexts) < MAX_CONTEXTS:
                group.append(item)
                contexts.add(item.context)
                break
        else:
            groups.append([item])
            seen.append({item.context})
    return groups


def _prepare_encoding(ds: Dataset) -> UID:
    """The transfer syntax ``ds`` will be sent in; makes pynetdicom agree with its file meta."""
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", Dataset()):
        if not hasattr(ds, "file_meta"):
            ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    wanted = (syntax.is_implicit_VR, syntax.is_little_endian)
    if ds.original_encoding[0] is not None and ds.original_encoding != wanted:
        for _elem in ds.iterall():  # decode every element still raw in the old encoding
            pass
        ds.set_original_encoding(*wanted)
    return syntax


def _association_failure(assoc: Association) -> tuple[str, bool]:
    """Why no association was established, and whether trying again later may help."""
    if assoc.is_rejected:
        primitive = getattr(assoc.acceptor, "primitive", None)
        result = getattr(primitive, "result", None)
        reason = getattr(primitive, "reason_str", None) or "no reason given"
        kind = "transient" if result == 0x02 else "permanent"
        return f"association rejected ({kind}): {reason}", result == 0x02
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        return "no presentation context accepted by the destination", False
    return "could not connect, or the association was aborted", True


def _status_text(status: int, comment: Any) -> str:
    text = f"status 0x{status:04X}"
    return f"{text}: {comment}" if comment else text


def _notify(callback: ResultCallback | None, result: SendResult) -> None:
    if callback is not None:
        callback(result)
