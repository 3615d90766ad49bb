"""The console's studies pages: the list, one study with its results, images and study SR, and
no patient data on either (the study SR itself carries the patient module)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update

from common.states import JobState
from store.schema import Job
from store.studies import Studies
from tests.harness.factories import spool_dataset, wrap_pixels
from tests.unit.dicom_node.test_console import PATIENT_ID, PATIENT_NAME, Env
from worker.study.watcher import issue_due


@pytest.fixture
def env(tmp_path: Path, model_registry: Path) -> Iterator[Env]:
    made = Env(tmp_path, model_registry)
    yield made
    made.audit.close()


def settled_study(env: Env) -> tuple[str, list[str]]:
    """A study of a present and a rejected film, settled and answered; its UID and images."""
    study = "1.2.826.0.1.3680043.8.498.4242"
    spool = env.settings.storage.spool
    uids = []
    for n, (state, fields) in enumerate(
        [
            (JobState.DELIVERED, {"finding": "present", "probability": 0.8, "threshold": 0.5}),
            (JobState.REJECTED, {"reason": "lateral view (from the image)"}),
        ],
        start=1,
    ):
        ds = wrap_pixels(
            np.zeros((32, 32), dtype=np.uint16),
            patient_name=PATIENT_NAME,
            patient_id=PATIENT_ID,
            study_instance_uid=study,
        )
        ds.InstanceNumber = n
        job_id = spool_dataset(env.store, ds, spool / f"{n}.dcm")
        extra = {"model_version": "v0001"} if "finding" in fields else {}
        assert env.store.set_state(job_id, state, "test", modality="CR", **fields, **extra)
        uids.append(str(ds.SOPInstanceUID))
    with env.store.session() as s:
        old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        s.execute(update(Job).where(Job.study_instance_uid == study).values(updated_at=old))
    assert issue_due(env.store, env.settings) == 1
    return study, uids


def test_the_studies_page_lists_a_study_with_its_finding(env: Env) -> None:
    study, _ = settled_study(env)
    page = env.login("victor").get("/studies")
    assert page.status_code == 200
    assert f'href="/studies/{study}"' in page.text
    assert '<span class="finding present">present</span>' in page.text
    assert "#1" in page.text


def test_a_study_page_shows_results_images_the_driver_and_the_study_sr(env: Env) -> None:
    study, images = settled_study(env)
    (result,) = Studies(env.store).results(study)
    page = env.login("victor").get(f"/studies/{study}").text
    assert result.sr_sop_instance_uid in page
    assert result.kos_sop_instance_uid is not None and result.kos_sop_instance_uid in page
    assert page.count("★") == 2  # the driving image's row, and the legend
    assert "lateral view (from the image)" in page
    assert "Qualitative Evaluations" in page and "Study finding: present in 1 of 1" in page
    for secret in ("Doe", "Jane", PATIENT_ID, "19700101"):
        assert secret not in page, secret
    # ... although the study SR carries them, and names the present film as the driver
    sr_file = env.settings.storage.results / study / f"{result.sr_sop_instance_uid}.dcm"
    assert PATIENT_ID.encode() in sr_file.read_bytes()
    assert result.driving_sop_instance_uid == images[0]


def test_an_unknown_or_malformed_study_is_not_found_and_a_login_is_needed(env: Env) -> None:
    admin = env.login()
    assert admin.get("/studies/1.2.3.4").status_code == 404
    assert admin.get("/studies/not-a-uid").status_code == 404
    assert admin.get("/studies?page=x").status_code == 200
    anonymous = env.client().get("/studies")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/login?next=")


def test_a_study_with_nothing_analysed_says_no_sr_was_sent(env: Env) -> None:
    study = "1.2.826.0.1.3680043.8.498.4343"
    ds = wrap_pixels(np.zeros((32, 32), dtype=np.uint16), study_instance_uid=study)
    job_id = spool_dataset(env.store, ds, env.settings.storage.spool / "ct.dcm")
    assert env.store.set_state(job_id, JobState.REJECTED, "t", reason="CT slice (from the image)")
    with env.store.session() as s:
        old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        s.execute(update(Job).where(Job.study_instance_uid == study).values(updated_at=old))
    assert issue_due(env.store, env.settings) == 1
    page = env.login("victor").get(f"/studies/{study}").text
    assert "none sent: no image analysed" in page
    assert "No study SR was sent" in page
