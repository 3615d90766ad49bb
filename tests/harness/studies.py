"""A whole study sent to the node, and its study-level result waited for (issue 23).

``study_files`` writes the instances of one study (frontal chest films from ``shared/data/cxr``
wrapped as CR, or any dataset a test builds) with one Study Instance UID, one series each;
``wait_for_study_result`` waits until the node has issued (and queued) the study's result
number ``sequence``; ``fetch_instance`` gets what the PACS (a real Orthanc) stored, to check
it with ``dciodvfy``/``dsrdump``; ``start_study_node`` starts a node and a worker that answer
studies after a short settle time and deliver to a real Orthanc (and any further destinations,
e.g. the RIS receivers of :mod:`tests.harness.ris`). Integration tests and the end-to-end test
of the issue build on them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from store import JobStore
from store.studies import Studies, StudyResultView
from tests.harness.factories import load_cxr, wrap_pixels
from tests.harness.net import wait_for
from tests.harness.orthanc import Orthanc
from tests.harness.services import ServiceProcess

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

    result = wait_for(issued, timeout=timeout, interval=0.5, what=f"study result {sequence}")
    assert result is not None  # wait_for returns only a truthy value
    return result


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


@dataclass
class StudyNode:
    """A node and a worker delivering to a real Orthanc, answering studies after the settle time."""

    env: dict[str, str]
    orthanc: Orthanc
    store: JobStore
    workdir: Path

    def storescu(self, *files: Path) -> None:
        """Send ``files`` to the node with DCMTK's storescu, one association."""
        cmd = ["storescu", "-aet", "MODALITY", "-aec", "DEEPCOVID", "127.0.0.1"]
        res = subprocess.run(
            [*cmd, self.env["DEEPCOVID_PORT"], *map(str, files)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr

    def in_orthanc(self, sop_instance_uid: str) -> Path:
        """Wait until Orthanc holds ``sop_instance_uid``; the file it stored."""
        out = self.workdir / "from-orthanc"
        path = wait_for(
            lambda: fetch_instance(self.orthanc, sop_instance_uid, out),
            timeout=120,
            what=f"{sop_instance_uid} in Orthanc",
        )
        assert path is not None  # wait_for returns only a truthy value
        return path


@contextmanager
def start_study_node(
    settings_env: dict[str, str],
    services: list[ServiceProcess],
    workdir: Path,
    *,
    settle_s: int,
    env: dict[str, str] | None = None,
    destinations: Sequence[str] = (),
) -> Iterator[StudyNode]:
    """Node + worker (embedded broker) with ``study_settle_s`` = ``settle_s``, results to a
    real Orthanc and to ``destinations`` (destination texts, e.g. ``mllp://...``); ``env``
    adds or overrides settings (e.g. ``DEEPCOVID_VIEW_CHECK``). Orthanc stops on exit; the
    ``services`` fixture stops the node and the worker."""
    env = {
        **settings_env,
        "DEEPCOVID_STUDY_SETTLE_S": str(settle_s),
        "DEEPCOVID_DELIVERY_BACKOFF_S": "2",
        **(env or {}),
    }
    orthanc = Orthanc(
        workdir / "orthanc", node_aet="DEEPCOVID", node_port=int(env["DEEPCOVID_PORT"])
    )
    env["DEEPCOVID_DESTINATION"] = ",".join(
        [f"ORTHANC@127.0.0.1:{orthanc.dicom_port}", *destinations]
    )
    orthanc.start()
    try:
        for name in ("node", "worker"):
            services.append(ServiceProcess([name], env, workdir / f"{name}.log").start())

        def echo() -> bool:
            cmd = ["echoscu", "-aec", "DEEPCOVID", "127.0.0.1", env["DEEPCOVID_PORT"]]
            return subprocess.run(cmd, capture_output=True).returncode == 0

        wait_for(echo, timeout=90, what="the node to answer C-ECHO")
        store = JobStore(f"sqlite:///{Path(env['DEEPCOVID_DATA_DIR']) / 'jobs.sqlite'}")
        yield StudyNode(env, orthanc, store, workdir)
    finally:
        orthanc.stop()
