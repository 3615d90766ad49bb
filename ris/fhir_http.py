"""POST a FHIR transaction Bundle to a FHIR server's base URL and check the answer.

``2xx`` is delivered. ``4xx`` (bar 408 and 429) means the server read the Bundle and refuses it:
:class:`ris.errors.RisRefused` with the server's reason (the OperationOutcome's diagnostics or
details text, else the status line), not retried. ``5xx``, 408, 429, a timeout or a connection
failure are :class:`ris.errors.RisUnavailable`: the outbox retries with back-off. A bearer token,
when configured, is read from its file at each send (rotation needs no restart) and never logged
or put in an error.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ris.errors import RisRefused, RisUnavailable
from ris.fhir import FHIR_VERSION

CONTENT_TYPE = f"application/fhir+json; fhirVersion={FHIR_VERSION}"
RETRIED_4XX = frozenset({408, 429})
"""Request Timeout and Too Many Requests: the server asks to try again later."""
MAX_REASON = 300
"""Characters of the server's reason kept in the outbox row's error."""
MAX_ANSWER_BYTES = 1 << 20


@dataclass(frozen=True)
class FhirEndpoint:
    """A FHIR server's base URL, from a destination ``fhir+https://host/base``."""

    base_url: str

    @classmethod
    def parse(cls, text: str) -> FhirEndpoint:
        """Read ``fhir+https://...`` or ``fhir+http://...``; raises ValueError otherwise."""
        parts = urlsplit(text.strip())
        scheme = parts.scheme.lower()
        if scheme not in {"fhir+https", "fhir+http"} or not parts.hostname:
            raise ValueError("a FHIR destination is fhir+https://host/base (or fhir+http://)")
        if parts.username or parts.password:
            raise ValueError("a FHIR destination holds no credentials; use its token_file")
        if parts.query or parts.fragment:
            raise ValueError("a FHIR destination's base URL has no query or fragment")
        base = urlunsplit(
            (scheme.removeprefix("fhir+"), parts.netloc, parts.path.rstrip("/"), "", "")
        )
        return cls(base)

    @property
    def host(self) -> str:
        """The server's host name (the audit trail's destination host)."""
        return urlsplit(self.base_url).hostname or ""


def post_bundle(
    endpoint: FhirEndpoint,
    body: bytes,
    *,
    timeout_s: float,
    token_file: Path | None = None,
    tls: ssl.SSLContext | None = None,
) -> int:
    """POST ``body`` (a transaction Bundle) to the base URL; returns the 2xx status or raises."""
    headers = {"Content-Type": CONTENT_TYPE, "Accept": "application/fhir+json"}
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:  # the file's name is configuration, not a secret
            raise RisUnavailable(f"{endpoint.base_url}: cannot read the token file: {exc}") from exc
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(endpoint.base_url, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=tls), _NoRedirect())
    try:
        with opener.open(request, timeout=timeout_s) as answer:
            answer.read(MAX_ANSWER_BYTES)
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        reason = _reason(exc)
        exc.close()
        message = f"{endpoint.base_url} answered HTTP {status}: {reason}"
        if 400 <= status < 500 and status not in RETRIED_4XX:
            raise RisRefused(message) from None
        raise RisUnavailable(message) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise RisUnavailable(f"{endpoint.base_url}: {exc.__class__.__name__}: {exc}") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as itself (a 3xx error), never followed with the token."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _reason(exc: urllib.error.HTTPError) -> str:
    """The OperationOutcome's first issue text, else the HTTP reason phrase; trimmed."""
    text = str(exc.reason or "")
    try:
        outcome = json.loads(exc.read(MAX_ANSWER_BYTES) or b"{}")
        for issue in outcome.get("issue") or []:
            found = issue.get("diagnostics") or (issue.get("details") or {}).get("text")
            if found:
                text = str(found)
                break
    except (ValueError, AttributeError, OSError):
        pass
    return " ".join(text.split())[:MAX_REASON] or "no reason given"
