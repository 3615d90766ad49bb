"""People who may use the operator console, and their logged-in sessions.

Users live in the job store (``users``), managed with ``deepcovid users add | list | remove``.
Passwords are hashed with argon2id (``argon2-cffi``'s defaults; a hash made with older
parameters is upgraded at the next successful login). Two roles: ``viewer`` sees every page;
``admin`` may also act (re-analyse, resend, retry deliveries) and activate a model version.

A session is a random token in an HttpOnly cookie; the table keeps only the token's SHA-256,
so a copy of the database opens no session. Each session has its own CSRF token, which every
form of the console carries. Removing a user ends their sessions (``ON DELETE CASCADE``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import secrets
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select

from store.jobstore import JobStore
from store.schema import ConsoleSession, User, utcnow

Role = Literal["viewer", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "admin")
"""The console's roles, least privileged first."""
ADMIN: Role = "admin"
VIEWER: Role = "viewer"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD_LENGTH = 10
SEEN_EVERY_S = 60.0
"""How stale a session's ``last_seen_at`` may get before a request renews it."""

_hasher = PasswordHasher()
# Verified against when the name is unknown, so that a wrong name costs as long as a wrong
# password and timing does not tell which names exist.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class UserError(ValueError):
    """A user cannot be added or changed (the reason is in the message)."""


@dataclasses.dataclass(frozen=True)
class UserView:
    """A user without the password hash."""

    id: int
    name: str
    role: str
    created_at: dt.datetime
    last_login_at: dt.datetime | None

    @property
    def is_admin(self) -> bool:
        """Whether the user may run actions and activate models."""
        return self.role == ADMIN

    @classmethod
    def of(cls, row: User) -> UserView:
        """Snapshot an ORM row."""
        return cls(row.id, row.name, row.role, row.created_at, row.last_login_at)


@dataclasses.dataclass(frozen=True)
class SessionView:
    """A live console session: whose it is and its CSRF token."""

    id: int
    user: UserView
    csrf_token: str
    created_at: dt.datetime


def check_name(name: str) -> str:
    """A user name: 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit."""
    if not _NAME_RE.match(name):
        raise UserError(
            f"invalid user name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    """At least :data:`MIN_PASSWORD_LENGTH` characters, not only spaces."""
    if len(password) < MIN_PASSWORD_LENGTH or not password.strip():
        raise UserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    return password


def token_digest(token: str) -> str:
    """What the table keeps of a session token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; the store writes UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


class Users:
    """Users and console sessions on the job store's database."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    # --- users ------------------------------------------------------------------------------
    def add(self, name: str, password: str, role: str = VIEWER) -> UserView:
        """Create a user; raises :class:`UserError` for a bad name, password or role, or a
        name that exists."""
        check_name(name)
        check_password(password)
        if role not in ROLES:
            raise UserError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
        with self.store.session() as s:
            if s.scalars(select(User.id).where(User.name == name)).first() is not None:
                raise UserError(f"user {name!r} exists already")
            row = User(name=name, password_hash=_hasher.hash(password), role=role)
            s.add(row)
            s.flush()
            return UserView.of(row)

    def remove(self, name: str) -> bool:
        """Delete a user and their sessions; False if there was none of that name."""
        with self.store.session() as s:
            row = s.scalars(select(User).where(User.name == name)).one_or_none()
            if row is None:
                return False
            s.execute(delete(ConsoleSession).where(ConsoleSession.user_id == row.id))
            s.delete(row)
            return True

    def list_all(self) -> list[UserView]:
        """Every user, by name."""
        with self.store.session() as s:
            return [UserView.of(u) for u in s.scalars(select(User).order_by(User.name))]

    def authenticate(self, name: str, password: str) -> UserView | None:
        """The user if ``password`` is theirs, else None (same cost for unknown names)."""
        with self.store.session() as s:
            row = s.scalars(select(User).where(User.name == name)).one_or_none()
            if row is None:
                _verify(_DUMMY_HASH, password)
                return None
            if not _verify(row.password_hash, password):
                return None
            if _hasher.check_needs_rehash(row.password_hash):
                row.password_hash = _hasher.hash(password)
            row.last_login_at = utcnow()
            s.flush()
            return UserView.of(row)

    # --- sessions ---------------------------------------------------------------------------
    def start_session(self, user_id: int) -> tuple[str, SessionView]:
        """A new session for a user who just logged in: ``(cookie token, session)``."""
        token = secrets.token_urlsafe(32)
        with self.store.session() as s:
            user = s.get(User, user_id)
            if user is None:
                raise KeyError(user_id)
            row = ConsoleSession(
                token_sha256=token_digest(token),
                user_id=user_id,
                csrf_token=secrets.token_urlsafe(32),
            )
            s.add(row)
            s.flush()
            return token, SessionView(row.id, UserView.of(user), row.csrf_token, row.created_at)

    def session(self, token: str, *, idle_s: float, max_age_s: float) -> SessionView | None:
        """The live session of a cookie token (and mark it seen now); None when unknown or
        expired (idle longer than ``idle_s``, or older than ``max_age_s``); expired ones are
        deleted."""
        if not token:
            return None
        now = utcnow()
        with self.store.session() as s:
            row = s.scalars(
                select(ConsoleSession).where(ConsoleSession.token_sha256 == token_digest(token))
            ).one_or_none()
            if row is None:
                return None
            idle = (now - _aware(row.last_seen_at)).total_seconds()
            age = (now - _aware(row.created_at)).total_seconds()
            if idle > idle_s or age > max_age_s:
                s.delete(row)
                return None
            user = s.get(User, row.user_id)
            if user is None:
                return None
            if idle > SEEN_EVERY_S:  # a write per minute, not per poll of an open page
                row.last_seen_at = now
            return SessionView(row.id, UserView.of(user), row.csrf_token, row.created_at)

    def end_session(self, token: str) -> None:
        """Log out: forget the session of this token (nothing if unknown)."""
        with self.store.session() as s:
            s.execute(
                delete(ConsoleSession).where(ConsoleSession.token_sha256 == token_digest(token))
            )

    def purge_sessions(self, *, idle_s: float, max_age_s: float) -> int:
        """Delete expired sessions; returns how many."""
        now = utcnow()
        with self.store.session() as s:
            result = s.execute(
                delete(ConsoleSession).where(
                    (ConsoleSession.last_seen_at < now - dt.timedelta(seconds=idle_s))
                    | (ConsoleSession.created_at < now - dt.timedelta(seconds=max_age_s))
                )
            )
            return int(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult at run time


def _verify(password_hash: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False
