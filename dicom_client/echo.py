"""Is a DICOM peer there and does it talk to us? C-ECHO (Verification) and a bare TLS handshake.

``deepcovid doctor`` asks both of the results destination before a site goes live, and
``deepcovid demo`` waits with C-ECHO until the node it started answers. A failed TLS handshake is
reported on its own, with the reason OpenSSL gives (unknown CA, host name mismatch, protocol), since
pynetdicom only says that the association could not be made.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass

from pynetdicom import AE

from dicom_client.scu import Destination, _association_failure

VERIFICATION = "1.2.840.10008.1.1"


@dataclass(frozen=True)
class Reply:
    """Whether the peer answered as hoped, what it said, and how long it took."""

    ok: bool
    detail: str
    seconds: float = 0.0


def echo(
    destination: Destination,
    *,
    calling_ae: str,
    timeout_s: float = 10.0,
    tls: ssl.SSLContext | None = None,
) -> Reply:
    """Associate and send C-ECHO; ``ok`` when the peer answers Success."""
    t0 = time.perf_counter()
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    try:
        assoc = ae.associate(
            destination.host,
            destination.port,
            ae_title=destination.ae_title,
            tls_args=(tls, destination.host) if tls is not None else None,
        )
    except OSError as exc:  # a host name that does not resolve, among others
        return Reply(False, f"{destination}: {exc}", time.perf_counter() - t0)
    if not assoc.is_established:
        reason, _ = _association_failure(assoc)
        return Reply(False, f"{destination}: {reason}", time.perf_counter() - t0)
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    seconds = time.perf_counter() - t0
    code = int(status.Status) if "Status" in status else None
    if code != 0:
        text = "no answer to C-ECHO" if code is None else f"C-ECHO status 0x{code:04X}"
        return Reply(False, f"{destination}: {text}", seconds)
    return Reply(True, f"{destination} answers C-ECHO ({seconds * 1000:.0f} ms)", seconds)


def tls_handshake(
    host: str, port: int, context: ssl.SSLContext, *, timeout_s: float = 10.0
) -> Reply:
    """Connect and complete a TLS handshake (certificate and host name checked by ``context``)."""
    t0 = time.perf_counter()
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls_socket,
        ):
            version = tls_socket.version()
    except ssl.SSLCertVerificationError as exc:
        return Reply(False, f"{host}:{port}: certificate refused: {exc.verify_message}")
    except (OSError, ssl.SSLError) as exc:
        return Reply(False, f"{host}:{port}: TLS handshake failed: {exc}")
    seconds = time.perf_counter() - t0
    return Reply(True, f"{host}:{port}: TLS handshake ({version}) verified", seconds)
