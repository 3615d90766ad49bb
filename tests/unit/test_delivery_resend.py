"""A retried delivery asks the destination first, so an object is never received twice.

Found by the fault tests: a worker terminated between the destination's C-STORE Success and
the outbox update left the objects ``sending``; the node's dispatcher later sent them again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from common.settings import Settings
from dicom_client.scu import SendReport, SendResult
from store import JobState, JobStore
from store.migrate import upgrade
from store.outbox import NewResult, Outbox
from worker import delivery
from worker.destinations import dimse

DEST = "PACS@127.0.0.1:104"


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade(url)
    store = JobStore(url)
    job = store.record_received(
        sop_instance_uid="1.2.3",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
        study_instance_uid="1.2",
        series_instance_uid="1.2.1",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        calling_ae="X",
        spool_path="/x",
        sha256="0" * 64,
        size_bytes=1,
    ).job_id
    store.set_state(job, JobState.RESULTS_BUILT)
    box = Outbox(store)
    box.add(
        job,
        [
            NewResult(kind, f"1.2.9.{i}", "1.2.840.10008.5.1.4.1.1.7", "1.2.9", "1.2", f"/r/{i}")
            for i, kind in enumerate(("sr", "sc", "pm"))
        ],
        model_version="v1",
        destination=DEST,
    )
    return box


class FakeSender:
    """Records what it sends; the fake destination then holds ``1.2.9.<n>`` for ``/r/<n>``."""

    sent: ClassVar[list[str]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.tls = kwargs.get("tls")

    def send_files(self, paths: list[str]) -> SendReport:
        FakeSender.sent.extend(paths)
        return SendReport([SendResult(p, status=0) for p in paths])


def test_a_retry_confirms_what_the_destination_holds_and_sends_the_rest(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    queries: list[list[str]] = []

    def find(destination: Any, keys: Any, **_: Any) -> set[str]:
        uids = [k[2] for k in keys]
        queries.append(uids)
        held = {"1.2.9.0", "1.2.9.1"} | {p.replace("/r/", "1.2.9.") for p in FakeSender.sent}
        return held & set(uids)

    FakeSender.sent = []
    monkeypatch.setattr(dimse, "Sender", FakeSender)
    monkeypatch.setattr(dimse, "find_instances", find)
    settings = Settings(destination=DEST)
    first = outbox.claim_due(lease_s=60)  # attempt 1 ... and the sender dies
    assert {r.attempts for r in first} == {1}
    again = outbox.claim_due(lease_s=0)  # the stale claim is taken again: attempt 2
    assert {r.attempts for r in again} == {2}
    assert delivery._deliver(outbox, settings, DEST, again) == 3
    assert FakeSender.sent == ["/r/2"], "only the object the destination lacks is sent"
    states = {r.sop_instance_uid: r.delivery_state for r in outbox.for_job(again[0].job_id)}
    assert states == {"1.2.9.0": "confirmed", "1.2.9.1": "confirmed", "1.2.9.2": "confirmed"}
    assert queries[0] == ["1.2.9.0", "1.2.9.1", "1.2.9.2"]  # asked before sending
    assert outbox.store.list()[0].state == "delivered"


def test_a_first_attempt_is_sent_without_asking(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def find(destination: Any, keys: Any, **_: Any) -> set[str]:
        calls.append(1)
        return {k[2] for k in keys}

    FakeSender.sent = []
    monkeypatch.setattr(dimse, "Sender", FakeSender)
    monkeypatch.setattr(dimse, "find_instances", find)
    rows = outbox.claim_due(lease_s=60)
    assert delivery._deliver(outbox, Settings(destination=DEST), DEST, rows) == 3
    assert sorted(FakeSender.sent) == ["/r/0", "/r/1", "/r/2"]
    assert len(calls) == 1, "one C-FIND: the confirmation after sending, none before"


def test_a_success_makes_the_results_waiting_for_that_destination_due_again(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an outage, one object that gets through wakes the others waiting out a back-off."""
    FakeSender.sent = []
    monkeypatch.setattr(dimse, "Sender", FakeSender)
    monkeypatch.setattr(dimse, "find_instances", lambda d, keys, **_: {k[2] for k in keys})
    settings = Settings(destination=DEST, delivery_backoff_s=300)
    rows = outbox.claim_due(lease_s=60)
    first, waiting = rows[0], rows[1:]
    for row in waiting:  # failed while the destination was down: due in 5 minutes
        delivery._failed(outbox, settings, row, "connection refused")
    assert outbox.claim_due(lease_s=60) == [], "nothing due while they wait"
    assert delivery._deliver(outbox, settings, DEST, [first]) == 1
    again = outbox.claim_due(lease_s=60)
    assert sorted(r.sop_instance_uid for r in again) == sorted(r.sop_instance_uid for r in waiting)
    assert {r.attempts for r in again} == {2}, "attempts are counted as before"


def test_a_success_wakes_only_its_own_destination(outbox: Outbox) -> None:
    rows = outbox.claim_due(lease_s=60)
    for row in rows:
        outbox.mark(row.id, delivery.DeliveryState.PENDING, error="down", retry_in_s=300)
    assert outbox.wake("OTHER@127.0.0.1:11112") == 0
    assert outbox.claim_due(lease_s=60) == []
    assert outbox.wake(DEST) == len(rows)
    assert len(outbox.claim_due(lease_s=60)) == len(rows)
