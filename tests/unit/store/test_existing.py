"""The job store's state is told without creating anything, and each state names its fix."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from common.errors import UserError
from store.existing import head_revision, open_existing, schema_status
from store.migrate import upgrade
from tests.harness.net import free_port


def test_a_missing_sqlite_store_is_missing_and_stays_missing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-folder' / 'jobs.sqlite'}"
    status = schema_status(url)
    assert status.state == "missing" and not status.ok
    with pytest.raises(UserError, match="no job store yet") as raised:
        open_existing(url)
    assert "deepcovid serve" in str(raised.value) and "deepcovid db upgrade" in str(raised.value)
    assert not (tmp_path / "no-such-folder").exists()


def test_each_schema_state_is_told(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite"
    url = f"sqlite:///{db}"
    sqlite3.connect(db).close()  # an empty database file
    assert schema_status(url).state == "empty"
    with pytest.raises(UserError, match="db upgrade"):
        open_existing(url)
    upgrade(url, "0001")
    behind = schema_status(url)
    assert (behind.state, behind.revision, behind.head) == ("behind", "0001", head_revision())
    upgrade(url)
    current = schema_status(url)
    assert current.ok and current.revision == head_revision()
    assert open_existing(url).list() == []
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    assert schema_status(url).state == "unknown"


def test_an_unreachable_server_is_told_quickly() -> None:
    url = f"postgresql+psycopg://nobody:secret@127.0.0.1:{free_port()}/none"
    status = schema_status(url)
    assert status.state == "unreachable"
    assert "secret" not in status.detail and "***" in status.detail
    with pytest.raises(UserError, match="DEEPCOVID_DATABASE_URL"):
        open_existing(url)
