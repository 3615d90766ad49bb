"""DIMSE destination (``AE@host:port``): C-STORE, confirmed by C-FIND at IMAGE level.

Today's delivery, moved behind the destination interface: one association per batch, sent as
the files are on disk (:class:`dicom_client.scu.Sender`, one attempt: the outbox retries across
restarts), DICOM TLS when the destination's ``tls`` option (or ``delivery.destination_tls``)
says so. Every failure is retried with back-off, as before: a C-STORE refusal can be a PACS
that is misconfigured for a while as much as one that will never take the object.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from common import tls as tls_contexts
from common.settings import DestinationSettings, Settings
from dicom_client.scu import Destination as Peer
from dicom_client.scu import Sender
from dicom_client.verify import find_instances
from store.outbox import ResultView
from worker.destinations.base import (
    DICOM,
    DeliveryError,
    Destination,
    TransientError,
    register,
    trusted_ca,
)


@register
class DimseDestination(Destination):
    """A DICOM peer by C-STORE (SCU), confirmed by C-FIND."""

    type_name = "dimse"
    media = frozenset({DICOM})

    def __init__(
        self, text: str, peer: Peer, settings: Settings, tls: ssl.SSLContext | None
    ) -> None:
        super().__init__(text)
        self.peer_address = peer
        self.settings = settings
        self.tls = tls

    @classmethod
    def matches(cls, text: str) -> bool:
        """``AE@host:port``: no URL scheme, an ``@``."""
        return "://" not in text and "@" in text

    @classmethod
    def parse(cls, options: DestinationSettings, settings: Settings) -> DimseDestination:
        """Parse ``AE@host:port``; a TLS context when the destination asks for TLS."""
        peer = Peer.parse(options.url)
        use_tls = settings.delivery.destination_tls if options.tls is None else options.tls
        context = None
        if use_tls:
            context = tls_contexts.client_context(
                cert=settings.tls.cert, key=settings.tls.key, ca=trusted_ca(options, settings)
            )
        return cls(options.url, peer, settings, context)

    def send(self, rows: Sequence[ResultView]) -> dict[int, DeliveryError | None]:
        """C-STORE the rows' files on one association."""
        sender = Sender(
            self.peer_address,
            calling_ae=self.settings.listener.ae_title,
            max_attempts=1,  # the outbox does the retrying, across restarts
            timeout_s=self.settings.listener.network_timeout_s,
            tls=self.tls,
        )
        by_path = {row.path: row for row in rows}
        report = sender.send_files(list(by_path))
        outcome: dict[int, DeliveryError | None] = {}
        for result in report.results:
            row = by_path[result.item]
            outcome[row.id] = None if result.ok else TransientError(result.error or "not stored")
        return outcome

    def confirm(self, rows: Sequence[ResultView]) -> set[str] | None:
        """C-FIND (IMAGE level) for each row; ``None`` when the peer does not support C-FIND."""
        return find_instances(
            self.peer_address,
            [(r.study_instance_uid or "", r.series_instance_uid, r.sop_instance_uid) for r in rows],
            calling_ae=self.settings.listener.ae_title,
            timeout_s=self.settings.listener.network_timeout_s,
            tls=self.tls,
        )

    @property
    def peer(self) -> tuple[str, str]:
        """The called AE title and host."""
        return self.peer_address.ae_title, self.peer_address.host
