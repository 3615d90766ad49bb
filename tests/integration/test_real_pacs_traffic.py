"""Issue 23's "done when": real PACS traffic for one study, end to end.

storescu sends ONE study (one Study Instance UID, one patient) as a PACS auto-route would: two
frontal chest films (CR), a lateral with no View Position, and a CT image labelled CR, CHEST, PA
(a coronal CT reconstruction, the nearest thing to a localiser in ``shared/data/views``). The
node + worker run with the pixel view check ON, a short ``study_settle_s``, a real Orthanc as the
DICOM destination and, as RIS destinations, an MLLP listener and a FHIR endpoint
(:mod:`tests.harness.ris`, strict hl7apy / ``fhir.resources`` judges). The lateral and the CT
image are ones the shipped view check never saw (the card's ``held_out_images``).

Checked: the lateral and the CT image are rejected with the pixel reasons; exactly one study SR
and one KOS reach Orthanc for the study (besides the two frontal films' own SRs), the SR lists
the two rejected images with their reasons and the two analysed ones with their findings, and
``dciodvfy`` finds no error in either; the MLLP listener got exactly one ORU^R01, which parses
and was ACKed AA; the FHIR endpoint accepted exactly one DiagnosticReport Bundle.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hl7apy.parser import parse_message
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from store.outbox import Outbox, ResultView
from store.studies import Studies
from tests.harness.factories import wrap_pixels
from tests.harness.net import wait_for
from tests.harness.ris import FhirReceiver, MllpReceiver, judge_bundle, judge_oru
from tests.harness.services import ServiceProcess
from tests.harness.studies import (
    FRONTAL_FILMS,
    KOS_CLASS,
    SR_CLASS,
    StudyNode,
    frontal_film,
    new_study_uid,
    start_study_node,
    study_files,
    wait_for_study_result,
)
from tests.harness.validators import dciodvfy_errors
from tests.harness.views import VIEWS_MANIFEST, held_out_view, image_pixels
from worker.results.codes import COVID19
from worker.view import LATERAL_REASON, OTHER_REASON

SETTLE_S = 3
PATIENT_ID, PATIENT_NAME = "PACS-E2E-0815", "Pacstraffic^Anna"


@pytest.fixture
def ris_study_node(
    settings_env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> Iterator[tuple[StudyNode, MllpReceiver, FhirReceiver]]:
    """Node + worker with the view check on, to Orthanc, an MLLP listener and a FHIR endpoint."""
    missing = [t for t in ("storescu", "echoscu", "dciodvfy") if not shutil.which(t)]
    assert not missing, f"missing {missing}: scripts/test-services.sh installs dcmtk, dicom3tools"
    if not VIEWS_MANIFEST.is_file():
        pytest.skip("shared/data/views is not here")
    hl7, fhir = MllpReceiver().start(), FhirReceiver().start()
    try:
        with start_study_node(
            settings_env,
            services,
            tmp_path,
            settle_s=SETTLE_S,
            env={"DEEPCOVID_VIEW_CHECK": "true"},
            destinations=[hl7.url, fhir.url],
        ) as node:
            yield node, hl7, fhir
    finally:
        hl7.stop()
        fhir.stop()


def _same_study(datasets: list[Dataset], study: str) -> None:
    """One study of one patient, as a modality would send it (study date/time included)."""
    for number, ds in enumerate(datasets, start=1):
        ds.PatientID, ds.PatientName = PATIENT_ID, PATIENT_NAME
        ds.StudyInstanceUID = study
        ds.StudyDate, ds.StudyTime = datasets[0].StudyDate, datasets[0].StudyTime
        ds.SeriesNumber = ds.InstanceNumber = number


@dataclass
class ImageEntry:
    """What the study SR's measurement group says about one image."""

    comments: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    """Values of its CODE COVID-19 (the image's verdict)."""
    probabilities: int = 0


def _image_entries(sr: Dataset) -> dict[str, ImageEntry]:
    """The study SR's TID 1501 groups by the SOP Instance UID of the image each is about."""
    measurements = next(
        item
        for item in sr.ContentSequence
        if item.ValueType == "CONTAINER"
        and item.ConceptNameCodeSequence[0].CodeValue == codes.DCM.ImagingMeasurements.value
    )
    entries: dict[str, ImageEntry] = {}
    for group in measurements.ContentSequence:
        entry, uid = ImageEntry(), None
        for item in group.ContentSequence:
            name = item.ConceptNameCodeSequence[0].CodeValue
            if item.ValueType == "IMAGE":
                uid = str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            elif item.ValueType == "TEXT" and name == codes.DCM.Comment.value:
                entry.comments.append(str(item.TextValue))
            elif item.ValueType == "CODE" and name == COVID19.value:  # the verdict, not the type
                entry.findings.append(str(item.ConceptCodeSequence[0].CodeMeaning))
            elif item.ValueType == "NUM":
                entry.probabilities += 1
        assert uid is not None, "a measurement group names no image"
        entries[uid] = entry
    return entries


def test_one_study_of_real_pacs_traffic_gets_one_answer_in_the_pacs_and_the_ris(
    ris_study_node: tuple[StudyNode, MllpReceiver, FhirReceiver], tmp_path: Path
) -> None:
    node, hl7, fhir = ris_study_node
    study = new_study_uid()
    films = [frontal_film(image, study, n) for n, image in enumerate(FRONTAL_FILMS, start=1)]
    lateral = wrap_pixels(image_pixels(held_out_view("lateral")), view_position=None)
    ct = wrap_pixels(image_pixels(held_out_view("ct_coronal")))  # CR, CHEST, PA: the header lies
    _same_study([*films, lateral, ct], study)
    node.storescu(*study_files(tmp_path / "study", [*films, lateral, ct]))

    # the study settles once every job is final; its result is queued with the RIS messages
    result = wait_for_study_result(node.store, study, timeout=400)
    jobs = {j.sop_instance_uid: j for j in Studies(node.store).jobs(study)}
    assert len(jobs) == 4
    for ds, reason in ((lateral, LATERAL_REASON), (ct, OTHER_REASON)):
        job = jobs[str(ds.SOPInstanceUID)]
        assert (job.state, job.reason) == ("rejected", reason)
    for ds in films:
        job = jobs[str(ds.SOPInstanceUID)]
        assert job.state == "delivered" and job.probability is not None, job
    assert result.images == 4
    analysed = {jobs[str(f.SOPInstanceUID)].finding for f in films}
    rule = ("present", "indeterminate", "absent")  # the study finding: the first that any has
    assert result.finding == next(f for f in rule if f in analysed)
    assert result.driving_sop_instance_uid in {str(f.SOPInstanceUID) for f in films}
    assert result.sr_sop_instance_uid is not None and result.kos_sop_instance_uid is not None

    # Orthanc: the study SR and the KOS, once each, beside the frontal films' own SRs
    sr_path = node.in_orthanc(result.sr_sop_instance_uid)
    kos_path = node.in_orthanc(result.kos_sop_instance_uid)

    def study_rows_delivered() -> list[ResultView] | None:
        """The study's outbox rows once the PACS confirmed the DICOM ones (C-FIND) and the RIS
        took its messages (ACK / HTTP 200: "sent", as a RIS cannot be asked what it holds)."""
        rows = [
            row
            for job in jobs.values()
            for row in Outbox(node.store).for_job(job.id)
            if row.kind in {"study_sr", "study_kos", "hl7_oru", "fhir_report"}
        ]
        done = {"study_sr": "confirmed", "study_kos": "confirmed"}
        delivered = all(r.delivery_state == done.get(r.kind, "sent") for r in rows)
        return rows if rows and delivered else None

    rows = wait_for(study_rows_delivered, timeout=120, what="the study's objects delivered")
    assert rows is not None and sorted(r.kind for r in rows) == [
        "fhir_report",
        "hl7_oru",
        "study_kos",
        "study_sr",
    ]
    assert all(r.attempts == 1 for r in rows), rows
    time.sleep(3)  # a few more delivery rounds and watcher polls: nothing is sent again
    assert [r.sequence for r in Studies(node.store).results(study)] == [1]
    image_srs = {
        row.sop_instance_uid
        for ds in films
        for row in Outbox(node.store).for_job(jobs[str(ds.SOPInstanceUID)].id)
        if row.kind == "sr"
    }
    assert len(image_srs) == 2
    held = node.orthanc.study_instances(study)
    assert {uid for uid, sop_class in held.items() if sop_class == SR_CLASS} == {
        *image_srs,
        result.sr_sop_instance_uid,
    }
    assert [uid for uid, sop_class in held.items() if sop_class == KOS_CLASS] == [
        result.kos_sop_instance_uid
    ]

    # the study SR: the two rejected images with their reasons, the two analysed ones
    sr = dcmread(sr_path)
    assert (sr.StudyInstanceUID, sr.PatientID) == (study, PATIENT_ID)
    entries = _image_entries(sr)
    assert set(entries) == set(jobs)
    for ds, reason in ((lateral, LATERAL_REASON), (ct, OTHER_REASON)):
        entry = entries[str(ds.SOPInstanceUID)]
        assert entry.comments == [f"Not analysed: {reason}"], entry
        assert entry.probabilities == 0 and entry.findings == [], entry
    for ds in films:
        entry = entries[str(ds.SOPInstanceUID)]
        assert entry.comments == [] and entry.probabilities >= 1, entry
        finding = jobs[str(ds.SOPInstanceUID)].finding
        assert finding is not None and finding.capitalize() in entry.findings, entry
    assert dciodvfy_errors(sr_path) == []
    assert dciodvfy_errors(kos_path) == []
    (selected,) = [i for i in dcmread(kos_path).ContentSequence if i.ValueType == "IMAGE"]
    assert selected.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        result.driving_sop_instance_uid
    )

    # the RIS: one ORU^R01, parsed and ACKed AA; one DiagnosticReport Bundle accepted
    assert len(hl7.received.answers) == 1 and len(hl7.received.accepted) == 1
    (oru,) = hl7.received.accepted
    assert judge_oru(oru) is None
    ack = parse_message(hl7.received.answers[0])
    assert ack.msa.msa_1.to_er7() == "AA"
    message = parse_message(oru, find_groups=True)
    assert message.msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
    order = message.oru_r01_patient_result.oru_r01_order_observation
    values = {o.obx.obx_3.ce_1.to_er7(): o.obx.obx_5.to_er7() for o in order.oru_r01_observation}
    assert values["110180"] == study
    assert values["840539006"].split("^")[1].lower() == result.finding
    assert len(fhir.headers) == 1 and len(fhir.received.accepted) == 1
    bundle = json.loads(fhir.received.accepted[0])
    assert judge_bundle(bundle) is None
    (report,) = [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    ]
    assert report["status"] == "final"
    assert report["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{study}"
