"""A fresh, uniquely named database on the machine's PostgreSQL server, dropped afterwards.

For the job store's tests on PostgreSQL and ``benchmarks/bench_load.py --postgres``; a test that
must stop the server itself starts a private one (:mod:`tests.harness.pgserver`).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

PG_ADMIN_URL = os.environ.get(
    "DEEPCOVID_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
"""An administrative URL of the server to create the databases on."""


@contextlib.contextmanager
def fresh_pg_database(prefix: str = "deepcovid_test") -> Iterator[str]:
    """A new, empty PostgreSQL database (uniquely named) on the server of ``PG_ADMIN_URL``;
    yields its URL and drops it afterwards."""
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
