"""A whole study sent to the node, and its study-level result waited for (issue 23).

``study_files`` writes the instances of one study (frontal chest films from ``shared/data/cxr``
wrapped as CR, or any dataset a test builds) with one Study Instance UID, one series each;
``wait_for_study_result`` waits until the node has issued (and queued) the study's result
number ``sequence``; ``fetch_instance`` gets what the PACS (a real Orthanc) stored, to check
it with ``dciodvfy``/``dsrdump``. Integration tests and the end-to-end test of the issue build
on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from store import JobStore
from store.studies import Studies, StudyResultView
from tests.harness.factories import load_cxr, wrap_pixels
from tests.harness.net import wait_for
from tests.harness.orthanc import Orthanc

FRONTAL_FILMS = (
    "images/covid/figure1__covid__COVID-00001.jpg",
    "images/non_covid/actualmed__non_covid__CR.1.2.840.113564.1722810170.20200319202613984410"
    ".1003000225002.jpg",
)
"""Two frontal chest films of the manifest (one COVID-19, one not)."""
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"


def frontal_film(image: str, study_instance_uid: str, number: int) -> Dataset:
    """A frontal (PA) chest CR of ``image`` in the study, in a series of its own."""
    ds = wrap_pixels(load_cxr(image), study_instance_uid=study_instance_uid)
    ds.SeriesNumber = ds.InstanceNumber = number
    return ds


def study_files(
    out: Path, datasets: Sequence[Dataset], study_instance_uid: str | None = None
) -> list[Path]:
    """Write ``datasets`` (all set to one study: ``study_instance_uid`` or the first's) to
    ``out``; their paths, in order."""
    out.mkdir(parents=True, exist_ok=True)
    study = study_instance_uid or str(datasets[0].StudyInstanceUID)
    paths = []
    for ds in datasets:
        ds.StudyInstanceUID = study
        path = out / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def new_study_uid() -> str:
    """A fresh Study Instance UID."""
    return str(generate_uid())


def wait_for_study_result(
    store: JobStore, study_instance_uid: str, *, sequence: int = 1, timeout: float = 300.0
) -> StudyResultView:
    """The study's result number ``sequence`` once the node has queued it (SR/KOS in the
    outbox, RIS notifications queued)."""

    def issued() -> StudyResultView | None:
        for result in Studies(store).results(study_instance_uid):
            if result.sequence == sequence and result.queued_at is not None:
                return result
        return None

    return wait_for(issued, timeout=timeout, interval=0.5, what=f"study result {sequence}")


def fetch_instance(orthanc: Orthanc, sop_instance_uid: str, out: Path) -> Path | None:
    """The file Orthanc stored for ``sop_instance_uid`` (None while it holds none)."""
    found = [i for i in orthanc.post("/tools/lookup", sop_instance_uid) if i["Type"] == "Instance"]
    if not found:
        return None
    import urllib.request

    with urllib.request.urlopen(f"{orthanc.url}/instances/{found[0]['ID']}/file", timeout=30) as r:
        data = r.read()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{sop_instance_uid}.dcm"
    path.write_bytes(data)
    return path
