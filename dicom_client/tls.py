"""DICOM TLS (PS3.15 Annex B, BCP 195 style): the ``ssl.SSLContext`` of the listener and sender.

Both contexts come from the settings ``tls_cert``, ``tls_key``, ``tls_ca`` and
``tls_require_client_cert``; TLS 1.2 is the lowest version offered, and Python's default cipher
suites apply (forward-secret AEAD suites only with current OpenSSL).

- The **listener** uses TLS when ``tls_cert`` is set; with ``tls_ca`` it asks clients for a
  certificate and, when ``tls_require_client_cert`` (default with a CA), refuses those without a
  valid one during the handshake -- before any DICOM is exchanged.
- The **sender** (results delivery when ``destination_tls``, or any caller of
  :class:`dicom_client.scu.Sender` with ``tls``) verifies the destination's certificate and host
  name against ``tls_ca`` (the system's CAs when unset) and presents ``tls_cert`` when set.
"""

from __future__ import annotations

import ssl

from common.settings import Settings

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The listener's TLS context, or ``None`` when ``tls_cert`` is not set (plain TCP).

    Raises ``OSError``/``ssl.SSLError`` when a configured file cannot be read: a node asked to
    use TLS must not silently fall back to plain TCP.
    """
    if settings.tls_cert is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_ca is not None:
        ctx.load_verify_locations(cafile=settings.tls_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if settings.client_cert_required else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(settings: Settings) -> ssl.SSLContext:
    """The sender's TLS context: verify the peer (``tls_ca`` or system CAs), present our cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and host name checking
    ctx.minimum_version = MINIMUM_VERSION
    if settings.tls_ca is not None:
        ctx.load_verify_locations(cafile=settings.tls_ca)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if settings.tls_cert is not None:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    return ctx


def destination_context(settings: Settings) -> ssl.SSLContext | None:
    """The context for delivering results: :func:`client_context` if ``destination_tls``."""
    return client_context(settings) if settings.destination_tls else None
