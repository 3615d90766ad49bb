"""Bearer tokens of DICOMweb (STOW-RS) senders: ``deepcovid tokens add | list | remove``.

A token is 32 random bytes (URL-safe text), shown once when it is made; the table keeps only
its SHA-256, so a copy of the database lets no one send. A token names its sender (``name``),
which the job's calling-AE column and the audit trail record for what it sent. Tokens are long
and random, so a plain hash (not a slow password hash) suffices and checking one costs
microseconds per request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets

from sqlalchemy import select, update

from store.jobstore import JobStore
from store.schema import ApiToken, utcnow
from store.users import UserError, check_name

SEEN_EVERY_S = 60.0
"""How stale ``last_used_at`` may get before a request renews it (one write a minute at most)."""


@dataclasses.dataclass(frozen=True)
class TokenView:
    """A token without its hash."""

    name: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None


def digest(token: str) -> str:
    """What the table keeps of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Tokens:
    """The ``api_tokens`` table of the job store."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def add(self, name: str) -> str:
        """Make a token for ``name`` and return it (the only time it is seen); raises
        :class:`store.users.UserError` for a bad or taken name."""
        check_name(name)
        token = secrets.token_urlsafe(32)
        with self.store.session() as s:
            if s.scalars(select(ApiToken.id).where(ApiToken.name == name)).first() is not None:
                raise UserError(f"a token named {name!r} exists already")
            s.add(ApiToken(name=name, token_sha256=digest(token)))
        return token

    def remove(self, name: str) -> bool:
        """Revoke ``name``'s token; False if there was none."""
        with self.store.session() as s:
            row = s.scalars(select(ApiToken).where(ApiToken.name == name)).one_or_none()
            if row is None:
                return False
            s.delete(row)
            return True

    def list_all(self) -> list[TokenView]:
        """Every token by name."""
        with self.store.session() as s:
            rows = s.scalars(select(ApiToken).order_by(ApiToken.name))
            return [TokenView(r.name, r.created_at, r.last_used_at) for r in rows]

    def authenticate(self, token: str) -> str | None:
        """The name of the sender ``token`` belongs to; None when it is no current token."""
        if not token:
            return None
        now = utcnow()
        with self.store.session() as s:
            row = s.scalars(select(ApiToken).where(ApiToken.token_sha256 == digest(token))).first()
            if row is None:
                return None
            last = row.last_used_at
            if last is not None and last.tzinfo is None:
                last = last.replace(tzinfo=dt.UTC)
            if last is None or (now - last).total_seconds() > SEEN_EVERY_S:
                s.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
            return str(row.name)
