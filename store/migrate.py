"""Apply the Alembic migrations of ``migrations/`` to a job-store URL.

Called on every service start and by ``deepcovid db upgrade``; safe to run concurrently from
several processes (PostgreSQL serialises on an advisory lock, SQLite on its write lock).
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from store.jobstore import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
_PG_LOCK_KEY = 0x0DC0_71D  # arbitrary, constant advisory-lock key for migrations


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at our migrations and ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@contextlib.contextmanager
def _sqlite_migration_lock(url: str) -> Iterator[None]:
    """Serialise migrations of one SQLite file across processes (node and workers start
    together); PostgreSQL uses an advisory lock inside the transaction instead."""
    if not url.startswith("sqlite:///"):
        yield
        return
    db = Path(url.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".migrate.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def upgrade(url: str, revision: str = "head") -> str | None:
    """Bring the database at ``url`` to ``revision``; return the revision now applied."""
    with _sqlite_migration_lock(url):
        return _upgrade(url, revision)


def _upgrade(url: str, revision: str) -> str | None:
    engine = make_engine(url)
    cfg = alembic_config(url)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return current(url)
    finally:
        engine.dispose()


def current(url: str) -> str | None:
    """The revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
