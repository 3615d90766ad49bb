"""Issue the study-level result of every study that has settled, once.

Every ``interval_s`` the node's study watcher (:func:`start_study_watcher`, a daemon thread
beside the delivery dispatcher) asks the job store for studies quiet for ``study_settle_s`` with
every job done and a change after their latest result (:meth:`store.studies.Studies.settled`).
For each it gathers the images' outcomes; if they differ from the latest result's (its
fingerprint), it claims the next result number (unique per study, so one watcher wins), builds
the SR and, when an image drove the finding, the KOS (UIDs derived from study, number and
fingerprint), writes them to the results folder, puts them in the outbox for every DICOM
destination (:func:`worker.delivery.queue`; the dispatcher sends them, once each) and queues the
RIS notifications (:func:`worker.notify.queue_notifications`). A claim whose build fails is
released and tried again after a pause; one left by a watcher that died is released after
:data:`store.studies.STALE_CLAIM_S`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from common.paths import ACTIVE_FILE, CARD_FILE
from common.settings import Settings
from ris.outcome import StudyOutcome
from store.jobstore import JobStore
from store.outage import UNREACHABLE_ERRORS, OutageLog
from store.outbox import NewResult, Outbox
from store.studies import NewStudyResult, Studies, StudyResultView
from worker.delivery import queue
from worker.resultfiles import write_result
from worker.results.algorithm import AlgorithmInfo
from worker.study.documents import build_study_kos, build_study_sr, predecessor
from worker.study.rule import ImageResult, StudyFinding, fingerprint, study_finding
from worker.study.uids import StudyResultUIDs

log = logging.getLogger(__name__)

RETRY_AFTER_S = 300.0
"""A study whose result could not be built is tried again after this long, or when it changes."""


class StudyNotBuilt(Exception):
    """The study's result cannot be built now; the message says why."""


def issue_due(store: JobStore, settings: Settings, *, skip: dict[str, float] | None = None) -> int:
    """Issue the result of every settled study that needs one; returns how many were issued.

    ``skip``: study UID -> monotonic time before which a study that failed is left alone
    (kept by the caller across passes).
    """
    studies = Studies(store)
    released = studies.release_stale()
    if released:
        log.warning("released %d study result claim(s) left unqueued", released)
    issued = 0
    now = time.monotonic()
    for study_uid, last_change in studies.settled(settle_s=settings.worker.study_settle_s):
        if skip is not None and skip.get(study_uid, 0.0) > now:
            continue
        try:
            if issue_study_result(store, settings, study_uid, last_change) is not None:
                issued += 1
        except UNREACHABLE_ERRORS:
            raise
        except Exception as exc:
            if skip is not None:
                skip[study_uid] = now + RETRY_AFTER_S
            if isinstance(exc, StudyNotBuilt):
                log.warning("study %s: no study result: %s", study_uid, exc)
            else:
                log.exception("study %s: study result not built", study_uid)
    return issued


def issue_study_result(
    store: JobStore, settings: Settings, study_uid: str, last_change: dt.datetime
) -> StudyResultView | None:
    """Build and queue the study's next result; None when nothing changed or another won."""
    studies = Studies(store)
    images = [ImageResult.of_job(job) for job in studies.jobs(study_uid)]
    if not images:
        return None
    digest = fingerprint(images)
    latest = studies.latest(study_uid)
    if latest is not None and latest.fingerprint == digest:
        studies.cover(latest.id, last_change)  # received again, same outcome: nothing new
        return None
    finding = study_finding(images)
    sequence = latest.sequence + 1 if latest is not None else 1
    uids = StudyResultUIDs.derive(study_uid, sequence, digest)
    headers = _headers(images)
    identity = next(
        (headers[i.sop_instance_uid] for i in reversed(images) if i.sop_instance_uid in headers),
        None,
    )
    if identity is None:
        raise StudyNotBuilt("none of its images can be read any more (files purged?)")
    version, algorithm = _algorithm(settings, images, finding)
    # No image analysed: nothing clinical to say. The study SR ("not analysed") is sent only
    # where rejected instances get their "not analysed" SR (setting send_rejection_sr).
    send = finding.driver is not None or settings.delivery.send_rejection_sr
    replaces = studies.latest_sr(study_uid)
    claim = studies.claim(
        NewStudyResult(
            study_instance_uid=study_uid,
            sequence=sequence,
            fingerprint=digest,
            finding=finding.finding,
            probability=finding.probability,
            threshold=finding.threshold,
            model_version=version,
            images=len(images),
            driving_sop_instance_uid=finding.driver.sop_instance_uid if finding.driver else None,
            sr_sop_instance_uid=uids.sr_instance if send else None,
            kos_sop_instance_uid=uids.kos_instance if finding.driver else None,
            predecessor_sr_sop_instance_uid=replaces if send else None,
            covers_until=last_change,
        )
    )
    if claim is None:
        log.info("study %s: result %d is being built elsewhere", study_uid, sequence)
        return None
    if not send:
        studies.mark_queued(claim.id)
        log.info(
            "study %s: study result %d: no image analysed (%d image(s)); nothing sent "
            "(send_rejection_sr is off)",
            study_uid,
            sequence,
            len(images),
        )
        return claim
    try:
        _build_and_queue(
            store, settings, images, finding, identity, headers, algorithm, uids, claim
        )
    except BaseException:
        studies.release(claim.id)
        raise
    studies.mark_queued(claim.id)
    log.info(
        "study %s: study result %d (%s, %d image(s)) queued as SR %s%s",
        study_uid,
        sequence,
        finding.finding,
        len(images),
        uids.sr_instance,
        f", replacing {replaces}" if replaces else "",
    )
    return claim


def _build_and_queue(
    store: JobStore,
    settings: Settings,
    images: list[ImageResult],
    finding: StudyFinding,
    identity: Dataset,
    headers: dict[str, Dataset],
    algorithm: AlgorithmInfo,
    uids: StudyResultUIDs,
    claim: StudyResultView,
) -> None:
    """Write the SR (and KOS), put them in the outbox, queue the RIS notifications."""
    from worker.notify import queue_notifications

    previous = (
        predecessor(claim.predecessor_sr_sop_instance_uid, uids.sr_series, identity)
        if claim.predecessor_sr_sop_instance_uid
        else None
    )
    sr = build_study_sr(
        images,
        finding,
        identity=identity,
        headers=headers,
        algorithm=algorithm,
        series_instance_uid=uids.sr_series,
        sop_instance_uid=uids.sr_instance,
        instance_number=claim.sequence,
        previous_sr=previous,
    )
    objects: list[tuple[str, Dataset]] = [("study_sr", sr)]
    if finding.driver is not None:
        kos = build_study_kos(
            finding,
            identity=identity,
            algorithm=algorithm,
            series_instance_uid=uids.kos_series,
            sop_instance_uid=uids.kos_instance,
            instance_number=claim.sequence,
            header=headers.get(finding.driver.sop_instance_uid),
        )
        objects.append(("study_kos", kos))
    written = [_write(kind, ds, settings) for kind, ds in objects]
    # Outbox rows belong to a job: the image that drove the finding, else the newest image.
    owner = (finding.driver or images[-1]).job_id
    queue(Outbox(store), owner, written, model_version=claim.model_version, settings=settings)
    queue_notifications(store, outcome(claim, images, identity, settings), settings)


def outcome(
    claim: StudyResultView, images: list[ImageResult], identity: Dataset, settings: Settings
) -> StudyOutcome:
    """The study result as the RIS notifications state it (a result that sent an SR)."""
    assert claim.sr_sop_instance_uid is not None

    def text(keyword: str) -> str | None:
        value = identity.get(keyword)
        return str(value) if value not in (None, "") else None

    return StudyOutcome(
        study_instance_uid=claim.study_instance_uid,
        accession_number=text("AccessionNumber"),
        patient_id=text("PatientID"),
        patient_name=text("PatientName"),
        patient_birth_date=text("PatientBirthDate"),
        patient_sex=text("PatientSex"),
        finding=claim.finding,
        probability=claim.probability,
        threshold=claim.threshold,
        operating_point=settings.model.threshold_policy if claim.threshold is not None else None,
        model_version=claim.model_version or "",
        images=tuple(image.outcome() for image in images),
        sr_sop_instance_uid=claim.sr_sop_instance_uid,
        kos_sop_instance_uid=claim.kos_sop_instance_uid,
        replaces_sr_sop_instance_uid=claim.predecessor_sr_sop_instance_uid,
        issued=claim.created_at,
    )


def _headers(images: list[ImageResult]) -> dict[str, Dataset]:
    """The images' spooled headers (no pixels) that can still be read, by SOP Instance UID."""
    headers: dict[str, Dataset] = {}
    for image in images:
        if not image.spool_path:
            continue
        try:
            ds = dcmread(Path(image.spool_path), stop_before_pixels=True)
        except (OSError, InvalidDicomError, ValueError):
            continue
        if str(ds.get("SOPInstanceUID", "")) == image.sop_instance_uid:
            headers[image.sop_instance_uid] = ds
    return headers


def _algorithm(
    settings: Settings, images: list[ImageResult], finding: StudyFinding
) -> tuple[str, AlgorithmInfo]:
    """The model version the study result names and its identity (from the model card).

    The version of the image that drove the finding, else of the newest analysed image, else
    the active one. The card is read as JSON (:func:`_card`): the watcher runs in the node,
    which never imports the model code (PyTorch) for nothing.
    """
    registry = Path(settings.model.registry_dir)
    analysed = [image for image in images if image.analysed and image.model_version]
    source = finding.driver or (analysed[-1] if analysed else None)
    active = registry / ACTIVE_FILE
    wanted = [
        v
        for v in (
            source.model_version if source else None,
            active.read_text(encoding="utf-8").strip() if active.is_file() else None,
        )
        if v
    ]
    for version in wanted:
        card = _card(registry, version)
        if card is not None:
            info = AlgorithmInfo.from_card(card, version=version, threshold=finding.threshold)
            return version, info
    raise StudyNotBuilt(f"no model card for version(s) {wanted} in {registry}")


def _card(registry: Path, version: str) -> Any | None:
    """The card of ``version`` as attributes (what :meth:`AlgorithmInfo.from_card` reads), or
    None when the registry has no readable card of that name."""
    if not version or Path(version).name != version or version in {".", ".."}:
        return None
    try:
        data = json.loads((registry / version / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not data.get("device_uid"):
        return None
    return json.loads(json.dumps(data), object_hook=lambda d: SimpleNamespace(**d))


def _write(kind: str, ds: Dataset, settings: Settings) -> NewResult:
    """Write one study object durably to the results folder and describe it for the outbox."""
    path = write_result(settings.storage.results, ds)
    return NewResult(
        kind=kind,
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        path=str(path),
    )


def start_study_watcher(
    store: JobStore, settings: Settings, interval_s: float | None = None
) -> threading.Event:
    """Issue due study results every ``interval_s`` in a daemon thread; set the event to stop.

    Default interval: a quarter of ``study_settle_s``, between 0.5 and 5 seconds.
    """
    interval = interval_s or max(0.5, min(5.0, settings.worker.study_settle_s / 4))
    stop = threading.Event()
    outage = OutageLog(log, "study watcher")
    skip: dict[str, float] = {}

    def loop() -> None:
        while not stop.is_set():
            try:
                issue_due(store, settings, skip=skip)
                outage.succeeded()
            except UNREACHABLE_ERRORS as exc:
                outage.failed(exc)
            except Exception:
                log.exception("study watcher run failed")
            stop.wait(interval)

    threading.Thread(target=loop, name="study-watcher", daemon=True).start()
    return stop


__all__ = ["issue_due", "issue_study_result", "outcome", "start_study_watcher"]
