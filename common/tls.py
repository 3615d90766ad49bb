"""The node's TLS policy (PS3.15 Annex B, BCP 195 style), in one place: every ``ssl.SSLContext``.

The DICOM listener, the DICOM sender (results delivery, ``deepcovid send``) and the audit syslog
sender all build their contexts here, from paths and a flag rather than the app's settings, so the
policy cannot drift between them:

- TLS 1.2 is the lowest version offered; Python's default cipher suites apply (forward-secret AEAD
  suites only with current OpenSSL).
- A **client** verifies the server's certificate and host name against ``ca`` (the system's CAs
  when ``None``) and presents ``cert`` when one is given.
- A **server** presents ``cert``; with ``ca`` it asks clients for a certificate and, when
  ``require_client_cert``, refuses those without a valid one during the handshake -- before any
  application data is exchanged.

A configured file that cannot be read raises ``OSError``/``ssl.SSLError``: a service asked to use
TLS must not silently fall back to plain TCP.
"""

from __future__ import annotations

import ssl
from pathlib import Path

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def client_context(*, cert: Path | None, key: Path | None, ca: Path | None) -> ssl.SSLContext:
    """A context that verifies the peer (``ca`` or the system CAs) and presents ``cert`` if set.

    ``key`` is the private key of ``cert`` (``None`` when ``cert`` holds the key).
    """
    if key is not None and cert is None:
        raise ValueError("a TLS key was given without its certificate")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and host name checking
    ctx.minimum_version = MINIMUM_VERSION
    if ca is not None:
        ctx.load_verify_locations(cafile=ca)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def server_context(
    *, cert: Path, key: Path | None, ca: Path | None, require_client_cert: bool
) -> ssl.SSLContext:
    """A context that presents ``cert`` and checks client certificates against ``ca``.

    Without ``ca`` no client certificate is asked for; with it a certificate is verified when
    offered, and required when ``require_client_cert`` (which without ``ca`` is an error: nothing
    could verify the certificate it demands).
    """
    if require_client_cert and ca is None:
        raise ValueError("requiring client certificates needs a CA to verify them")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.load_cert_chain(cert, key)
    if ca is not None:
        ctx.load_verify_locations(cafile=ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
