"""One ``record(event)``: every configured sink gets the event; a broken sink stops no other."""

from __future__ import annotations

from pathlib import Path

import pytest

import audit
from audit import events as ev
from audit.recorder import Recorder
from audit.sinks.json_log import JsonLogSink, read_events
from tests.unit.audit.examples import EVENTS


class BrokenSink:
    """A sink whose disk is full."""

    def write(self, event: ev.AuditEvent) -> None:
        raise OSError(28, "No space left on device")

    def flush(self, timeout_s: float = 5.0) -> bool:
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        pass


def test_a_failing_sink_is_logged_and_the_next_still_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = JsonLogSink(tmp_path / "audit.log")
    recorder = Recorder([BrokenSink(), sink])
    recorder.record(EVENTS["login failed"])
    recorder.close()
    assert [e["user"] for e in read_events(sink.path)] == ["mallory"]
    assert "login-failed could not be written" in caplog.text


def test_configure_then_record_then_close(tmp_path: Path) -> None:
    audit.record(EVENTS["login"])  # before configure: goes nowhere, raises nothing
    first = audit.configure(audit.open_recorder(ae_title="DEEPCOVID", log_dir=tmp_path / "a"))
    audit.record(EVENTS["login"])
    second = audit.configure(
        audit.open_recorder(ae_title="DEEPCOVID", log_dir=tmp_path / "b")
    )  # closes the first
    assert audit.current() is second and first is not second
    audit.record(EVENTS["logout"])
    audit.close()
    audit.record(EVENTS["login failed"])  # after close: nowhere
    assert [e["event"] for e in read_events(tmp_path / "a" / "audit.log")] == ["login"]
    assert [e["event"] for e in read_events(tmp_path / "b" / "audit.log")] == ["logout"]


def test_no_syslog_sink_without_a_host(tmp_path: Path) -> None:
    recorder = audit.open_recorder(ae_title="DEEPCOVID", log_dir=tmp_path, syslog_host="")
    assert [type(s).__name__ for s in recorder.sinks] == ["JsonLogSink"]
    recorder.close()
    assert audit.open_recorder(ae_title="DEEPCOVID").sinks == ()
