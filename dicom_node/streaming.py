"""Writes C-STORE datasets into the spool while their PDUs are still arriving.

A C-STORE's Success may only go back once the instance is on disk, and a sender such as
``storescu`` sends the next instance only after that answer: receiving, writing and syncing
would add up, one instance after the other. This module overlaps them. Bound to pynetdicom's
``EVT_PDU_RECV`` (called on the association's network thread for every PDU, before the DIMSE
layer sees it), it hands each dataset fragment of an incoming C-STORE request to a writer
thread that appends it to a temporary spool file -- behind the same part-10 header
:mod:`dicom_node.intake` would write --, hashes it, asks the kernel to start writing each
chunk back to disk (``sync_file_range``), and fdatasyncs the file as soon as the last fragment
is in, while the C-STORE handler runs its checks. The intake then checks that the staged file
holds as many bytes as pynetdicom assembled and adopts it (rename + folder fsync). Anything
unexpected -- a UID we would refuse, no room, a write error -- simply means no staged file:
the intake then writes the instance from memory as before. Nothing here decides a status.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import logging
import os
import queue
import struct
import threading
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from pynetdicom import evt
from pynetdicom.dsutils import decode
from pynetdicom.pdu import P_DATA_TF

from dicom_node.contexts import is_accepted_sop_class
from dicom_node.spool import Spool, StagedFile, datasync, part10_header
from dicom_node.uids import uid_problem

log = logging.getLogger(__name__)

KICK_BYTES = 1 << 20
"""Start write-back after every this many bytes staged."""
C_STORE_RQ = 0x0001
NO_DATASET = 0x0101
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Any:
    """libc's ``sync_file_range`` (Linux), or None where it does not exist."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to begin writing a byte range to disk, without waiting for it."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class _Writer:
    """Writes one staged file on its own thread: fragments in, a synced file out.

    The network thread only queues fragments (no disk, no hashing there); this thread writes
    them, hashes them, starts write-back every ``kick_bytes`` and, after the last fragment,
    fdatasyncs -- all while the C-STORE handler runs its checks. ``os.write``, ``hashlib``
    and ``fdatasync`` release the GIL, so this overlaps with receiving for real.
    """

    def __init__(self, staged: StagedFile, header: bytes, kick_bytes: int) -> None:
        self.staged = staged
        self.kick_bytes = kick_bytes
        self.error: BaseException | None = None
        self.complete = False
        self.done = threading.Event()
        self._queue: queue.SimpleQueue[memoryview | bytes | None] = queue.SimpleQueue()
        self._queue.put(header)
        self._thread = threading.Thread(target=self._run, name="deepcovid-stage", daemon=True)
        self._thread.start()

    def put(self, fragment: memoryview, *, last: bool) -> None:
        """Queue a dataset fragment; ``last`` ends the file."""
        self._queue.put(fragment)
        if last:
            self.complete = True
            self._queue.put(None)

    def abort(self) -> None:
        """Stop after what is queued (the file is then discarded by whoever holds it)."""
        self._queue.put(None)

    def _run(self) -> None:
        staged, digest, kicked = self.staged, hashlib.sha256(), 0
        ended = False
        try:
            while (chunk := self._queue.get()) is not None:
                view = memoryview(chunk)
                digest.update(view)
                staged.size_bytes += len(view)
                while view:
                    view = view[os.write(staged.fd, view) :]
                if staged.size_bytes - kicked >= self.kick_bytes:
                    start_writeback(staged.fd, kicked, staged.size_bytes - kicked)
                    kicked = staged.size_bytes
            ended = True
            if self.complete:
                staged.sha256 = digest.hexdigest()
                datasync(staged.fd)
        except BaseException as exc:  # reported to take(); the intake writes from memory
            self.error = exc
            while not ended and self._queue.get() is not None:  # drain up to the end marker
                pass
        finally:
            self.done.set()


@dataclass
class _Stream:
    """What one association is receiving right now."""

    command: bytearray = field(default_factory=bytearray)
    writer: _Writer | None = None


class IncomingStreams:
    """Stages incoming C-STORE datasets in the spool, per association (thread-safe)."""

    def __init__(
        self, spool: Spool, *, kick_bytes: int = KICK_BYTES, wait_s: float = 600.0
    ) -> None:
        self.spool = spool
        self.kick_bytes = kick_bytes
        self.wait_s = wait_s
        self._streams: dict[Any, _Stream] = {}
        self._lock = threading.Lock()

    @property
    def handlers(self) -> list[tuple[Any, Any]]:
        """The pynetdicom event handlers to bind on the listener."""
        return [(evt.EVT_PDU_RECV, self.on_pdu), (evt.EVT_CONN_CLOSE, self.on_close)]

    def take(self, assoc: Any) -> StagedFile | None:
        """The staged file of ``assoc``'s current C-STORE, complete and synced, or None.

        Waits for the writer thread to finish (it is normally done or nearly so).
        """
        with self._lock:
            stream = self._streams.get(assoc)
            writer = None if stream is None else stream.writer
            if stream is not None:
                stream.writer = None
        if writer is None:
            return None
        if not writer.complete:
            writer.abort()
        if not writer.done.wait(self.wait_s) or writer.error or not writer.complete:
            if writer.error is not None:
                log.warning("staging failed (%s); writing from memory", _describe(writer.error))
            _discard_when_done(writer)
            return None
        return writer.staged

    def on_close(self, event: Any) -> None:
        """EVT_CONN_CLOSE: drop whatever the association left staged."""
        with self._lock:
            stream = self._streams.pop(event.assoc, None)
        if stream is not None and stream.writer is not None:
            _discard_when_done(stream.writer)

    def on_pdu(self, event: Any) -> None:
        """EVT_PDU_RECV: stage the dataset fragments of C-STORE requests."""
        pdu = event.pdu
        if not isinstance(pdu, P_DATA_TF):
            return
        try:
            stream = self._stream(event.assoc)
            for item in pdu.presentation_data_value_items:
                value = item.presentation_data_value
                control, fragment = value[0], memoryview(value)[1:]
                if control & 0x01:
                    stream.command += fragment
                    if control & 0x02:
                        self._begin(stream, event.assoc, item.presentation_context_id)
                elif stream.writer is not None:
                    stream.writer.put(fragment, last=bool(control & 0x02))
        except Exception:  # never disturb the association: fall back to writing from memory
            log.debug("staging stopped", exc_info=True)
            self._abandon(event.assoc)

    def _stream(self, assoc: Any) -> _Stream:
        with self._lock:
            stream = self._streams.get(assoc)
            if stream is None:
                stream = self._streams[assoc] = _Stream()
            return stream

    def _begin(self, stream: _Stream, assoc: Any, context_id: int) -> None:
        """A command set is complete: start a staged file if it is a C-STORE we would take."""
        command, stream.command = bytes(stream.command), bytearray()
        with self._lock:
            untaken, stream.writer = stream.writer, None
        if untaken is not None:  # the previous request's file was never taken
            _discard_when_done(untaken)
        cs = decode(BytesIO(command), True, True)
        field_elem = cs.get_item(0x00000100)
        type_elem = cs.get_item(0x00000800)
        if field_elem is None or type_elem is None:
            return
        if _us(field_elem.value) != C_STORE_RQ or _us(type_elem.value) == NO_DATASET:
            return
        sop_class = _raw_uid(cs.get_item(0x00000002))
        sop_instance = _raw_uid(cs.get_item(0x00001000))
        syntax = next(
            (
                str(cx.transfer_syntax[0])
                for cx in assoc.accepted_contexts
                if cx.context_id == context_id
            ),
            None,
        )
        if (
            syntax is None
            or sop_class is None
            or sop_instance is None
            or not is_accepted_sop_class(sop_class)
            or uid_problem(sop_instance) is not None
            or not self.spool.has_room_for(0)
        ):
            return
        header = part10_header(sop_class, sop_instance, syntax)
        writer = _Writer(self.spool.stage(sop_instance), header, self.kick_bytes)
        with self._lock:
            stream.writer = writer

    def _abandon(self, assoc: Any) -> None:
        with self._lock:
            stream = self._streams.get(assoc)
            writer = None if stream is None else stream.writer
            if stream is not None:
                stream.writer = None
        if writer is not None:
            _discard_when_done(writer)


def _discard_when_done(writer: _Writer, wait_s: float = 600.0) -> None:
    """Stop a writer, wait until its thread no longer touches the file, and remove the file.

    Only on abnormal paths (abandoned, refused, connection closed mid-dataset); the wait is
    for fragments already queued, normally milliseconds.
    """
    writer.abort()
    writer.done.wait(wait_s)
    writer.staged.discard()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, type(exc).__name__)
    return type(exc).__name__


def _us(value: Any) -> int | None:
    """A raw US value (little endian) as int."""
    if isinstance(value, bytes) and len(value) == 2:
        return int(struct.unpack("<H", value)[0])
    return value if isinstance(value, int) else None


def _raw_uid(elem: Any) -> str | None:
    """A raw UI element's text without padding (never converted by pydicom: no warnings)."""
    if elem is None or not isinstance(elem.value, bytes):
        return None
    with contextlib.suppress(UnicodeDecodeError):
        return elem.value.decode("ascii").rstrip("\x00 ")
    return None
