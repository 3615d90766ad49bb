"""The JSON audit log keeps the line shapes docs/security.md documents, and only those events."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from audit import events as ev
from audit.recorder import Recorder
from audit.sinks.json_log import JsonLogSink, read_events
from tests.unit.audit.examples import EVENTS

LISTENER_KEYS = [
    "time", "event", "calling_ae", "called_ae", "peer_address", "peer_port", "outcome", "reason",
]  # fmt: skip
PERSON_KEYS = [
    "time", "event", "user", "role", "via", "peer_address", "outcome", "action", "target", "reason",
]  # fmt: skip


@pytest.fixture
def log(tmp_path: Path) -> JsonLogSink:
    sink = JsonLogSink.in_dir(tmp_path / "logs")
    yield sink  # type: ignore[misc]
    sink.close()


def written(sink: JsonLogSink, event: ev.AuditEvent) -> list[dict[str, object]]:
    before = len(read_events(sink.path))
    sink.write(event)
    sink.flush()
    return read_events(sink.path)[before:]


def test_listener_decisions(log: JsonLogSink) -> None:
    (rejected,) = written(log, EVENTS["association rejected"])
    assert list(rejected) == LISTENER_KEYS
    assert rejected == {
        "time": EVENTS["association rejected"].time.isoformat(),
        "event": "association", "calling_ae": "INTRUDER", "called_ae": "DEEPCOVID",
        "peer_address": "10.1.9.14", "peer_port": 4243, "outcome": "rejected",
        "reason": "calling AE title not allowed",
    }  # fmt: skip
    (accepted,) = written(log, EVENTS["association accepted"])
    assert (accepted["event"], accepted["outcome"], accepted["reason"]) == (
        "association", "accepted", "",
    )  # fmt: skip
    (tls,) = written(log, EVENTS["tls failed"])
    assert (tls["event"], tls["calling_ae"], tls["called_ae"], tls["outcome"]) == (
        "tls_handshake", None, None, "rejected",
    )  # fmt: skip
    assert str(tls["time"]).endswith("+00:00")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("login", {"event": "login", "user": "alice", "role": "admin", "outcome": "accepted"}),
        ("login failed", {"event": "login", "role": None, "outcome": "rejected",
                          "reason": "wrong password"}),
        ("logout", {"event": "logout", "user": "alice", "outcome": "accepted", "via": "console"}),
        ("action on a study", {"event": "action", "action": "reanalyse", "target": "1.2.3.4",
                               "outcome": "accepted", "reason": "job 2 queued"}),
        ("refused action", {"event": "action", "role": "viewer", "outcome": "rejected"}),
        ("cli action", {"event": "action", "via": "cli", "user": "root", "role": None,
                        "peer_address": None}),
        ("account added", {"event": "user", "via": "cli", "action": "add", "target": "alice"}),
    ],
)  # fmt: skip
def test_what_people_did(log: JsonLogSink, name: str, expected: dict[str, object]) -> None:
    (line,) = written(log, EVENTS[name])
    assert list(line) == PERSON_KEYS
    assert {k: line[k] for k in expected} == expected


@pytest.mark.parametrize("name", ["received", "sent", "given up", "purged", "started", "stopped"])
def test_transfers_and_patient_data_are_not_written(log: JsonLogSink, name: str) -> None:
    assert written(log, EVENTS[name]) == []
    assert "PAT-1234" not in log.path.read_text()


def test_owner_only_file_and_a_logger_of_its_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = JsonLogSink.in_dir(tmp_path / "logs")
    Recorder([sink]).record(EVENTS["login"])
    sink.close()
    assert stat.S_IMODE(sink.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(sink.path.parent.stat().st_mode) == 0o700
    assert not [r for r in caplog.records if '"outcome"' in r.getMessage()]
    assert json.loads(sink.path.read_text())["user"] == "alice"
