"""DICOMweb destination (``https://host/dicom-web``): STOW-RS, confirmed by QIDO-RS.

Sent with ``dicomweb-client`` (one multipart POST to ``{url}/studies`` per batch; its own
retries off: the outbox retries, across restarts, with the same back-off as every type). The
PS3.18 response says per instance what became of it: ``ReferencedSOPSequence`` (stored,
possibly with a warning), ``FailedSOPSequence`` with a Failure Reason. Transient: no
connection, a time-out, HTTP 408/429/5xx, 401/403 (a credential an operator can correct) and
the *out of resources* reasons (A7xx); permanent: other 4xx and failure reasons (the origin
server has said no to this object). Confirmation asks QIDO-RS for each series' instances.

TLS: an ``https`` URL is always verified (the destination's ``ca``, else ``tls.ca``, else the
system's CAs); the node's ``tls.cert`` is presented when set. Credentials (bearer token or basic
auth) are read from their files at each batch and go only into the request's header.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from common.settings import DestinationSettings, Settings
from store.outbox import ResultView
from worker.destinations.base import (
    DICOM,
    Credentials,
    DeliveryError,
    Destination,
    PermanentError,
    TransientError,
    register,
    trusted_ca,
)

log = logging.getLogger(__name__)

SOP_INSTANCE_UID = "00080018"
TRANSIENT_HTTP = frozenset({401, 403, 408, 425, 429})


def failure_is_transient(reason: int) -> bool:
    """Whether a STOW-RS Failure Reason (0008,1197) is worth retrying: out of resources (A7xx)
    or a processing failure (0110) may pass; the others will not."""
    return 0xA700 <= reason <= 0xA7FF or reason == 0x0110


@register
class StowRsDestination(Destination):
    """A DICOMweb origin server by STOW-RS, confirmed by QIDO-RS."""

    type_name = "stowrs"
    media = frozenset({DICOM})
    schemes = ("https", "http")

    def __init__(self, options: DestinationSettings, settings: Settings) -> None:
        super().__init__(options.url)
        self.url = options.url.rstrip("/")
        self.host = urlsplit(self.url).hostname or ""
        self.timeout_s = settings.listener.network_timeout_s
        self.credentials = Credentials(
            token_file=options.token_file,
            username=options.username,
            password_file=options.password_file,
        )
        ca = trusted_ca(options, settings)
        self.verify: str | bool = str(ca) if ca is not None else True
        self.client_cert: tuple[str, str] | str | None = None
        if settings.tls.cert is not None:
            cert = str(settings.tls.cert)
            self.client_cert = (cert, str(settings.tls.key)) if settings.tls.key else cert

    @classmethod
    def parse(cls, options: DestinationSettings, settings: Settings) -> StowRsDestination:
        """An ``http(s)://host[:port]/path`` base URL (the origin's DICOMweb root)."""
        parts = urlsplit(options.url)
        if not parts.hostname:
            raise ValueError(f"destination {options.url!r} names no host")
        if parts.username or parts.password:
            raise ValueError(
                f"destination {parts.scheme}://{parts.hostname}...: credentials go in "
                "token_file or username/password_file, not in the URL"
            )
        return cls(options, settings)

    def _client(self) -> DICOMwebClient:
        session = _Session()
        session.verify = self.verify
        if self.client_cert is not None:
            session.cert = self.client_cert
        session.headers.update(self.credentials.headers())
        client = DICOMwebClient(self.url, session=session, timeout=self.timeout_s)
        client.set_http_retry_params(retry=False)  # the outbox retries
        return client

    def send(self, rows: Sequence[ResultView]) -> dict[int, DeliveryError | None]:
        """POST the rows' files to ``{url}/studies``; per instance what the response says."""
        outcome: dict[int, DeliveryError | None] = {}
        datasets: list[Dataset] = []
        by_uid: dict[str, ResultView] = {}
        for row in rows:
            try:
                datasets.append(dcmread(row.path))
            except (OSError, InvalidDicomError) as exc:
                outcome[row.id] = PermanentError(f"cannot read {row.path}: {exc}")
                continue
            by_uid[row.sop_instance_uid] = row
        if not datasets:
            return outcome
        try:
            response = self._client().store_instances(datasets)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            body = _response_dataset(exc.response)
            if body is not None and "FailedSOPSequence" in body:  # 409: some or all refused
                response = body
            else:
                error = _http_error(status, self.url)
                return outcome | {row.id: error for row in by_uid.values()}
        except (requests.ConnectionError, requests.Timeout) as exc:
            error = TransientError(f"cannot reach {self.host}: {type(exc).__name__}")
            return outcome | {row.id: error for row in by_uid.values()}
        except (requests.RequestException, ValueError) as exc:
            error = TransientError(f"STOW-RS to {self.host} failed: {exc}")
            return outcome | {row.id: error for row in by_uid.values()}
        failed: dict[str, DeliveryError] = {}
        for item in response.get("FailedSOPSequence", []):
            uid = str(item.get("ReferencedSOPInstanceUID", ""))
            reason = int(item.get("FailureReason", 0x0110))
            text = f"STOW-RS failure reason {reason:04X}"
            failed[uid] = (
                TransientError(text) if failure_is_transient(reason) else PermanentError(text)
            )
        stored = {
            str(item.get("ReferencedSOPInstanceUID", ""))
            for item in response.get("ReferencedSOPSequence", [])
        }
        listed = bool(failed) or bool(stored)
        for uid, row in by_uid.items():
            if uid in failed:
                outcome[row.id] = failed[uid]
            elif uid in stored or not listed:  # an empty 200 body: all stored
                outcome[row.id] = None
            else:
                outcome[row.id] = TransientError("STOW-RS response does not list the instance")
        return outcome

    def confirm(self, rows: Sequence[ResultView]) -> set[str] | None:
        """QIDO-RS: the instances of each series of ``rows`` the origin server lists."""
        client = self._client()
        by_series: dict[tuple[str, str], set[str]] = defaultdict(set)
        for row in rows:
            by_series[(row.study_instance_uid or "", row.series_instance_uid)].add(
                row.sop_instance_uid
            )
        found: set[str] = set()
        for (study_uid, series_uid), wanted in by_series.items():
            listed = client.search_for_instances(
                study_instance_uid=study_uid or None,
                series_instance_uid=series_uid,
                fields=[SOP_INSTANCE_UID],
                get_remaining=True,
            )
            for item in listed:
                values = item.get(SOP_INSTANCE_UID, {}).get("Value", [])
                found.update(str(v) for v in values if str(v) in wanted)
        return found

    def probe(self) -> None:
        """Ask QIDO-RS for one study (``deepcovid doctor``); raises when the server cannot be
        reached, its certificate does not verify or it refuses the credentials."""
        self._client().search_for_studies(limit=1)

    @property
    def peer(self) -> tuple[str, str]:
        """The base URL and its host."""
        return self.url, self.host


class _Session(requests.Session):
    """A session whose ``verify`` (the destination's CA) wins over ``REQUESTS_CA_BUNDLE``:
    requests lets that variable override a session's setting, which would verify a
    destination against another CA than the one configured for it."""

    def merge_environment_settings(
        self,
        url: str,
        proxies: Any,
        stream: Any,
        verify: Any,
        cert: Any,
    ) -> dict[str, Any]:
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        merged["verify"] = self.verify
        return merged


def _response_dataset(response: requests.Response | None) -> Dataset | None:
    """The PS3.18 response body (DICOM JSON) of a refused STOW-RS, if it has one."""
    if response is None or not response.content:
        return None
    if "json" not in response.headers.get("Content-Type", ""):
        return None
    try:
        return Dataset.from_json(response.json())
    except Exception:  # not DICOM JSON (e.g. an {"error": ...} body): no per-instance answer
        return None


def _http_error(status: int, url: str) -> DeliveryError:
    text = f"STOW-RS to {urlsplit(url).hostname} answered HTTP {status}"
    if status >= 500 or status in TRANSIENT_HTTP:
        return TransientError(text)
    return PermanentError(text)
