"""FHIR destination (``fhir+https://host/base``): each row's transaction Bundle POSTed, checked.

The Bundle was built and validated when the study result was queued (``worker.notify``); sending
it is :func:`ris.fhir_http.post_bundle` to the base URL. ``2xx`` is delivered; ``4xx`` is a
refusal with the server's reason (failed now, not retried); ``5xx``, 408, 429, a timeout or a
connection failure is retried with the delivery back-off. A bearer token is read from the
destination's ``token_file`` at each send; HTTPS is verified against its ``ca`` (else ``tls.ca``,
else the system's CAs). The Bundle's conditional updates make a resend after a lost answer change
nothing at the server; :meth:`confirm` answers ``None`` (not asked).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from pathlib import Path

from common.settings import DestinationSettings, Settings
from ris.errors import RisRefused, RisUnavailable
from ris.fhir_http import FhirEndpoint, capabilities, post_bundle
from store.outbox import ResultView
from worker.destinations.base import (
    FHIR,
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
class FhirDestination(Destination):
    """A FHIR R4 server taking transaction Bundles at its base URL."""

    type_name = "fhir"
    media = frozenset({FHIR})
    schemes = ("fhir+https", "fhir+http")

    def __init__(
        self,
        text: str,
        endpoint: FhirEndpoint,
        timeout_s: float,
        token_file: Path | None,
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(text)
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.token_file = token_file
        self.tls = tls

    @classmethod
    def parse(cls, options: DestinationSettings, settings: Settings) -> FhirDestination:
        """Parse the base URL; an HTTPS context verifying against the destination's CA."""
        if options.username is not None:
            raise ValueError(f"{options.url}: a FHIR destination takes a token_file, not a user")
        endpoint = FhirEndpoint.parse(options.url)
        context = None
        if endpoint.base_url.startswith("https:"):
            ca = trusted_ca(options, settings)
            context = ssl.create_default_context(cafile=str(ca) if ca else None)
        return cls(options.url, endpoint, settings.ris.timeout_s, options.token_file, context)

    def send(self, rows: Sequence[ResultView]) -> dict[int, DeliveryError | None]:
        """POST each row's Bundle, in order; stop early when the server is unreachable."""
        return send_in_order(rows, self._send_one)

    def _send_one(self, row: ResultView) -> DeliveryError | None:
        try:
            body = Path(row.path).read_bytes()
        except OSError as exc:
            return PermanentError(f"bundle file unreadable: {exc}")
        try:
            status = post_bundle(
                self.endpoint,
                body,
                timeout_s=self.timeout_s,
                token_file=self.token_file,
                tls=self.tls,
            )
        except RisRefused as exc:
            return PermanentError(str(exc))
        except RisUnavailable as exc:
            return TransientError(str(exc))
        log.info("FHIR bundle %s accepted by %s (HTTP %d)", row.sop_instance_uid, self, status)
        return None

    def confirm(self, rows: Sequence[ResultView]) -> set[str] | None:
        """Not asked: the conditional updates make a resend harmless."""
        return None

    def probe(self) -> str:
        """``GET [base]/metadata``: reachable, trusted, authorised and R4; ``RisError`` if not."""
        version = capabilities(
            self.endpoint, timeout_s=self.timeout_s, token_file=self.token_file, tls=self.tls
        )
        return f"{self.endpoint.base_url} speaks FHIR {version}"

    @property
    def peer(self) -> tuple[str, str]:
        """The base URL and its host."""
        return self.endpoint.base_url, self.endpoint.host
