"""With ``send_rejection_sr``, a gate rejection leaves a "not analysed: reason" SR in the outbox."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from common.settings import get_settings
from store import JobStore
from store.migrate import upgrade
from store.outbox import Outbox
from tests.harness.factories import load_cxr, spool_dataset, wrap_pixels
from worker.pipeline import run_job


def test_rejected_instance_gets_a_rejection_sr(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEEPCOVID_SEND_REJECTION_SR", "true")
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(settings.storage.db_url)
    store = JobStore(settings.storage.db_url)
    lateral = wrap_pixels(
        load_cxr("images/covid/figure1__covid__COVID-00001.jpg"), view_position="LL"
    )
    job_id = spool_dataset(store, lateral, tmp_path / "lateral.dcm")

    assert run_job(job_id, store, settings) == "rejected"
    (row,) = Outbox(store).for_job(job_id)
    assert row.kind == "rejection_sr" and row.delivery_state == "kept"
    sr = dcmread(row.path)
    assert sr.StudyInstanceUID == lateral.StudyInstanceUID
    assert sr.PatientID == lateral.PatientID
    texts = [str(e.value) for e in sr.iterall() if e.keyword == "TextValue"]
    assert any("lateral" in t.lower() for t in texts), texts
    job = store.get(job_id)
    assert job is not None and job.state == "rejected"
