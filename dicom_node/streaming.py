"""Writes C-STORE datasets into the spool while their PDUs are still arriving.

A C-STORE's Success may only go back once the instance is on disk, and a sender such as
``storescu`` sends the next instance only after that answer: receiving, writing and syncing
would add up, one instance after the other. This module overlaps them. Bound to pynetdicom's
``EVT_PDU_RECV`` (called on the association's network thread for every PDU, before the DIMSE
layer sees it), it writes each dataset fragment of an incoming C-STORE request to a temporary
spool file as it arrives -- behind the same part-10 header :mod:`dicom_node.intake` would
write -- and asks the kernel to start writing each megabyte back to disk right away
(``sync_file_range``). When the C-STORE handler runs, the staged file is complete and mostly on
disk; the intake checks that it holds exactly the bytes pynetdicom assembled (size and SHA-256)
and adopts it, so only the tail remains to be synced. Anything unexpected -- a UID we would
refuse, no room, a write error -- simply means no staged file: the intake then writes the
instance from memory as before. Nothing here decides a status.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import logging
import os
import struct
import threading
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from pynetdicom import evt
from pynetdicom.dsutils import decode
from pynetdicom.pdu import P_DATA_TF

from dicom_node.contexts import is_accepted_sop_class
from dicom_node.spool import Spool, StagedFile, part10_header
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


@dataclass
class _Stream:
    """What one association is receiving right now."""

    command: bytearray = field(default_factory=bytearray)
    staged: StagedFile | None = None
    digest: Any = None
    kicked: int = 0
    complete: bool = False


class IncomingStreams:
    """Stages incoming C-STORE datasets in the spool, per association (thread-safe)."""

    def __init__(self, spool: Spool, *, kick_bytes: int = KICK_BYTES) -> None:
        self.spool = spool
        self.kick_bytes = kick_bytes
        self._streams: dict[Any, _Stream] = {}
        self._lock = threading.Lock()

    @property
    def handlers(self) -> list[tuple[Any, Any]]:
        """The pynetdicom event handlers to bind on the listener."""
        return [(evt.EVT_PDU_RECV, self.on_pdu), (evt.EVT_CONN_CLOSE, self.on_close)]

    def take(self, assoc: Any) -> StagedFile | None:
        """The completed staged file of ``assoc``'s current C-STORE, handed to the caller."""
        with self._lock:
            stream = self._streams.get(assoc)
            if stream is None or stream.staged is None:
                return None
            staged, stream.staged = stream.staged, None
        if not stream.complete:
            staged.discard()
            return None
        return staged

    def on_close(self, event: Any) -> None:
        """EVT_CONN_CLOSE: drop whatever the association left staged."""
        with self._lock:
            stream = self._streams.pop(event.assoc, None)
        if stream is not None and stream.staged is not None:
            stream.staged.discard()

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
                elif stream.staged is not None:
                    self._append(stream, fragment, last=bool(control & 0x02))
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
        """A command set is complete: open a staged file if it is a C-STORE we would take."""
        command, stream.command = bytes(stream.command), bytearray()
        with self._lock:
            untaken, stream.staged = stream.staged, None
            stream.complete = False
        if untaken is not None:  # the previous request's file was never taken
            untaken.discard()
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
        stream.staged = self.spool.stage(sop_instance)
        stream.digest = hashlib.sha256()
        stream.kicked = 0
        self._append(stream, memoryview(header), last=False)

    def _append(self, stream: _Stream, fragment: memoryview, *, last: bool) -> None:
        staged = stream.staged
        assert staged is not None
        view = fragment
        while view:
            view = view[os.write(staged.fd, view) :]
        stream.digest.update(fragment)
        staged.size_bytes += len(fragment)
        if last or staged.size_bytes - stream.kicked >= self.kick_bytes:
            start_writeback(staged.fd, stream.kicked, staged.size_bytes - stream.kicked)
            stream.kicked = staged.size_bytes
        if last:
            staged.sha256 = stream.digest.hexdigest()
            stream.complete = True

    def _abandon(self, assoc: Any) -> None:
        with self._lock:
            stream = self._streams.get(assoc)
            staged = None if stream is None else stream.staged
            if stream is not None:
                stream.staged = None
        if staged is not None:
            staged.discard()


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
