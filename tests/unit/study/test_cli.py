"""``deepcovid studies list | show``: a settled study, its result and its images, as printed."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from sqlalchemy import update

from common.settings import Settings
from common.states import JobState
from deepcovid.cli import main
from store import JobStore
from store.migrate import upgrade
from store.schema import Job
from store.studies import Studies
from tests.harness.factories import spool_dataset, wrap_pixels
from worker.study.watcher import issue_due


@pytest.fixture
def answered(settings: Settings) -> tuple[str, JobStore]:
    """A study of one present film and one rejected film, settled and answered."""
    settings.storage.ensure_dirs()
    upgrade(settings.storage.db_url)
    store = JobStore(settings.storage.db_url)
    study = "1.2.826.0.1.3680043.8.498.777"
    for n, (state, fields) in enumerate(
        [
            (JobState.DELIVERED, {"finding": "present", "probability": 0.8, "threshold": 0.5}),
            (JobState.REJECTED, {"reason": "lateral view (from the image)"}),
        ],
        start=1,
    ):
        ds = wrap_pixels(np.zeros((32, 32), dtype=np.uint16), study_instance_uid=study)
        job_id = spool_dataset(store, ds, settings.storage.spool / f"{n}.dcm")
        assert store.set_state(job_id, state, "test", modality="CR", **fields)
    with store.session() as s:
        old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        s.execute(update(Job).values(updated_at=old))
    assert issue_due(store, settings) == 1
    return study, store


def test_studies_list_and_show_print_the_result_and_images(
    answered: tuple[str, JobStore], capsys: pytest.CaptureFixture[str]
) -> None:
    study, store = answered
    (result,) = Studies(store).results(study)
    assert main(["studies", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].startswith("LAST CHANGE (UTC)")
    assert "present" in listed[1] and "0.800" in listed[1] and listed[1].endswith(study)

    assert main(["studies", "show", study]) == 0
    shown = capsys.readouterr().out
    assert f"study {study}: 2 image(s), 1 study result(s)" in shown
    assert f"SR  {result.sr_sop_instance_uid}" in shown
    assert f"KOS {result.kos_sop_instance_uid}" in shown
    assert "lateral view (from the image)" in shown
    assert shown.count("*") == 2  # the driving image, and the legend

    assert main(["studies", "show", study, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["finding"] for r in data["results"]] == ["present"]
    assert [i["state"] for i in data["images"]] == ["delivered", "rejected"]


def test_an_unknown_study_says_where_to_look(
    answered: tuple[str, JobStore], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["studies", "show", "1.2.3.4"]) == 1
    assert "`deepcovid studies list`" in capsys.readouterr().err
