"""With ``send_rejection_sr``, a gate rejection leaves a "not analysed: reason" SR in the outbox."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from common.settings import get_settings
from store import JobStore
from store.migrate import upgrade
from store.outbox import Outbox
from tests.factories import load_cxr, wrap_pixels
from worker.pipeline import run_job

pytestmark = pytest.mark.integration


def test_rejected_instance_gets_a_rejection_sr(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEEPCOVID_SEND_REJECTION_SR", "true")
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(settings.db_url)
    store = JobStore(settings.db_url)
    lateral = wrap_pixels(
        load_cxr("images/covid/figure1__covid__COVID-00001.jpg"), view_position="LL"
    )
    path = tmp_path / "lateral.dcm"
    lateral.save_as(path, enforce_file_format=True)
    job_id = store.record_received(
        sop_instance_uid=str(lateral.SOPInstanceUID),
        sop_class_uid=str(lateral.SOPClassUID),
        study_instance_uid=str(lateral.StudyInstanceUID),
        series_instance_uid=str(lateral.SeriesInstanceUID),
        transfer_syntax_uid=str(lateral.file_meta.TransferSyntaxUID),
        calling_ae="TEST",
        spool_path=str(path),
        sha256="0" * 64,
        size_bytes=path.stat().st_size,
    ).job_id

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
