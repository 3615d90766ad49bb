"""HL7 v2 destination (``mllp://host:port``): each row's ORU^R01 file sent over MLLP, ACK checked.

The message was built when the study result was queued (``worker.notify``); sending it is reading
the file and :func:`ris.mllp.send`. ``AA`` is delivered; ``AE``/``AR`` is a refusal with the
receiver's reason (failed now, not retried); unreachable, timed out or no usable ACK is retried
with the delivery back-off. MLLP over TLS when the destination's ``tls`` option says so (verified
against its ``ca``, else ``tls.ca``). A receiver cannot be asked whether it holds a message, so
:meth:`confirm` answers ``None``; a resend after a lost ACK carries the same MSH-10 control ID,
by which the receiver can recognise a duplicate.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from pathlib import Path

from common import tls as tls_contexts
from common.settings import DestinationSettings, Settings
from ris.errors import RisRefused, RisUnavailable
from ris.hl7 import Hl7Error, message_control_id
from ris.mllp import MllpAddress, probe, send
from store.outbox import ResultView
from worker.destinations.base import (
    HL7,
    DeliveryError,
    Destination,
    PermanentError,
    TransientError,
    register,
    send_in_order,
    trusted_ca,
)

log = logging.getLogger(__name__)


@register
class Hl7Destination(Destination):
    """A RIS (or interface engine) taking HL7 v2 messages over MLLP."""

    type_name = "hl7"
    media = frozenset({HL7})
    schemes = ("mllp",)

    def __init__(
        self, text: str, address: MllpAddress, timeout_s: float, tls: ssl.SSLContext | None
    ) -> None:
        super().__init__(text)
        self.address = address
        self.timeout_s = timeout_s
        self.tls = tls

    @classmethod
    def parse(cls, options: DestinationSettings, settings: Settings) -> Hl7Destination:
        """Parse ``mllp://host:port``; a TLS context when the destination's ``tls`` is on."""
        address = MllpAddress.parse(options.url)
        context = None
        if options.tls:
            context = tls_contexts.client_context(
                cert=settings.tls.cert, key=settings.tls.key, ca=trusted_ca(options, settings)
            )
        return cls(options.url, address, settings.ris.timeout_s, context)

    def send(self, rows: Sequence[ResultView]) -> dict[int, DeliveryError | None]:
        """Send each row's message on its own connection, in order; stop early when unreachable."""
        return send_in_order(rows, self._send_one)

    def _send_one(self, row: ResultView) -> DeliveryError | None:
        try:
            message = Path(row.path).read_bytes().decode("utf-8")  # keep the \r separators
            control = message_control_id(message)
        except (OSError, UnicodeDecodeError, Hl7Error) as exc:
            return PermanentError(f"message file unreadable: {exc}")
        try:
            send(self.address, message, control_id=control, timeout_s=self.timeout_s, tls=self.tls)
        except RisRefused as exc:
            return PermanentError(str(exc))
        except RisUnavailable as exc:
            return TransientError(str(exc))
        log.info("ORU^R01 %s acknowledged by %s", control, self.address)
        return None

    def confirm(self, rows: Sequence[ResultView]) -> set[str] | None:
        """An MLLP receiver cannot be asked what it holds."""
        return None

    def probe(self) -> str:
        """Connect (and TLS handshake) without sending; ``RisError`` when it cannot."""
        return probe(self.address, timeout_s=self.timeout_s, tls=self.tls)

    @property
    def peer(self) -> tuple[str, str]:
        """The destination's text and host."""
        return str(self.address), self.address.host
