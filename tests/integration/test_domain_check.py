"""An image the gate accepts but the model was never validated on: the service says indeterminate.

A DX "chest" whose pixels are uniform noise passes every input-gate check (DX, CHEST, PA,
grayscale, 8-bit). The shipped model calls it COVID-19 (p about 0.86); its domain
check (Mahalanobis distance of the penultimate features, about 172 against a limit of 71)
flags it. Sent with ``storescu`` to a node and a worker running the shipped model, it must come
back as an SR whose finding is Indeterminate with the reason, an overlay that says so, a job
whose finding is ``indeterminate`` with a timeline entry that says why, and a ``/metrics``
count of indeterminate findings. A real chest DX sent with it is analysed as usual.

The same holds for a real image: a CT head slice from pydicom's test files that arrives
labelled as a chest CR (a mislabelled or mis-routed study; the gate trusts the header). The
model alone calls it COVID-19 (p about 0.62, above the threshold 0.32); the domain check
(about 92 against 71) makes it indeterminate.
"""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from common.paths import SHIPPED_REGISTRY
from models.dicom_pixels import dicom_to_array
from store import JobStore
from store.outbox import Outbox
from tests.harness.factories import DICOM_DIR, DX_PRESENTATION_STORAGE, wrap_pixels
from tests.harness.net import wait_for
from tests.harness.services import ServiceProcess
from tests.harness.srread import read_report
from worker.results import OUTSIDE_DOMAIN, codes


def noise_dx(path: Path) -> Path:
    """A DX chest PA in every header respect, with uniform noise for pixels."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(256, 256), dtype=np.uint8)
    ds = wrap_pixels(pixels, modality="DX", sop_class_uid=DX_PRESENTATION_STORAGE)
    ds.save_as(path, enforce_file_format=True)
    return path


def mislabelled_ct_head(path: Path) -> Path:
    """pydicom's CT head slice in its brain window, sent as an 8-bit chest CR PA."""
    import pydicom.data

    ct = dcmread(Path(pydicom.data.__file__).parent / "test_files" / "J2K_pixelrep_mismatch.dcm")
    assert ct.Modality == "CT" and ct.BodyPartExamined == "HEAD"
    shown = dicom_to_array(ct)  # the first window (40/100), as a viewer opens it
    ds = wrap_pixels(np.round(shown * 255).astype(np.uint8))  # CR, CHEST, PA
    ds.save_as(path, enforce_file_format=True)
    return path


def test_out_of_domain_dx_is_reported_indeterminate(
    settings_env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    env = {**settings_env, "DEEPCOVID_MODEL_REGISTRY_DIR": str(SHIPPED_REGISTRY)}
    noise = noise_dx(tmp_path / "noise.dcm")
    ct_head = mislabelled_ct_head(tmp_path / "ct-head.dcm")
    chest = DICOM_DIR / "nih_chestxray_DX_nhsx_test.dcm"
    for name in ("node", "worker"):
        services.append(ServiceProcess([name], env, tmp_path / f"{name}.log").start())
    port = env["DEEPCOVID_PORT"]
    echo = ["echoscu", "-aec", "DEEPCOVID", "127.0.0.1", port]
    wait_for(lambda: subprocess.run(echo, capture_output=True).returncode == 0, timeout=90)
    store_cmd = [
        "storescu",
        "-aec",
        "DEEPCOVID",
        "127.0.0.1",
        port,
        str(noise),
        str(ct_head),
        str(chest),
    ]
    sent = subprocess.run(store_cmd, capture_output=True, text=True)
    assert sent.returncode == 0, sent.stderr

    store = JobStore(f"sqlite:///{Path(env['DEEPCOVID_DATA_DIR']) / 'jobs.sqlite'}")
    wait_for(lambda: store.counts() == {"delivered": 3}, timeout=300, what="all analysed")

    job = store.get_by_uid(str(dcmread(noise, stop_before_pixels=True).SOPInstanceUID))
    assert job is not None and job.probability is not None
    assert job.finding == "indeterminate"
    analysed = [e.message or "" for e in store.events(job.id) if e.state == "analysed"]
    assert any("(indeterminate)" in m and OUTSIDE_DOMAIN in m for m in analysed), analysed

    rows = {r.kind: r for r in Outbox(store).for_job(job.id)}
    report = read_report(Path(rows["sr"].path))
    assert report.verdict == codes.INDETERMINATE.meaning
    (reason,) = report.comments  # the TEXT Comment beside the verdict (TID 1500 row 14)
    assert reason.startswith(OUTSIDE_DOMAIN)
    assert report.image_group is not None
    probability, unit = report.numbers(report.image_group)["Probability"]
    assert unit == "%"
    assert probability == pytest.approx(job.probability * 100, abs=0.011)  # still reported
    sc = dcmread(rows["sc"].path, stop_before_pixels=True)
    assert sc.ImageComments.startswith(
        "COVID-19 pattern: INDETERMINATE (outside the model's validated domain)"
    )

    ct_job = store.get_by_uid(str(dcmread(ct_head, stop_before_pixels=True).SOPInstanceUID))
    assert ct_job is not None and ct_job.finding == "indeterminate"
    assert ct_job.probability is not None and ct_job.threshold is not None
    assert ct_job.probability > ct_job.threshold, "without the check it would read 'present'"

    chest_job = store.get_by_uid(str(dcmread(chest, stop_before_pixels=True).SOPInstanceUID))
    assert chest_job is not None and chest_job.finding in {"present", "absent"}

    url = f"http://127.0.0.1:{env['DEEPCOVID_MONITORING_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        metrics = response.read().decode()
    assert 'deepcovid_findings_total{finding="indeterminate"} 2.0' in metrics, metrics[-2000:]
