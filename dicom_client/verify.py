"""Confirm that a destination holds what we sent: C-FIND at IMAGE level (Study Root).

A C-STORE Success says the peer accepted the object; a C-FIND that finds it says the PACS
indexed it and will show it. Peers without C-FIND support simply cannot confirm.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]  # pynetdicom makes its SOP classes at run time

from dicom_client.scu import Destination

log = logging.getLogger(__name__)


def find_instances(
    destination: Destination,
    keys: Iterable[tuple[str, str, str]],
    *,
    calling_ae: str,
    timeout_s: float = 30.0,
    tls: ssl.SSLContext | None = None,
) -> set[str] | None:
    """SOP Instance UIDs among ``keys`` (study, series, instance UIDs) the destination holds.

    Returns ``None`` when the destination does not support C-FIND (association rejected or no
    accepted presentation context): confirmation is then impossible, not failed. ``tls``
    asks over DICOM TLS, as :class:`dicom_client.scu.Sender` does.
    """
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    tls_args = (tls, destination.host) if tls is not None else None
    assoc = ae.associate(
        destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args
    )
    if not assoc.is_established:
        log.info("C-FIND to %s not possible: association not established", destination)
        return None
    found: set[str] = set()
    try:
        if not assoc.accepted_contexts:
            return None
        for study_uid, series_uid, sop_uid in keys:
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.StudyInstanceUID = study_uid
            query.SeriesInstanceUID = series_uid
            query.SOPInstanceUID = sop_uid
            for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            ):
                if status is None:
                    raise ConnectionError("C-FIND: no response from the destination")
                if identifier is None or status.Status not in (0xFF00, 0xFF01):
                    continue
                if str(identifier.get("SOPInstanceUID", "")) == sop_uid:
                    found.add(sop_uid)
    finally:
        assoc.release()
    return found
