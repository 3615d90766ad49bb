"""The DICOM audit trail: every event as a PS3.15 A.5 message, over syslog to the site's Audit
Record Repository (IHE ATNA).

Each event becomes one message (:func:`audit.atna.to_message`), framed as RFC 5424 (facility 10
security/authorization, severity 5: ``<85>``; APP-NAME ``deepcovid``; PROCID the process id;
MSGID ``DICOM+RFC3881`` as PS3.15 A.6/A.7 suggest; the XML as UTF-8 with a BOM) and queued to a
:class:`common.syslog.SyslogSender` that sends over UDP, TCP or TLS from its own thread, so a
slow or absent repository never holds up the caller. Building and queueing a message takes
microseconds.

A sender's thread does not survive ``fork``: a process forked after the sink was made (a Celery
pool child) gets a sender of its own on its first event.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading

from audit.atna import Source, to_message
from audit.events import AuditEvent
from common.syslog import Protocol, SyslogSender, format_message

log = logging.getLogger(__name__)

APP_NAME = "deepcovid"
MSGID = "DICOM+RFC3881"
"""The syslog MSGID PS3.15 A.6/A.7 suggest for messages in this format."""


class SyslogSink:
    """Sends every event as a DICOM audit message to one collector."""

    def __init__(
        self,
        host: str,
        port: int | None,
        protocol: Protocol,
        *,
        ae_title: str,
        ssl_context: ssl.SSLContext | None = None,
        hostname: str | None = None,
    ) -> None:
        """``ssl_context``: the TLS client context for ``protocol="tls"`` (RFC 5425); it
        decides which certificates are trusted and which one is presented."""
        self.host, self.port, self.protocol = host, port, protocol
        self.ssl_context = ssl_context
        self.source = Source(ae_title, hostname or socket.gethostname())
        self._lock = threading.Lock()
        self._sender: SyslogSender | None = None
        self._pid = -1
        self.sender  # noqa: B018  # start sending now; a bad protocol fails at start-up

    @property
    def sender(self) -> SyslogSender:
        """This process's sender (made again in a forked child)."""
        with self._lock:
            if self._sender is None or self._pid != os.getpid():
                self._sender = SyslogSender(
                    self.host,
                    self.port,
                    self.protocol,
                    ssl_context=self.ssl_context,
                )
                self._pid = os.getpid()
            return self._sender

    def write(self, event: AuditEvent) -> None:
        """Queue the event's message."""
        message = to_message(event, self.source)
        self.sender.send(
            format_message(
                message.to_xml(), app_name=APP_NAME, msgid=MSGID, hostname=self.source.hostname
            )
        )

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until the queue is sent (False: the collector is away or slow)."""
        mine = self._mine()
        return True if mine is None else mine.flush(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (for up to ``timeout_s``) and stop the sender's thread."""
        mine = self._mine()
        if mine is not None:
            mine.close(timeout_s)

    def _mine(self) -> SyslogSender | None:
        """The sender, if this process made it (an inherited one has no thread here)."""
        with self._lock:
            return self._sender if self._pid == os.getpid() else None

    def __repr__(self) -> str:
        return f"SyslogSink({self.protocol}://{self.host}:{self.port})"
