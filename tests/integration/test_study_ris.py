"""Study results reach the RIS, end to end: storescu sends a study to the node, and once it has
settled one ORU^R01 is ACKed by a real MLLP listener and one FHIR DiagnosticReport is accepted by
a FHIR endpoint (both of :mod:`tests.harness.ris`, in this process); a later image sends a
corrected result to both. The node's and the worker's logs name no patient.

Prints the settle-to-notification times (docs/operations.md, "RIS notification").
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hl7apy.parser import parse_message

from store import JobStore
from store.studies import StudyResultView
from tests.harness.net import wait_for
from tests.harness.orthanc import Orthanc
from tests.harness.ris import FhirReceiver, MllpReceiver
from tests.harness.services import ServiceProcess
from tests.harness.studies import (
    FRONTAL_FILMS,
    frontal_film,
    new_study_uid,
    study_files,
    wait_for_study_result,
)

SETTLE_S = 3
PATIENT_ID = "RIS-E2E-4711"
PATIENT_NAME = "Rispatient^Erika"
ACCESSION = "ACC-E2E-77"


@pytest.fixture
def ris_node(
    settings_env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> Iterator[tuple[dict[str, str], JobStore, MllpReceiver, FhirReceiver]]:
    """Node + worker delivering to Orthanc, an MLLP listener and a FHIR endpoint."""
    assert shutil.which("storescu") and shutil.which("echoscu"), "scripts/test-services.sh"
    hl7, fhir = MllpReceiver().start(), FhirReceiver().start()
    env = {
        **settings_env,
        "DEEPCOVID_STUDY_SETTLE_S": str(SETTLE_S),
        "DEEPCOVID_DELIVERY_BACKOFF_S": "2",
    }
    orthanc = Orthanc(
        tmp_path / "orthanc", node_aet="DEEPCOVID", node_port=int(env["DEEPCOVID_PORT"])
    )
    env["DEEPCOVID_DESTINATION"] = f"ORTHANC@127.0.0.1:{orthanc.dicom_port},{hl7.url},{fhir.url}"
    orthanc.start()
    try:
        for name in ("node", "worker"):
            services.append(ServiceProcess([name], env, tmp_path / f"{name}.log").start())

        def echo() -> bool:
            cmd = ["echoscu", "-aec", "DEEPCOVID", "127.0.0.1", env["DEEPCOVID_PORT"]]
            return subprocess.run(cmd, capture_output=True).returncode == 0

        wait_for(echo, timeout=90, what="the node to answer C-ECHO")
        store = JobStore(f"sqlite:///{Path(env['DEEPCOVID_DATA_DIR']) / 'jobs.sqlite'}")
        yield env, store, hl7, fhir
    finally:
        hl7.stop()
        fhir.stop()
        orthanc.stop()


def _storescu(env: dict[str, str], files: list[Path]) -> None:
    cmd = ["storescu", "-aet", "MODALITY", "-aec", "DEEPCOVID", "127.0.0.1", env["DEEPCOVID_PORT"]]
    res = subprocess.run([*cmd, *map(str, files)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def _films(study: str, numbers: list[int]) -> list:
    films = []
    for n in numbers:
        ds = frontal_film(FRONTAL_FILMS[(n - 1) % len(FRONTAL_FILMS)], study, n)
        ds.PatientID, ds.PatientName, ds.AccessionNumber = PATIENT_ID, PATIENT_NAME, ACCESSION
        films.append(ds)
    return films


def _report(bundle_json: str) -> dict:
    return next(
        e["resource"]
        for e in json.loads(bundle_json)["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    )


def _timing(result: StudyResultView, accepted_at: float, what: str) -> str:
    quiet = result.covers_until.timestamp()
    issued = result.created_at.timestamp()
    return (
        f"{what}: {accepted_at - quiet:.2f} s after the study went quiet "
        f"(study_settle_s={SETTLE_S}), {accepted_at - issued:.2f} s after the result was issued"
    )


def test_a_settled_study_is_told_to_the_ris_once_and_a_late_image_corrects_it(
    ris_node: tuple[dict[str, str], JobStore, MllpReceiver, FhirReceiver], tmp_path: Path
) -> None:
    env, store, hl7, fhir = ris_node
    study = new_study_uid()
    _storescu(env, study_files(tmp_path / "study", _films(study, [1, 2])))
    first = wait_for_study_result(store, study)
    wait_for(
        lambda: len(hl7.received.accepted) == 1 and len(fhir.received.accepted) == 1,
        timeout=120,
        what="one ORU^R01 ACKed and one Bundle accepted",
    )
    oru = parse_message(hl7.received.accepted[0], find_groups=True)
    pid = oru.oru_r01_patient_result.oru_r01_patient.pid
    assert pid.pid_3.cx_1.to_er7() == PATIENT_ID
    assert pid.pid_5.to_er7() == PATIENT_NAME
    order = oru.oru_r01_patient_result.oru_r01_order_observation
    assert order.obr.obr_3.to_er7() == ACCESSION
    assert order.obr.obr_25.to_er7() == "F"
    values = {o.obx.obx_3.ce_1.to_er7(): o.obx.obx_5.to_er7() for o in order.oru_r01_observation}
    assert values["110180"] == study
    assert values["840539006"].split("^")[1].lower() == first.finding
    report = _report(fhir.received.accepted[0])
    assert report["status"] == "final"
    assert report["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{study}"
    timings = [
        _timing(first, hl7.received.accepted_at[0], "ORU^R01 ACKed"),
        _timing(first, fhir.received.accepted_at[0], "DiagnosticReport accepted"),
    ]

    _storescu(env, study_files(tmp_path / "late", _films(study, [3])))
    second = wait_for_study_result(store, study, sequence=2)
    wait_for(
        lambda: len(hl7.received.accepted) == 2 and len(fhir.received.accepted) == 2,
        timeout=120,
        what="the corrected result at both",
    )
    corrected = parse_message(hl7.received.accepted[1], find_groups=True)
    assert corrected.oru_r01_patient_result.oru_r01_order_observation.obr.obr_25.to_er7() == "C"
    assert _report(fhir.received.accepted[1])["status"] == "corrected"
    timings.append(_timing(second, hl7.received.accepted_at[1], "corrected ORU^R01 ACKed"))
    time.sleep(3)  # a few more dispatcher rounds: nothing is sent again
    assert len(hl7.received.answers) == 2 and len(fhir.received.accepted) == 2

    logs = "".join((tmp_path / f"{name}.log").read_text() for name in ("node", "worker"))
    assert "RIS message(s) queued" in logs
    for identifier in (PATIENT_ID, "Rispatient", ACCESSION):
        assert identifier not in logs, f"{identifier} in the services' logs"
    print("\n" + "\n".join(timings))
