"""Destination types: chosen from the text, options from the settings, rows fanned out by kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import DestinationSettings, Settings
from store import JobStore
from store.migrate import upgrade
from store.outbox import NewResult, Outbox, ResultView
from tests.harness.factories import record_job
from worker import delivery
from worker.destinations.base import (
    Credentials,
    DeliveryError,
    PermanentError,
    TransientError,
    medium_of,
    open_destination,
    send_in_order,
    type_for,
)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("PACS@pacs:104", "dimse"),
        ("PACS@[::1]:104", "dimse"),
        ("https://vna.example.org/dicom-web", "stowrs"),
        ("HTTP://127.0.0.1:8042/dicom-web", "stowrs"),
        ("mllp://ris:2575", "hl7"),
        ("fhir+https://ris/fhir", "fhir"),
    ],
)
def test_the_text_picks_the_type(text: str, kind: str) -> None:
    assert type_for(text).type_name == kind


@pytest.mark.parametrize("text", ["ftp://pacs/x", "pacs:104", ""])
def test_a_text_of_no_type_is_refused_with_the_known_ones(text: str) -> None:
    with pytest.raises(ValueError, match=r"selects no destination type.*dimse.*stowrs"):
        type_for(text)


def test_dicom_rows_go_to_dicom_types_and_messages_to_theirs() -> None:
    assert medium_of("sr") == medium_of("study_kos") == "dicom"
    assert medium_of("hl7_oru") == "hl7" and medium_of("fhir_report") == "fhir"
    assert type_for("PACS@h:1").accepts("gsps") and not type_for("PACS@h:1").accepts("hl7_oru")
    assert type_for("https://h/dicom-web").accepts("pm")
    assert not type_for("https://h/dicom-web").accepts("fhir_report")


def test_destinations_merge_and_a_table_s_options_win(tmp_path: Path) -> None:
    token = tmp_path / "token"
    settings = Settings(
        destination="A@h:1, https://vna/dicom-web",
        destination_tls=True,
        destinations=[{"url": "https://vna/dicom-web", "token_file": token}, {"url": "B@h:2"}],
    )
    targets = {t.url: t for t in settings.delivery.targets()}
    assert list(targets) == ["A@h:1", "https://vna/dicom-web", "B@h:2"]
    assert targets["A@h:1"].tls is True, "destination_tls applies to the plain list"
    assert targets["https://vna/dicom-web"].token_file == token


def test_credentials_are_read_when_used_and_half_a_pair_is_refused(tmp_path: Path) -> None:
    token, password = tmp_path / "token", tmp_path / "password"
    token.write_text("t-1\n")
    password.write_text("secret\n")
    bearer = Credentials(token_file=token)
    assert bearer.headers() == {"Authorization": "Bearer t-1"}
    token.write_text("t-2")  # rotated: the next send uses the new one
    assert bearer.headers() == {"Authorization": "Bearer t-2"}
    basic = Credentials(username="dc", password_file=password)
    assert basic.headers() == {"Authorization": "Basic ZGM6c2VjcmV0"}
    assert "secret" not in repr(basic) and "t-2" not in repr(bearer)
    with pytest.raises(ValueError, match="go together"):
        DestinationSettings(url="https://x/dicom-web", username="dc")


def test_credentials_in_the_url_are_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(ValueError, match="not in the URL"):
        open_destination("https://user:pw@vna/dicom-web", settings)


def test_queue_makes_one_row_per_destination_that_takes_the_kind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade(url)
    store = JobStore(url)
    job = record_job(store, "1.2.3.9")
    results = [
        NewResult("sr", "1.2.9.1", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.9", "1.2.3", "/r/1"),
        NewResult("hl7_oru", "msg-1", "hl7", "-", "1.2.3", "/r/2"),
    ]
    settings = Settings(destination="A@h:1,https://vna/dicom-web,mllp://ris:2575")
    outbox = Outbox(store)
    assert delivery.queue(outbox, job, results, model_version="v", settings=settings) == 3
    rows = {(r.kind, r.destination) for r in outbox.for_job(job)}
    assert rows == {
        ("sr", "A@h:1"),
        ("sr", "https://vna/dicom-web"),
        ("hl7_oru", "mllp://ris:2575"),
    }
    assert delivery.queue(outbox, job, results, model_version="v", settings=settings) == 0
    kept = Settings()
    job2 = record_job(store, "1.2.3.10")
    delivery.queue(outbox, job2, results[:1], model_version="v", settings=kept)
    assert [(r.destination, r.delivery_state) for r in outbox.for_job(job2)] == [(None, "kept")]
    store.engine.dispose()


def test_kept_results_are_not_resent_to_a_list_of_destinations(tmp_path: Path) -> None:
    """A resend would give kept rows the whole list as one text; re-analysis fans them out."""
    from store import JobState
    from store.actions import resend

    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade(url)
    store = JobStore(url)
    job = record_job(store, "1.2.3.11")
    store.set_state(job, JobState.RESULTS_BUILT)
    result = NewResult("sr", "1.2.9.5", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.9", "1.2.3", "/r")
    delivery.queue(Outbox(store), job, [result], model_version="v", settings=Settings())
    Outbox(store).settle(job)
    assert store.get(job).state == JobState.DELIVERED  # type: ignore[union-attr]
    refused = resend(store, job, by="test", destination="A@h:1,B@h:2")
    assert not refused.changed and "re-analyse" in refused.message
    assert resend(store, job, by="test", destination="A@h:1").changed
    assert [r.destination for r in Outbox(store).for_job(job)] == ["A@h:1"]
    store.engine.dispose()


def test_one_by_one_sending_stops_trying_once_the_peer_is_unreachable() -> None:
    def row(row_id: int) -> ResultView:
        return ResultView(
            id=row_id,
            job_id=1,
            kind="hl7_oru",
            model_version=None,
            sop_instance_uid=f"1.2.{row_id}",
            sop_class_uid="",
            series_instance_uid="1.2",
            study_instance_uid=None,
            path="",
            destination="mllp://ris:2575",
            delivery_state="pending",
            attempts=0,
            last_error=None,
        )

    refused, down = PermanentError("AR"), TransientError("unreachable")
    answers = {1: None, 2: refused, 3: down}
    tried: list[int] = []

    def send_one(view: ResultView) -> DeliveryError | None:
        tried.append(view.id)
        return answers.get(view.id)

    outcome = send_in_order([row(i) for i in (1, 2, 3, 4, 5)], send_one)

    assert tried == [1, 2, 3]
    assert outcome == {1: None, 2: refused, 3: down, 4: down, 5: down}
