"""The job store as it is now: does it exist, can we reach it, is its schema at our head?

Read-only commands (``deepcovid jobs``, ``db current``) and ``deepcovid doctor`` ask before they
open anything: on a data folder where the service never ran, opening the SQLite URL would create
an empty file (or fail with SQLAlchemy's "unable to open database file" when the folder is
missing), and a newcomer would read a traceback instead of "start the service once". Nothing
here creates or changes a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from common.errors import UserError
from common.redact import redact_url
from store.jobstore import JobStore, make_engine

SchemaState = Literal["missing", "unreachable", "empty", "behind", "current", "unknown"]
CONNECT_TIMEOUT_S = 5
"""A server that does not answer is reported within seconds, not after the driver's default."""
UPGRADE_FIX = "run `deepcovid db upgrade` (every service start does it too)"


@dataclass(frozen=True)
class SchemaStatus:
    """Where the job store at a URL stands; ``ok`` when it can be used as it is."""

    state: SchemaState
    detail: str
    revision: str | None = None
    head: str | None = None

    @property
    def ok(self) -> bool:
        """The store exists, answers and is at the migrations' head."""
        return self.state == "current"


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for other URLs and in-memory SQLite."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return None if path in {"", ":memory:"} else Path(path)


def head_revision() -> str | None:
    """The newest revision of ``migrations/`` (what ``db upgrade`` brings a store to)."""
    from alembic.script import ScriptDirectory

    from store.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _engine(url: str) -> Engine:
    if url.startswith("postgresql"):
        return create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    return make_engine(url)


def schema_status(url: str) -> SchemaStatus:
    """The state of the job store at ``url``, without creating or changing anything."""
    from alembic.runtime.migration import MigrationContext

    where = redact_url(url)
    db_file = sqlite_file(url)
    if db_file is not None and not db_file.is_file():
        return SchemaStatus("missing", f"no job store yet: {db_file} does not exist")
    head = head_revision()
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
    except Exception as exc:
        text = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        return SchemaStatus("unreachable", f"job store {where} unreachable: {text}", head=head)
    finally:
        engine.dispose()
    if revision is None:
        return SchemaStatus("empty", f"job store {where} has no schema yet", None, head)
    if revision == head:
        return SchemaStatus("current", f"job store {where} at revision {revision}", revision, head)
    if _known(revision):
        detail = f"job store {where} at revision {revision}, behind {head}"
        return SchemaStatus("behind", detail, revision, head)
    detail = f"job store {where} at revision {revision}, which this version does not know"
    return SchemaStatus("unknown", detail, revision, head)


def _known(revision: str) -> bool:
    """Whether ``revision`` is one of our migrations (else a newer version wrote the store)."""
    from alembic.script import ScriptDirectory

    from store.migrate import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    try:
        return scripts.get_revision(revision) is not None
    except Exception:  # alembic raises its own errors for revisions it has never seen
        return False


def open_existing(url: str) -> JobStore:
    """The job store at ``url`` for reading; a :class:`UserError` naming the fix when it does
    not exist yet, cannot be reached or has another schema than this code."""
    status = schema_status(url)
    if status.state == "missing":
        raise UserError(
            f"{status.detail} (the service has not run with this data folder)",
            "start it once with `deepcovid serve`, or create an empty one with "
            "`deepcovid db upgrade`; DEEPCOVID_DATA_DIR or DEEPCOVID_DATABASE_URL choose the store",
        )
    if status.state == "unreachable":
        raise UserError(
            status.detail,
            "check DEEPCOVID_DATABASE_URL and that the database server is running",
        )
    if status.state in {"empty", "behind"}:
        raise UserError(status.detail, UPGRADE_FIX)
    if status.state == "unknown":
        raise UserError(status.detail, "upgrade deepcovid-node to the version that wrote it")
    return JobStore(url)
