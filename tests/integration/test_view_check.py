"""The view check from the pixels, through storescu, the node and a worker (embedded broker).

A lateral sent as CR with no View Position and a CT slice labelled CR, chest, PA pass the header
gate; the pixels reject them with their reasons. A frontal DX film is analysed, its timeline
records the check, and its SR names the check's version. The images are ones the shipped check
never saw: the lateral and the CT slice from its held-out fold (card ``held_out_images``), the
frontal film from the manifest's test split. Rejections get the rejection SR, as the gate's do.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from models.viewcheck import CARD_FILE
from store import JobStore
from store.outbox import Outbox
from tests.harness.factories import CXR_DIR, DX_PRESENTATION_STORAGE, wrap_pixels
from tests.harness.net import wait_for
from tests.harness.services import ServiceProcess
from tests.harness.views import VIEWS_MANIFEST, held_out_view, image_pixels
from worker.view import LATERAL_REASON, OTHER_REASON


def _frontal_test_film() -> Path:
    from training.manifest import read_manifest

    rows = read_manifest(CXR_DIR / "manifest.csv").split("test")
    return next(r.path for r in rows if r.source == "nih_chestxray8")


def test_lateral_and_ct_are_rejected_from_the_pixels_and_a_frontal_dx_is_analysed(
    settings_env: dict[str, str],
    services: list[ServiceProcess],
    tmp_path: Path,
) -> None:
    if not VIEWS_MANIFEST.is_file():
        pytest.skip("shared/data/views is not here")
    env = {**settings_env, "DEEPCOVID_VIEW_CHECK": "true", "DEEPCOVID_SEND_REJECTION_SR": "true"}
    lateral = wrap_pixels(image_pixels(held_out_view("lateral")), view_position=None)
    ct = wrap_pixels(image_pixels(held_out_view("ct_axial")))  # CR, CHEST, PA: the header lies
    frontal = wrap_pixels(
        image_pixels(_frontal_test_film()), modality="DX", sop_class_uid=DX_PRESENTATION_STORAGE
    )
    files = []
    for name, ds in (("lateral", lateral), ("ct", ct), ("frontal", frontal)):
        files.append(tmp_path / f"{name}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)

    for name in ("node", "worker"):
        services.append(ServiceProcess([name], env, tmp_path / f"{name}.log").start())
    port = env["DEEPCOVID_PORT"]

    def echo() -> bool:
        cmd = ["echoscu", "-aec", "DEEPCOVID", "127.0.0.1", port]
        return subprocess.run(cmd, capture_output=True).returncode == 0

    wait_for(echo, timeout=90, what="the node to answer C-ECHO")
    cmd = ["storescu", "-aet", "MODALITY", "-aec", "DEEPCOVID", "127.0.0.1", port, *map(str, files)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr

    store = JobStore(f"sqlite:///{Path(env['DEEPCOVID_DATA_DIR']) / 'jobs.sqlite'}")
    done = {"rejected", "results_built", "delivered", "failed"}

    def all_done() -> bool:
        jobs = store.list()
        return len(jobs) == 3 and all(j.state in done for j in jobs)

    wait_for(all_done, timeout=240, what="three jobs finished")
    jobs = {j.sop_instance_uid: j for j in store.list()}
    for ds, reason in ((lateral, LATERAL_REASON), (ct, OTHER_REASON)):
        job = jobs[str(ds.SOPInstanceUID)]
        assert (job.state, job.reason) == ("rejected", reason)
        messages = [e.message or "" for e in store.events(job.id)]
        assert any("view check" in m and "the image decides" in m for m in messages), messages
        (row,) = Outbox(store).for_job(job.id)  # the rejection SR, through the gate's path
        sr = dcmread(row.path)
        texts = [str(e.value) for e in sr.iterall() if e.keyword == "TextValue"]
        assert row.kind == "rejection_sr" and any(reason in t for t in texts), texts
    job = jobs[str(frontal.SOPInstanceUID)]
    assert job.state in {"results_built", "delivered"} and job.probability is not None, job
    messages = [e.message or "" for e in store.events(job.id)]
    assert any(m.startswith("view check ") and ": frontal (" in m for m in messages), messages
    (sr_row,) = [r for r in Outbox(store).for_job(job.id) if r.kind == "sr"]
    version = json.loads(CARD_FILE.read_text(encoding="utf-8"))["version"]
    texts = [str(e.value) for e in dcmread(sr_row.path).iterall() if e.keyword == "TextValue"]
    assert f"view_check={version}" in texts, texts
