"""Syslog client for audit messages: RFC 5424 messages over UDP, TCP or TLS.

- RFC 5424 (the syslog protocol): ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG``,
  the timestamp in UTC with microseconds, no structured data (``-``), and the message as
  UTF-8 with a byte-order mark (``MSG-UTF8``);
- RFC 5426 (UDP): one message per datagram;
- RFC 6587 (TCP) and RFC 5425 (TLS): octet counting, ``MSG-LEN SP SYSLOG-MSG``.

:class:`SyslogSender` sends from a background thread through a bounded queue, so a slow or
absent collector never holds up the caller (a DICOM association, a delivery): the listener's
JSON audit log is the local record, syslog the copy for the site's Audit Record Repository.
It reconnects with back-off; while the collector is down messages wait in the queue (up to
``queue_size``, then the oldest are dropped and counted, with a warning in the application
log). Over TCP/TLS a message is lost only if the connection breaks while it is in flight or
the process ends before the queue is sent; UDP gives no guarantee at all, as RFC 5426 says.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import os
import socket
import ssl
import threading
from typing import Literal

from common.tls import client_context

log = logging.getLogger(__name__)

Protocol = Literal["udp", "tcp", "tls"]
DEFAULT_PORTS: dict[str, int] = {"udp": 514, "tcp": 514, "tls": 6514}
"""Well-known ports: syslog (UDP 514; TCP 514 by convention) and syslog-tls (6514)."""
FACILITY_SECURITY = 10
"""RFC 5424 facility 10, security/authorization messages (PS3.15 A.6/A.7, IHE ITI-20)."""
SEVERITY_NOTICE = 5
"""Normal but significant condition: PRI ``<85>`` with the facility above."""
BOM = b"\xef\xbb\xbf"
NILVALUE = "-"
MAX_UDP_MESSAGE = 65_507
"""Largest UDP payload over IPv4; a longer message cannot be sent as one datagram (RFC 5426)."""


def format_message(
    msg: bytes,
    *,
    app_name: str,
    msgid: str,
    hostname: str | None = None,
    procid: str | None = None,
    facility: int = FACILITY_SECURITY,
    severity: int = SEVERITY_NOTICE,
    timestamp: dt.datetime | None = None,
) -> bytes:
    """One RFC 5424 SYSLOG-MSG carrying ``msg`` (UTF-8 bytes) as MSG-UTF8."""
    when = (timestamp or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    header = " ".join(
        [
            f"<{facility * 8 + severity}>1",
            when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            _field(hostname or socket.gethostname(), 255),
            _field(app_name, 48),
            _field(procid if procid is not None else str(os.getpid()), 128),
            _field(msgid, 32),
            NILVALUE,  # no STRUCTURED-DATA
        ]
    )
    return header.encode("ascii") + b" " + BOM + msg


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 / RFC 5425 octet counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode("ascii") + b" " + message


def _field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` characters."""
    text = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return text or NILVALUE


class SyslogSender:
    """Sends formatted syslog messages to one collector from a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int | None = None,
        protocol: Protocol = "tls",
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 10.0,
        queue_size: int = 10_000,
        max_backoff_s: float = 60.0,
    ) -> None:
        if protocol not in DEFAULT_PORTS:
            raise ValueError(f"syslog protocol must be udp, tcp or tls, not {protocol!r}")
        if protocol == "tls" and ssl_context is None:
            ssl_context = client_context(cert=None, key=None, ca=None)  # the system's CAs
        self.host = host
        self.port = port or DEFAULT_PORTS[protocol]
        self.protocol = protocol
        self.ssl_context = ssl_context
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.dropped = 0
        self.sent = 0
        self._queue: collections.deque[bytes] = collections.deque(maxlen=queue_size)
        self._cond = threading.Condition()
        self._closing = False
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="syslog-sender", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"SyslogSender({self.protocol}://{self.host}:{self.port})"

    def send(self, message: bytes) -> None:
        """Queue one SYSLOG-MSG (from :func:`format_message`); never blocks, never raises."""
        with self._cond:
            if self._closing:
                return
            if self.protocol == "udp" and len(message) > MAX_UDP_MESSAGE:
                self.dropped += 1
                log.warning("%r: message of %d bytes too long for UDP; dropped", self, len(message))
                return
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("%r: queue full, %d audit message(s) dropped", self, self.dropped)
            self._queue.append(message)
            self._cond.notify()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until the queue is empty (sent, or handed to the socket); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue, timeout=timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (for up to ``timeout_s``), then stop the thread."""
        self.flush(timeout_s)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        self._disconnect(graceful=True)

    # --- the sending thread ---------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.5
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if self._closing:
                    return
                message = self._queue[0]
            try:
                self._transmit(message)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                self._disconnect()
                log.warning("%r: %s; retrying in %.1f s", self, _reason(exc), backoff)
                with self._cond:
                    self._cond.wait_for(lambda: self._closing, timeout=backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            backoff = 0.5
            with self._cond:
                if self._queue and self._queue[0] is message:
                    self._queue.popleft()
                self.sent += 1
                self._cond.notify_all()

    def _transmit(self, message: bytes) -> None:
        if self.protocol == "udp":
            if self._sock is None:
                self._sock = socket.socket(_family(self.host), socket.SOCK_DGRAM)
            self._sock.sendto(message, (self.host, self.port))
            return
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
            if self.protocol == "tls":
                assert self.ssl_context is not None
                try:
                    sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
                except BaseException:
                    sock.close()
                    raise
            self._sock = sock
        self._sock.sendall(octet_frame(message))

    def _disconnect(self, *, graceful: bool = False) -> None:
        """Close the connection; ``graceful``: so that the collector reads everything first.

        Closing a TCP socket with unread input (a TLS 1.3 session ticket, say) sends a reset,
        and a reset makes the collector's kernel drop what it received but had not read yet:
        the last messages. So: half-close, read until the collector closes too, then close.
        """
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            if graceful and self.protocol != "udp":
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(2.0)
                while sock.recv(4096):
                    pass
        with contextlib.suppress(OSError):
            sock.close()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"TLS: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
