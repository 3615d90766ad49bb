"""Secrets out of what we print: URLs of the job store and the broker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (user and host kept); unchanged without one.

    ``postgresql+psycopg://app:secret@db/x`` becomes ``postgresql+psycopg://app:***@db/x``.
    """
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


#: Settings whose values are URLs that may carry a password.
URL_SETTINGS = frozenset({"database_url", "broker_url"})


def redacted_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """Setting name -> value as shown to people (``config show``, the console): URLs redacted."""
    return {
        name: redact_url(str(value)) if name in URL_SETTINGS and value else value
        for name, value in values.items()
    }
