"""The study watcher on a real SQLite job store: when a study settles, what it issues, once.

The worker's analysis is stood in for by setting the jobs' outcomes as the pipeline records
them; the SR and KOS are written to a real results folder and put in the outbox (no
destination: kept). The RIS notification is captured where ``worker.notify`` would queue it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import update

from common.settings import Settings
from common.states import JobState
from ris.outcome import StudyOutcome
from store import JobStore
from store.migrate import upgrade
from store.outbox import Outbox
from store.schema import Job
from store.studies import NewStudyResult, Studies
from tests.harness.factories import random_registry, spool_dataset, wrap_pixels
from worker.study import watcher

SETTLE_S = 30.0


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def version(registry: Path) -> str:
    """The model version the study's images were analysed with (the registry's active one)."""
    from models.registry import Registry

    active = Registry(registry).active_version()
    assert active is not None
    return active


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade(url)
    return JobStore(url)


@pytest.fixture
def settings(tmp_path: Path, registry: Path) -> Settings:
    return Settings(data_dir=tmp_path, model_registry_dir=registry, study_settle_s=SETTLE_S)


@pytest.fixture
def told(monkeypatch: pytest.MonkeyPatch) -> list[StudyOutcome]:
    """The outcomes handed to ``worker.notify.queue_notifications``."""
    outcomes: list[StudyOutcome] = []

    def capture(store: Any, outcome: StudyOutcome, settings: Any) -> int:
        outcomes.append(outcome)
        return 0

    monkeypatch.setattr("worker.notify.queue_notifications", capture)
    return outcomes


class Study:
    """A study whose images arrive and get their outcome."""

    def __init__(self, store: JobStore, tmp_path: Path, version: str = "v0001") -> None:
        self.store = store
        self.version = version
        self.uid = generate_uid()
        self.spool = tmp_path / "spool"
        self.spool.mkdir(exist_ok=True)
        self.jobs: list[int] = []

    def image(
        self,
        state: JobState = JobState.DELIVERED,
        *,
        finding: str | None = "absent",
        probability: float | None = 0.2,
        reason: str | None = None,
        view: str = "PA",
    ) -> int:
        ds = wrap_pixels(
            np.zeros((64, 48), dtype=np.uint16), view_position=view, study_instance_uid=self.uid
        )
        ds.SeriesNumber = ds.InstanceNumber = len(self.jobs) + 1
        job_id = spool_dataset(self.store, ds, self.spool / f"{ds.SOPInstanceUID}.dcm")
        fields: dict[str, Any] = {"modality": "CR", "rows": 64, "columns": 48, "reason": reason}
        if finding is not None:
            fields |= {
                "finding": finding,
                "probability": probability,
                "threshold": 0.5,
                "model_version": self.version,
            }
        assert self.store.set_state(job_id, state, "test outcome", **fields)
        self.jobs.append(job_id)
        return job_id

    def age(self, seconds: float) -> None:
        """Pretend the study's jobs last changed ``seconds`` ago."""
        when = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
        with self.store.session() as s:
            s.execute(update(Job).where(Job.id.in_(self.jobs)).values(updated_at=when))


def test_a_study_is_left_alone_until_it_has_settled(
    store: JobStore, settings: Settings, tmp_path: Path, told: list[StudyOutcome]
) -> None:
    study = Study(store, tmp_path)
    study.image(finding="present", probability=0.8)
    assert watcher.issue_due(store, settings) == 0  # changed just now
    study.image(JobState.ANALYSING, finding=None)
    study.age(SETTLE_S + 5)
    assert watcher.issue_due(store, settings) == 0  # one image still being analysed
    assert Studies(store).results(study.uid) == []
    assert told == []


def test_a_study_waits_for_its_images_own_deliveries(
    store: JobStore, settings: Settings, tmp_path: Path, told: list[StudyOutcome]
) -> None:
    study = Study(store, tmp_path)
    job = study.image(JobState.RESULTS_BUILT, finding="present", probability=0.8)
    study.age(SETTLE_S + 5)
    assert watcher.issue_due(store, settings) == 0  # its SR, SC ... still on their way (PACS down)
    assert store.set_state(job, JobState.DELIVERED, "delivered")
    study.age(SETTLE_S + 1)
    assert watcher.issue_due(store, settings) == 1


def test_a_settled_study_gets_one_sr_and_one_kos_once(
    store: JobStore, settings: Settings, tmp_path: Path, told: list[StudyOutcome], version: str
) -> None:
    study = Study(store, tmp_path, version)
    study.image(finding="absent", probability=0.2)
    driver = study.image(finding="present", probability=0.8)
    study.image(JobState.REJECTED, finding=None, reason="lateral view (from the image)", view="LL")
    study.age(SETTLE_S + 5)

    assert watcher.issue_due(store, settings) == 1
    assert watcher.issue_due(store, settings) == 0  # nothing changed: nothing new
    (result,) = Studies(store).results(study.uid)
    assert (result.sequence, result.finding, result.images) == (1, "present", 3)
    assert result.queued_at is not None
    driver_job = store.get(driver)
    assert driver_job is not None
    assert result.driving_sop_instance_uid == driver_job.sop_instance_uid

    objects = {row.kind: row for row in Outbox(store).for_job(driver)}
    assert set(objects) == {"study_sr", "study_kos"}
    assert objects["study_sr"].sop_instance_uid == result.sr_sop_instance_uid
    assert objects["study_kos"].sop_instance_uid == result.kos_sop_instance_uid
    assert all(row.delivery_state == "kept" for row in objects.values())  # no destination
    sr = dcmread(objects["study_sr"].path)
    assert sr.StudyInstanceUID == study.uid
    assert "PredecessorDocumentsSequence" not in sr

    (outcome,) = told
    assert (outcome.finding, outcome.probability, outcome.threshold) == ("present", 0.8, 0.5)
    assert outcome.sr_sop_instance_uid == result.sr_sop_instance_uid
    assert outcome.kos_sop_instance_uid == result.kos_sop_instance_uid
    assert outcome.replaces_sr_sop_instance_uid is None
    assert (outcome.patient_id, outcome.accession_number) == ("TEST0001", "ACC0001")
    assert [image.finding for image in outcome.images] == ["absent", "present", "rejected"]
    assert outcome.model_version == study.version
    assert outcome.issued.tzinfo is not None


def test_an_image_after_the_result_makes_a_replacement_naming_it(
    store: JobStore, settings: Settings, tmp_path: Path, told: list[StudyOutcome]
) -> None:
    study = Study(store, tmp_path)
    study.image(finding="absent", probability=0.2)
    study.age(SETTLE_S + 5)
    assert watcher.issue_due(store, settings) == 1
    first = Studies(store).latest(study.uid)
    assert first is not None and first.finding == "absent"

    study.image(finding="present", probability=0.9)
    assert watcher.issue_due(store, settings) == 0  # the new image has not settled yet
    study.age(SETTLE_S + 1)
    assert watcher.issue_due(store, settings) == 1
    second = Studies(store).latest(study.uid)
    assert second is not None
    assert (second.sequence, second.finding, second.images) == (2, "present", 2)
    assert second.predecessor_sr_sop_instance_uid == first.sr_sop_instance_uid
    assert told[-1].replaces_sr_sop_instance_uid == first.sr_sop_instance_uid

    sr = dcmread(Path(settings.storage.results) / study.uid / f"{second.sr_sop_instance_uid}.dcm")
    (predecessor,) = sr.PredecessorDocumentsSequence
    (series,) = predecessor.ReferencedSeriesSequence
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.sr_sop_instance_uid


def test_an_image_received_again_with_the_same_outcome_changes_nothing(
    store: JobStore, settings: Settings, tmp_path: Path, told: list[StudyOutcome]
) -> None:
    study = Study(store, tmp_path)
    study.image(finding="present", probability=0.7)
    study.age(SETTLE_S + 5)
    assert watcher.issue_due(store, settings) == 1
    study.age(SETTLE_S + 1)  # a later change (received again), analysed to the same outcome
    assert watcher.issue_due(store, settings) == 0
    assert len(Studies(store).results(study.uid)) == 1
    assert len(told) == 1


def test_a_study_with_no_analysed_image_sends_nothing_by_default(
    store: JobStore, settings: Settings, tmp_path: Path, told: list[StudyOutcome]
) -> None:
    study = Study(store, tmp_path)
    job = study.image(JobState.REJECTED, finding=None, reason="CT slice (from the image)")
    study.age(SETTLE_S + 5)
    assert watcher.issue_due(store, settings) == 1
    assert watcher.issue_due(store, settings) == 0  # recorded: not looked at again
    (result,) = Studies(store).results(study.uid)
    assert (result.finding, result.sr_sop_instance_uid, result.kos_sop_instance_uid) == (
        "indeterminate",
        None,
        None,
    )
    assert Outbox(store).for_job(job) == []
    assert told == []
    assert not (Path(settings.storage.results) / study.uid).exists()

    # a frontal film arrives later: a real result, replacing nothing that was sent
    study.image(finding="absent", probability=0.3)
    study.age(SETTLE_S + 1)
    assert watcher.issue_due(store, settings) == 1
    second = Studies(store).latest(study.uid)
    assert second is not None and second.sequence == 2
    assert (second.finding, second.predecessor_sr_sop_instance_uid) == ("absent", None)
    assert second.sr_sop_instance_uid is not None
    assert told[-1].replaces_sr_sop_instance_uid is None


def test_with_send_rejection_sr_a_study_of_rejected_images_gets_its_sr_without_kos(
    store: JobStore, registry: Path, tmp_path: Path, told: list[StudyOutcome]
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        model_registry_dir=registry,
        study_settle_s=SETTLE_S,
        send_rejection_sr=True,
    )
    study = Study(store, tmp_path)
    job = study.image(JobState.REJECTED, finding=None, reason="CT slice (from the image)")
    study.age(SETTLE_S + 5)
    assert watcher.issue_due(store, settings) == 1
    (result,) = Studies(store).results(study.uid)
    assert (result.finding, result.kos_sop_instance_uid) == ("indeterminate", None)
    assert [row.kind for row in Outbox(store).for_job(job)] == ["study_sr"]
    assert told[0].sr_sop_instance_uid == result.sr_sop_instance_uid
    assert told[0].kos_sop_instance_uid is None


def test_only_one_of_two_racing_watchers_claims_a_result(
    store: JobStore, settings: Settings, tmp_path: Path
) -> None:
    claim = NewStudyResult(
        study_instance_uid=generate_uid(),
        sequence=1,
        fingerprint="f" * 64,
        finding="absent",
        probability=0.1,
        threshold=0.5,
        model_version="v0001",
        images=1,
        driving_sop_instance_uid=None,
        sr_sop_instance_uid=generate_uid(),
        kos_sop_instance_uid=None,
        predecessor_sr_sop_instance_uid=None,
        covers_until=dt.datetime.now(dt.UTC),
    )
    assert Studies(store).claim(claim) is not None
    assert Studies(store).claim(claim) is None


def test_a_failed_build_releases_its_claim_and_waits_before_trying_again(
    store: JobStore,
    settings: Settings,
    tmp_path: Path,
    told: list[StudyOutcome],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    study = Study(store, tmp_path)
    study.image(finding="absent", probability=0.2)
    study.age(SETTLE_S + 5)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("results folder unwritable")

    monkeypatch.setattr(watcher, "_build_and_queue", broken)
    skip: dict[str, float] = {}
    assert watcher.issue_due(store, settings, skip=skip) == 0
    assert Studies(store).results(study.uid) == []  # released: built again later
    assert study.uid in skip
    monkeypatch.undo()
    monkeypatch.setattr("worker.notify.queue_notifications", lambda *a: 0)
    assert watcher.issue_due(store, settings, skip=skip) == 0  # still waiting out the pause
    assert watcher.issue_due(store, settings) == 1


def test_studies_older_than_the_lookback_are_never_answered(
    store: JobStore, settings: Settings, tmp_path: Path, told: list[StudyOutcome]
) -> None:
    study = Study(store, tmp_path)
    study.image(finding="present", probability=0.9)
    study.age(3 * 24 * 3600)  # finished days before this node version was installed
    assert watcher.issue_due(store, settings) == 0
    assert told == []


def test_a_claim_left_by_a_dead_watcher_is_released_and_built_again(
    store: JobStore, settings: Settings, tmp_path: Path, told: list[StudyOutcome]
) -> None:
    from store.schema import StudyResult

    study = Study(store, tmp_path)
    study.image(finding="present", probability=0.9)
    study.age(SETTLE_S + 5)
    last = Studies(store).jobs(study.uid)[-1].updated_at
    dead = NewStudyResult(
        study_instance_uid=study.uid,
        sequence=1,
        fingerprint="0" * 64,
        finding="present",
        probability=0.9,
        threshold=0.5,
        model_version="v0001",
        images=1,
        driving_sop_instance_uid=None,
        sr_sop_instance_uid=generate_uid(),
        kos_sop_instance_uid=None,
        predecessor_sr_sop_instance_uid=None,
        covers_until=last,
    )
    assert Studies(store).claim(dead) is not None  # killed before it queued anything
    assert watcher.issue_due(store, settings) == 0  # covered by the claim: nothing to do yet
    with store.session() as s:
        old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
        s.execute(update(StudyResult).values(created_at=old))
    assert watcher.issue_due(store, settings) == 1  # released, then built
    (result,) = Studies(store).results(study.uid)
    assert result.queued_at is not None and result.fingerprint != "0" * 64
    assert len(told) == 1
