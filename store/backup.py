"""Backup and restore of the job store: a consistent copy taken while the services run.

- SQLite: Python's ``sqlite3`` online backup API copies the database page by page under a
  read transaction, so the copy is consistent even while the listener and workers write (WAL
  mode); restoring uses the same API in the other direction, replacing the content in place.
- PostgreSQL: ``pg_dump --format=custom`` (one snapshot transaction); restoring drops the job
  store's tables and loads the dump with ``pg_restore | psql`` in *one* transaction, so a
  failed restore leaves the database as it was. The client tools must be installed
  (``postgresql-client``) and match or exceed the server's major version.

A backup file is written beside its final name and renamed into place (never half written),
with mode 0600: job rows hold UIDs, AE titles and reasons, not images, but still concern
patients. The backup covers the job store only -- the spool, the results folder and the
broker are files or queues of their own (the reconciler re-enqueues what a broker lost).

Restore only while the services are stopped: a running node or worker would keep writing
to the database being replaced.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import URL, make_url

from common.atomic import atomic_path

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_CUSTOM_MAGIC = b"PGDMP"
FILE_MODE = 0o600


class BackupError(RuntimeError):
    """A backup or restore cannot be done; the message says why and what to do."""


def backend(url: str) -> str:
    """``sqlite`` or ``postgresql``; raises BackupError for another database."""
    name = make_url(url).get_backend_name()
    if name not in {"sqlite", "postgresql"}:
        raise BackupError(f"backup of a {name} job store is not supported (SQLite, PostgreSQL)")
    return name


def backup(url: str, dest: Path) -> Path:
    """Write a consistent copy of the job store at ``url`` to ``dest`` (replaced atomically)."""
    kind = backend(url)
    dest = dest.expanduser().absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest, mode=FILE_MODE) as tmp:
        if kind == "sqlite":
            _sqlite_copy(_sqlite_file(url, must_exist=True), tmp)
        else:
            _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges",
                  f"--file={tmp}", _conninfo(url)], url)  # fmt: skip
    return dest


def restore(url: str, src: Path) -> None:
    """Replace the job store at ``url`` with the backup ``src`` (made by :func:`backup`)."""
    kind = backend(url)
    src = src.expanduser()
    try:
        magic = _head(src)
    except OSError as exc:
        raise BackupError(f"cannot read {src}: {exc.strerror}") from exc
    if kind == "sqlite":
        if not magic.startswith(SQLITE_MAGIC):
            raise BackupError(f"{src} is not a SQLite backup{_other(magic)}")
        _check_sqlite_backup(src)
        target = _sqlite_file(url, must_exist=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            _create_private(target)
        _sqlite_copy(src, target)
    else:
        if not magic.startswith(PG_CUSTOM_MAGIC):
            raise BackupError(f"{src} is not a pg_dump custom-format backup{_other(magic)}")
        _pg_restore(url, src)


# --- SQLite -------------------------------------------------------------------------------
def _sqlite_file(url: str, *, must_exist: bool) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("the SQLite job store has no file to back up or restore")
    path = Path(database)
    if must_exist and not path.is_file():
        raise BackupError(f"no job store at {path}")
    return path


def _sqlite_copy(src: Path, dest: Path) -> None:
    """Copy database ``src`` onto ``dest`` with the online backup API (retried while busy)."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(dest, timeout=30)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                source.backup(target)
                break
            except sqlite3.OperationalError as exc:  # "database is locked": a writer is busy
                if time.monotonic() > deadline:
                    raise BackupError(f"job store busy for a minute: {exc}") from exc
                time.sleep(0.5)
    finally:
        target.close()
        source.close()


def _check_sqlite_backup(path: Path) -> None:
    """A readable, intact SQLite file holding a job store (``jobs`` and Alembic's table)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} cannot be read as SQLite: {exc}") from exc
    if ok != "ok":
        raise BackupError(f"{path} is damaged: {ok}")
    if not {"jobs", "alembic_version"} <= tables:
        raise BackupError(f"{path} is a SQLite file but not a job store backup")


# --- PostgreSQL ---------------------------------------------------------------------------
def _pg_restore(url: str, src: Path) -> None:
    """Drop the job store's tables and load the dump, in one ``psql`` transaction."""
    for tool in ("pg_restore", "psql"):
        if shutil.which(tool) is None:
            raise BackupError(f"{tool} is not installed (apt-get install postgresql-client)")
    engine = create_engine(url)
    try:
        tables = inspect(engine).get_table_names()
    finally:
        engine.dispose()
    psql = ["psql", "--no-psqlrc", "--quiet", "--single-transaction", "--set=ON_ERROR_STOP=1",
            f"--dbname={_conninfo(url)}"]  # fmt: skip
    if tables:
        quoted = ", ".join('"' + t.replace('"', '""') + '"' for t in tables)
        psql.append(f"--command=DROP TABLE IF EXISTS {quoted} CASCADE")
    psql.append("--file=-")
    dump = subprocess.Popen(
        ["pg_restore", "--no-owner", "--no-privileges", "--file=-", str(src)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert dump.stdout is not None
    try:
        loaded = subprocess.run(
            psql, stdin=dump.stdout, capture_output=True, text=True, env=_pg_env(url)
        )
    finally:
        dump.stdout.close()
        dump_err = dump.communicate()[1].decode(errors="replace")
    if dump.returncode != 0:
        raise BackupError(f"pg_restore failed: {dump_err.strip()}")
    if loaded.returncode != 0:
        raise BackupError(f"restore failed, nothing changed: {loaded.stderr.strip()}")


def _pg_url(url: str) -> URL:
    return make_url(url).set(drivername="postgresql")


def _conninfo(url: str) -> str:
    """A libpq URI for the job store, without its password (that goes in the environment)."""
    return _pg_url(url).set(password=None).render_as_string(hide_password=False)


def _pg_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    password = _pg_url(url).password
    if password:
        env["PGPASSWORD"] = str(password)
    return env


def _run(args: list[str], url: str) -> None:
    if shutil.which(args[0]) is None:
        raise BackupError(f"{args[0]} is not installed (apt-get install postgresql-client)")
    done = subprocess.run(args, capture_output=True, text=True, env=_pg_env(url))
    if done.returncode != 0:
        raise BackupError(f"{args[0]} failed: {done.stderr.strip()}")


# --- files --------------------------------------------------------------------------------
def _create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 (or truncate it), before anything is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.close(fd)
    os.chmod(path, FILE_MODE)


def _head(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(16)


def _other(magic: bytes) -> str:
    if magic.startswith(SQLITE_MAGIC):
        return " (it is a SQLite backup: the job store is PostgreSQL)"
    if magic.startswith(PG_CUSTOM_MAGIC):
        return " (it is a PostgreSQL dump: the job store is SQLite)"
    return ""
