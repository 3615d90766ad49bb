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
    headers = {"Content-Type": CONTENT_TYPE, **_auth(endpoint, token_file)}
    request = urllib.request.Request(endpoint.base_url, data=body, headers=headers, method="POST")
    status, _ = _exchange(endpoint, request, timeout_s, tls)
    return status


def capabilities(
    endpoint: FhirEndpoint,
    *,
    timeout_s: float,
    token_file: Path | None = None,
    tls: ssl.SSLContext | None = None,
) -> str:
    """``GET [base]/metadata``: the server's FHIR version, which must be R4 (``4.0.x``).

    For ``deepcovid doctor``: reachable, trusted, authorised, and speaking R4, without sending a
    report. Raises :class:`RisUnavailable` or :class:`RisRefused` like :func:`post_bundle`.
    """
    url = endpoint.base_url + "/metadata"
    request = urllib.request.Request(url, headers=_auth(endpoint, token_file), method="GET")
    _, answer = _exchange(endpoint, request, timeout_s, tls)
    try:
        statement = json.loads(answer)
        kind, version = statement.get("resourceType"), str(statement.get("fhirVersion") or "")
    except (ValueError, AttributeError) as exc:
        raise RisRefused(f"{url} answered no JSON CapabilityStatement") from exc
    if kind != "CapabilityStatement":
        raise RisRefused(f"{url} answered a {kind}, not a CapabilityStatement")
    if not version.startswith("4.0"):
        raise RisRefused(f"{endpoint.base_url} speaks FHIR {version or '(unstated)'}, not R4 4.0")
    return version


def _auth(endpoint: FhirEndpoint, token_file: Path | None) -> dict[str, str]:
    """``Accept`` and, with a token file, ``Authorization`` (the token is never logged)."""
    headers = {"Accept": "application/fhir+json"}
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:  # the file's name is configuration, not a secret
            raise RisUnavailable(f"{endpoint.base_url}: cannot read the token file: {exc}") from exc
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _exchange(
    endpoint: FhirEndpoint,
    request: urllib.request.Request,
    timeout_s: float,
    tls: ssl.SSLContext | None,
) -> tuple[int, bytes]:
    """Send ``request``; the 2xx status and body, else the error the status calls for."""
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=tls), _NoRedirect())
    try:
        with opener.open(request, timeout=timeout_s) as answer:
            return int(answer.status), answer.read(MAX_ANSWER_BYTES)
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
