"""A job store outage is one warning when it starts and one when it ends, not a traceback per
run of the node's background loops; the statement and its parameters are never logged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from store import JobStore
from store.outage import UNREACHABLE_ERRORS, OutageLog, describe


def _refused() -> OperationalError:
    cause = ConnectionRefusedError("connection failed: Connection refused\nIs the server running?")
    return OperationalError("SELECT * FROM jobs WHERE sop_instance_uid = %s", ("1.2.3.4",), cause)


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.outage")
    outage = OutageLog(log, "dispatcher")
    with caplog.at_level(logging.INFO, logger="test.outage"):
        outage.succeeded()  # no outage: nothing to say
        for _ in range(5):
            outage.failed(_refused())
        outage.succeeded()
        outage.succeeded()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "dispatcher: job store unreachable (ConnectionRefusedError: connection failed: "
        "Connection refused); trying again on every run until it answers",
        "dispatcher: job store reachable again",
    ]
    assert not any(r.exc_info for r in caplog.records), "no traceback"


def test_the_description_leaves_out_the_statement_and_its_parameters() -> None:
    text = describe(_refused())
    assert "1.2.3.4" not in text and "SELECT" not in text
    assert describe(RuntimeError()) == "RuntimeError"


def test_a_store_whose_database_is_gone_raises_an_unreachable_error(tmp_path: Path) -> None:
    # A real driver error: an SQLite file in a folder that does not exist cannot be opened.
    store = JobStore(f"sqlite:///{tmp_path / 'missing' / 'jobs.sqlite'}")
    with pytest.raises(UNREACHABLE_ERRORS) as info:
        store.counts()
    assert describe(info.value).startswith("OperationalError: unable to open database file")
