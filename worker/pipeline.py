"""What the worker does with one job, stage by stage, each recorded on the job's timeline.

claim → read → record attributes → gate → model (probability, heatmap) → build SR/SC/PM →
write them and put them in the outbox → deliver (or keep them in the results folder).

A redelivered task is harmless: the claim is compare-and-set, and result UIDs are derived from
the source instance and the model version, so re-analysing with the same model creates nothing
new. Errors that may pass (database, broker) propagate so Celery retries the task; anything
else ends the job ``failed`` with the reason.
"""

from __future__ import annotations

import errno
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy.exc import OperationalError

from common.settings import Settings
from store import JobState, JobStore
from store.outbox import NewResult, Outbox
from worker.attributes import key_attributes
from worker.lease import LeaseKeeper
from worker.results import ResultUIDs

if TYPE_CHECKING:
    import numpy as np

    from models.inference import Predictor
    from worker.analysis import Analysis
    from worker.view import ViewVerdict

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """The job cannot succeed; the message is the reason recorded on it."""


SUPERSEDED = "superseded"
"""What :func:`run_job` returns when the job changed under it (new content received)."""
_WORKING = (JobState.ANALYSING, JobState.ANALYSED, JobState.RESULTS_BUILT)
"""States of a job this worker holds; any other means the listener took it back."""


def run_job(job_id: int, store: JobStore, settings: Settings) -> str:
    """Process one job; returns the state it ended in (or ``skipped`` if not ours)."""
    if not store.claim(job_id, lease_s=settings.worker.analysis_lease_s):
        log.info("job %s: not claimable (already taken or finished); nothing to do", job_id)
        return "skipped"
    with LeaseKeeper(store, job_id, settings.worker.analysis_lease_s):
        try:
            return _analyse(job_id, store, settings)
        except OperationalError:
            raise  # database trouble: let Celery retry the task; the claim lease expires
        except JobFailed as exc:
            reason = str(exc)
        except Exception as exc:
            reason = f"internal error: {type(exc).__name__}: {exc}"
            log.exception("job %s: unexpected error", job_id)
        if not store.set_state(job_id, JobState.FAILED, reason, expect=_WORKING, reason=reason):
            return _superseded(job_id)
        return JobState.FAILED


def _superseded(job_id: int) -> str:
    """The job was received again with new content while we worked: leave it to that task."""
    log.info(
        "job %s: received again with new content during analysis; left for re-analysis", job_id
    )
    return SUPERSEDED


def _read(path: Path) -> Dataset:
    try:
        return dcmread(path)
    except (OSError, InvalidDicomError, ValueError) as exc:
        raise JobFailed(f"cannot read spooled instance: {type(exc).__name__}: {exc}") from exc


def _attributes(ds: Dataset) -> dict[str, object]:
    """The key attributes, or JobFailed when pydicom cannot convert one (e.g. an unknown VR)."""
    try:
        return key_attributes(ds)
    except (NotImplementedError, ValueError, TypeError) as exc:
        raise JobFailed(f"attributes cannot be read: {type(exc).__name__}: {exc}") from exc


def _analyse(job_id: int, store: JobStore, settings: Settings) -> str:
    from worker import gate

    job = store.get(job_id)
    assert job is not None
    uid = job.sop_instance_uid
    t0 = time.perf_counter()
    ds = _read(Path(job.spool_path))
    read_s = time.perf_counter() - t0
    attrs = _attributes(ds)
    # Every change below expects the state we left the job in: if the listener received new
    # content for it meanwhile (state back to received/queued), that content's task analyses
    # it and this run stops without overwriting its state.
    if not store.set_state(
        job_id,
        JobState.ANALYSING,
        f"attributes recorded: {attrs['modality']} {attrs['view_position']} "
        f"{attrs['rows']}x{attrs['columns']} {attrs['photometric_interpretation']}",
        expect=[JobState.ANALYSING],
        **attrs,
    ):
        return _superseded(job_id)
    verdict = gate.check(ds)
    if not verdict.ok:
        reason = verdict.reason or "not analysable"
        return _reject(job_id, ds, reason, f"not analysed: {reason}", store, settings)

    from models.dicom_pixels import dicom_to_array
    from worker.analysis import active_predictor, analyse_image

    try:
        image = dicom_to_array(ds)
    except Exception as exc:
        raise JobFailed(f"pixel data cannot be converted: {type(exc).__name__}: {exc}") from exc
    view_version = None
    if settings.model.view_check:  # the pixels decide the view (worker/view.py)
        view = _check_view(ds, image)
        view_version = view.version
        if not view.ok:
            message = f"not analysed: {view.reason}; {view.note}"
            reason = str(view.reason)
            return _reject(job_id, ds, reason, message, store, settings, view_version)
        if not store.set_state(job_id, JobState.ANALYSING, view.note, expect=[JobState.ANALYSING]):
            return _superseded(job_id)
    predictor = active_predictor(settings)
    result = analyse_image(image, predictor, settings)
    finding = result.finding  # indeterminate when the image failed the model's domain check
    domain_note = f"{result.domain_note}; " if result.domain_note else ""
    if not store.set_state(
        job_id,
        JobState.ANALYSED,
        f"P(COVID-19)={result.probability:.4f} threshold={result.threshold:.4f} "
        f"[{result.operating_point_words or 'card threshold'}] ({finding}); "
        f"{domain_note}read {read_s:.2f} s, "
        f"inference {result.timings['inference_s']:.2f} s, "
        f"heatmap {result.timings['heatmap_s']:.2f} s",
        model_version=result.model_version,
        probability=result.probability,
        threshold=result.threshold,
        finding=finding,
        expect=[JobState.ANALYSING],
    ):
        return _superseded(job_id)
    t_build = time.perf_counter()
    outbox = Outbox(store)
    # Same source content + same model version = same result UIDs: nothing new is created.
    uids = ResultUIDs.derive(str(ds.SOPInstanceUID), f"{result.model_version}/{job.sha256}")
    paths = _build_and_write(
        job_id, ds, image, result, predictor, uids, outbox, settings, view_version
    )
    from worker.delivery import queue

    new = queue(outbox, job_id, paths, model_version=result.model_version, settings=settings)
    if not store.set_state(
        job_id,
        JobState.RESULTS_BUILT,
        f"{len(paths)} result object(s) written ({new} new) in "
        f"{time.perf_counter() - t_build:.2f} s",
        expect=[JobState.ANALYSED],
    ):
        return _superseded(job_id)
    outbox.settle(job_id)
    if settings.delivery.targets():
        from worker.delivery import deliver_due

        deliver_due(outbox, settings, job_id=job_id)
    final = store.get(job_id)
    assert final is not None
    log.info("job %s (%s): %s", job_id, uid, final.state)
    return final.state


def _build_and_write(
    job_id: int,
    ds: Dataset,
    image: np.ndarray,
    result: Analysis,
    predictor: Predictor,
    uids: ResultUIDs,
    outbox: Outbox,
    settings: Settings,
    view_version: str | None = None,
) -> list[NewResult]:
    """Build SR, SC, PM (setting ``parametric_map``) and GSPS (UIDs derived from source + model
    version) and write them; ``view_version``: the view check the image passed (None: off)."""
    from worker.results import AlgorithmInfo, build_results
    from worker.results.algorithm import VIEW_CHECK
    from worker.results.pmap import wants_parametric_map

    algorithm = AlgorithmInfo.from_card(
        predictor.card,
        version=result.model_version,
        threshold=result.threshold,
        operating_point=result.operating_point_words,
        parameters={
            "occlusion_window": settings.model.occlusion_window,
            "occlusion_stride": settings.model.occlusion_stride,
            "occlusion_fill": settings.model.occlusion_fill,
            **({"heatmap_members": n} if (n := result.heatmap_members) is not None else {}),
            **({VIEW_CHECK: view_version} if view_version else {}),
        },
    )
    previous = outbox.previous_sr(job_id, result.model_version)
    previous_sr = None
    if previous is not None and Path(previous.path).is_file():
        previous_sr = dcmread(previous.path)
    objects = build_results(
        ds,
        probability=result.probability,
        threshold=result.threshold,
        heatmap=result.heatmap,
        display_image=image,
        algorithm=algorithm,
        previous_sr=previous_sr,
        uids=uids,
        domain=result.domain,
        parametric_map=wants_parametric_map(settings.delivery.parametric_map, ds),
    )
    # Sending order: SC, PM (unless left out), GSPS, then the SR that references them.
    return [_write(kind, obj, settings) for kind, obj in objects.items()]


DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Write errors that mean "no room in the results folder": the job fails with that reason."""


def _write(kind: str, obj: Dataset, settings: Settings) -> NewResult:
    """Write one result object durably to the results folder and describe it for the outbox.

    A full results disk fails the job with a reason that says so (no traceback: nothing is
    wrong with the code); the operator frees space and re-analyses it, which writes the same
    objects (same UIDs) again.
    """
    from worker.resultfiles import write_result

    try:
        path = write_result(settings.storage.results, obj)
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        code = errno.errorcode.get(exc.errno or 0, "?")
        log.warning(
            "results folder %s full: %s %s not written (%s)",
            settings.storage.results,
            kind.upper(),
            obj.SOPInstanceUID,
            code,
        )
        raise JobFailed(
            f"results folder full: the {kind.upper()} could not be written ({code}); "
            "free space there, then re-analyse the job"
        ) from exc
    return NewResult(
        kind=kind,
        sop_instance_uid=str(obj.SOPInstanceUID),
        sop_class_uid=str(obj.SOPClassUID),
        series_instance_uid=str(obj.SeriesInstanceUID),
        study_instance_uid=str(obj.StudyInstanceUID),
        path=str(path),
    )


def _check_view(ds: Dataset, image: np.ndarray) -> ViewVerdict:
    """The view check's verdict; a check that cannot load fails the job (no image unchecked)."""
    from worker.view import check

    try:
        return check(ds, image)
    except (OSError, ValueError, RuntimeError) as exc:
        raise JobFailed(f"view check unavailable: {type(exc).__name__}: {exc}") from exc


def _reject(
    job_id: int,
    ds: Dataset,
    reason: str,
    message: str,
    store: JobStore,
    settings: Settings,
    view_version: str | None = None,
) -> str:
    """End the job ``rejected`` with ``reason`` (``message`` on its timeline), and send the
    rejection SR when set to; ``view_version``: the view check that rejected it."""
    if not store.set_state(
        job_id, JobState.REJECTED, message, expect=[JobState.ANALYSING], reason=reason
    ):
        return _superseded(job_id)
    log.info("job %s (%s): rejected: %s", job_id, ds.get("SOPInstanceUID", "?"), reason)
    if settings.delivery.send_rejection_sr:
        _send_rejection_sr(job_id, ds, reason, store, settings, view_version)
    return JobState.REJECTED


def _send_rejection_sr(
    job_id: int,
    ds: Dataset,
    reason: str,
    store: JobStore,
    settings: Settings,
    view_version: str | None = None,
) -> None:
    """Put a "not analysed: reason" SR in the outbox (setting ``send_rejection_sr``)."""
    from pydicom.uid import generate_uid

    from worker.results import AlgorithmInfo, build_rejection_sr
    from worker.results.algorithm import VIEW_CHECK

    try:
        from worker.analysis import active_predictor

        predictor = active_predictor(settings)
        algorithm = AlgorithmInfo.from_card(
            predictor.card,
            version=str(predictor.version),
            parameters={VIEW_CHECK: view_version} if view_version else None,
        )
        version = str(predictor.version)
    except Exception as exc:
        log.warning("job %s: no model for the rejection SR's device identity: %s", job_id, exc)
        return
    source_uid = str(ds.SOPInstanceUID)
    sr = build_rejection_sr(
        ds,
        reason,
        algorithm=algorithm,
        series_instance_uid=generate_uid(entropy_srcs=["rejection-series", source_uid, version]),
        sop_instance_uid=generate_uid(entropy_srcs=["rejection-sr", source_uid, version]),
        series_number=9901,
    )
    from worker.delivery import queue

    queue(
        Outbox(store),
        job_id,
        [_write("rejection_sr", sr, settings)],
        model_version=version,
        settings=settings,
    )
