"""The study-level result end to end: storescu sends a study to the node, and after it settles
one study SR and one KOS reach a real Orthanc, valid for ``dciodvfy``; an image sent after the
result makes a replacing SR that names its predecessor.

``study_node`` (node + worker, a short ``study_settle_s``, Orthanc as the destination:
:func:`tests.harness.studies.start_study_node`) and the helpers of :mod:`tests.harness.studies`
are what the issue's end-to-end test (``test_real_pacs_traffic.py``) extends.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from store.outbox import Outbox, ResultView
from store.studies import Studies
from tests.harness.net import wait_for
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

SETTLE_S = 3


@pytest.fixture
def study_node(
    settings_env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> Iterator[StudyNode]:
    """Node + worker (embedded broker) with ``study_settle_s`` = SETTLE_S, results to Orthanc."""
    with start_study_node(settings_env, services, tmp_path, settle_s=SETTLE_S) as node:
        yield node


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    missing = [
        tool for tool in ("storescu", "echoscu", "dciodvfy", "dsrdump") if not shutil.which(tool)
    ]
    assert not missing, f"missing {missing}: scripts/test-services.sh installs dcmtk, dicom3tools"


def test_a_study_gets_one_sr_and_kos_and_a_later_image_replaces_it(
    study_node: StudyNode, tmp_path: Path
) -> None:
    study = new_study_uid()
    films = [frontal_film(image, study, n) for n, image in enumerate(FRONTAL_FILMS, start=1)]
    study_node.storescu(*study_files(tmp_path / "study", films))

    first = wait_for_study_result(study_node.store, study)
    assert first.queued_at is not None
    # for docs/operations.md (run with -s): settle time + poll + build, from the last change
    print(f"study result queued {(first.queued_at - first.covers_until).total_seconds():.2f} s")
    print(f"after the study's last change (study_settle_s {SETTLE_S})")
    assert first.images == 2
    assert first.finding in {"present", "absent", "indeterminate"}
    assert first.driving_sop_instance_uid in {str(f.SOPInstanceUID) for f in films}
    assert first.kos_sop_instance_uid is not None
    sr_path = study_node.in_orthanc(first.sr_sop_instance_uid)
    kos_path = study_node.in_orthanc(first.kos_sop_instance_uid)
    assert dciodvfy_errors(sr_path) == []
    assert dciodvfy_errors(kos_path) == []
    kos = dcmread(kos_path)
    (selected,) = [item for item in kos.ContentSequence if item.ValueType == "IMAGE"]
    assert selected.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        first.driving_sop_instance_uid
    )
    dump = subprocess.run(["dsrdump", "+Pl", str(sr_path)], capture_output=True, text=True).stdout
    assert '<contains CONTAINER:(,,"Qualitative Evaluations")' in dump
    assert f'"{first.finding.capitalize()}")>' in dump
    assert dump.count('"COVID-19 classification, image') == 2

    # per image: SR, SC, GSPS (+ map), delivered meanwhile; per study: one SR and the KOS
    wait_for(
        lambda: study_node.orthanc.study_sop_classes(study).count(SR_CLASS) == 3,
        timeout=120,
        what="two image SRs and the study SR in Orthanc",
    )
    assert study_node.orthanc.study_sop_classes(study).count(KOS_CLASS) == 1

    late = frontal_film(FRONTAL_FILMS[0], study, 3)
    study_node.storescu(*study_files(tmp_path / "late", [late]))
    second = wait_for_study_result(study_node.store, study, sequence=2)
    assert second.images == 3
    assert second.predecessor_sr_sop_instance_uid == first.sr_sop_instance_uid
    replacement = study_node.in_orthanc(second.sr_sop_instance_uid)
    assert dciodvfy_errors(replacement) == []
    (predecessor,) = dcmread(replacement).PredecessorDocumentsSequence
    (series,) = predecessor.ReferencedSeriesSequence
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.sr_sop_instance_uid
    # nothing more was issued, and each study object was sent once and confirmed
    assert [r.sequence for r in Studies(study_node.store).results(study)] == [1, 2]

    def study_rows_confirmed() -> list[ResultView] | None:
        rows = [
            row
            for job in Studies(study_node.store).jobs(study)
            for row in Outbox(study_node.store).for_job(job.id)
            if row.kind in {"study_sr", "study_kos"}
        ]
        return rows if all(r.delivery_state == "confirmed" for r in rows) else None

    rows = wait_for(study_rows_confirmed, timeout=60, what="the study objects confirmed")
    assert sorted(r.kind for r in rows) == ["study_kos", "study_kos", "study_sr", "study_sr"]
    assert all(r.attempts == 1 for r in rows), rows
