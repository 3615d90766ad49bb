"""The TLS policy every service shares (handshakes: tests/integration/test_security.py)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from common.tls import MINIMUM_VERSION, client_context, server_context


def test_a_client_verifies_the_peer_and_its_host_name_with_tls_1_2_or_later() -> None:
    ctx = client_context(cert=None, key=None, ca=None)
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.minimum_version is MINIMUM_VERSION is ssl.TLSVersion.TLSv1_2


def test_a_key_without_its_certificate_is_refused() -> None:
    with pytest.raises(ValueError, match="without its certificate"):
        client_context(cert=None, key=Path("node.key"), ca=None)


def test_requiring_client_certificates_without_a_ca_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a CA"):
        server_context(cert=Path("node.crt"), key=None, ca=None, require_client_cert=True)


def test_an_unreadable_file_raises_rather_than_falling_back_to_plain_tcp(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        client_context(cert=None, key=None, ca=tmp_path / "missing-ca.pem")
    with pytest.raises(OSError):
        server_context(cert=tmp_path / "missing.crt", key=None, ca=None, require_client_cert=False)
