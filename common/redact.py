"""Secrets out of what we print: URLs of the job store and the broker."""

from __future__ import annotations


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
