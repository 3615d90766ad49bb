"""Send one HL7 v2 message over MLLP and read the receiver's ACK.

MLLP (HL7 v2 Minimal Lower Layer Protocol, release 2) frames each message as
``<VT> message <FS><CR>`` (0x0B ... 0x1C 0x0D) on a TCP connection, optionally inside TLS. The
sender waits for the ACK frame: MSA-1 ``AA`` (or ``CA``) is acceptance; ``AE``/``AR``
(``CE``/``CR``) are refusals with the receiver's reason (:class:`ris.errors.RisRefused`, not
retried); no answer, a timeout or a broken connection is :class:`ris.errors.RisUnavailable`
(the outbox retries).
One connection per message: results are a few per study, and a fresh connection cannot carry a
stale answer of an earlier exchange.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from ris.errors import RisRefused, RisUnavailable
from ris.hl7 import Ack, Hl7Error, parse_ack

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
MAX_ANSWER_BYTES = 1 << 20
"""An ACK is a few hundred bytes; a receiver sending more than this is not answering us."""
ENCODING = "utf-8"
"""MSH-18 says ``UNICODE UTF-8``."""


@dataclass(frozen=True)
class MllpAddress:
    """A receiver's host and port, from ``mllp://host:port``."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> MllpAddress:
        """Read ``mllp://host:port``; raises ValueError for anything else."""
        parts = urlsplit(text.strip())
        if parts.scheme != "mllp" or not parts.hostname or parts.path not in {"", "/"}:
            raise ValueError("an MLLP destination is mllp://host:port")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError("an MLLP destination is mllp://host:port") from exc
        if port is None:
            raise ValueError("an MLLP destination needs a port: mllp://host:port")
        return cls(parts.hostname, port)

    def __str__(self) -> str:
        return f"mllp://{self.host}:{self.port}"


def frame(message: str) -> bytes:
    """``message`` in an MLLP frame (UTF-8)."""
    return START_BLOCK + message.encode(ENCODING) + END_BLOCK


def unframe(data: bytes) -> str:
    """The message inside one MLLP frame; raises ValueError when ``data`` is not one."""
    start = data.find(START_BLOCK)
    end = data.find(END_BLOCK, start + 1)
    if start < 0 or end < 0:
        raise ValueError("not an MLLP frame")
    return data[start + 1 : end].decode(ENCODING, errors="replace")


def send(
    address: MllpAddress,
    message: str,
    *,
    control_id: str,
    timeout_s: float,
    tls: ssl.SSLContext | None = None,
) -> Ack:
    """Send ``message``, read the ACK and return it when it accepts; raise otherwise.

    ``control_id`` is the message's MSH-10: an ACK for another message is not an answer.
    """
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout_s) as raw:
            conn: socket.socket = (
                tls.wrap_socket(raw, server_hostname=address.host) if tls is not None else raw
            )
            conn.settimeout(timeout_s)
            conn.sendall(frame(message))
            answer = _read_frame(conn)
    except (OSError, TimeoutError) as exc:  # refused, reset, TLS failure, timeout
        raise RisUnavailable(f"{address}: {exc.__class__.__name__}: {exc}") from exc
    try:
        ack = parse_ack(answer)
    except Hl7Error as exc:
        raise RisUnavailable(f"{address}: {exc}") from exc
    if ack.control_id != control_id:
        raise RisUnavailable(f"{address}: the ACK is for message {ack.control_id!r}, not ours")
    if not ack.accepted:
        reason = ack.text or "no reason given"
        raise RisRefused(f"{address} answered {ack.code}: {reason}")
    return ack


def probe(address: MllpAddress, *, timeout_s: float, tls: ssl.SSLContext | None = None) -> str:
    """Connect (and shake hands over TLS) without sending a message; what was reached.

    For ``deepcovid doctor``: a receiver that accepts the connection is listening; whether it
    takes ORU^R01 shows only with a message. Raises :class:`RisUnavailable` otherwise.
    """
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout_s) as raw:
            if tls is None:
                return f"{address} accepts connections"
            with tls.wrap_socket(raw, server_hostname=address.host) as conn:
                return f"{address} accepts connections over {conn.version()}"
    except (OSError, TimeoutError) as exc:
        raise RisUnavailable(f"{address}: {exc.__class__.__name__}: {exc}") from exc


def _read_frame(conn: socket.socket) -> str:
    """Read bytes until the end block; raises RisUnavailable-worthy OSError on EOF or size."""
    data = bytearray()
    while END_BLOCK not in data:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("the receiver closed the connection without an ACK")
        data += chunk
        if len(data) > MAX_ANSWER_BYTES:
            raise ConnectionError("the receiver's answer has no MLLP end block")
    try:
        return unframe(bytes(data))
    except ValueError as exc:
        raise ConnectionError(str(exc)) from exc
