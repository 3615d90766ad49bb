"""Setting ``parametric_map``: the worker leaves the map out where the setting says so."""

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

PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"


def test_with_spacing_leaves_the_map_out_for_a_cr_without_spacing(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A frontal CR stating no spacing: SC, GSPS and SR reach the outbox, in that order; the
    SR references no map."""
    monkeypatch.setenv("DEEPCOVID_PARAMETRIC_MAP", "with_spacing")
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(settings.storage.db_url)
    store = JobStore(settings.storage.db_url)
    cr = wrap_pixels(
        load_cxr("images/covid/figure1__covid__COVID-00001.jpg"), imager_pixel_spacing=None
    )
    assert "PixelSpacing" not in cr and "ImagerPixelSpacing" not in cr
    job_id = spool_dataset(store, cr, tmp_path / "cr.dcm")

    assert run_job(job_id, store, settings) == "delivered"  # no destination: kept only
    rows = Outbox(store).for_job(job_id)
    assert [row.kind for row in rows] == ["sc", "pr", "sr"]
    assert PARAMETRIC_MAP_STORAGE not in {row.sop_class_uid for row in rows}
    sr = dcmread(rows[-1].path)
    referenced = {str(e.value) for e in sr.iterall() if e.keyword == "ReferencedSOPClassUID"}
    assert PARAMETRIC_MAP_STORAGE not in referenced
