"""Send outbox rows to their destinations, with back-off, and confirm them.

Used by the worker right after it builds results (fast path) and by the node's dispatcher
loop, which retries what is due. Each row is claimed before it is sent, so two senders never
send the same row at once; a destination that is down only delays its own rows. How a row is
sent and confirmed is its destination type's (:mod:`worker.destinations`); the retry policy,
the states and the audit trail are here, the same for every type. What reached the destination
(or was given up) is audited per study (:mod:`audit`).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Sequence

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

import audit
from audit.events import InstancesSent, count_sop_classes
from common.settings import Settings
from store.outage import UNREACHABLE_ERRORS, OutageLog
from store.outbox import NewResult, Outbox, ResultView
from store.schema import DeliveryState
from worker.destinations.base import DeliveryError, Destination, open_destination, type_for

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 600.0
PATIENT_ID = Tag(0x0010, 0x0020)


def retry_delay(settings: Settings, attempts: int) -> float:
    """Exponential back-off: ``delivery_backoff_s * 2**(attempts-1)``, capped at 10 minutes."""
    return float(min(settings.delivery.backoff_s * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S))


def queue(
    outbox: Outbox,
    job_id: int,
    results: Sequence[NewResult],
    *,
    model_version: str | None,
    settings: Settings,
) -> int:
    """Put ``results`` in the outbox once for every destination whose type takes their kind.

    Each (result, destination) pair is its own row: its own state, attempts and back-off, so a
    PACS that is down delays only its own copies. With no destination configured the results
    are recorded as ``kept``. A destination whose text selects no type is still queued: its rows
    then fail with the reason (a typo is visible in the console, not silently dropped).
    Returns how many rows were new.
    """
    targets = settings.delivery.targets()
    if not targets:
        return outbox.add(job_id, list(results), model_version=model_version, destination=None)
    new = 0
    for target in targets:
        try:
            kind_ok = type_for(target.url).accepts
        except ValueError:
            kind_ok = lambda kind: True  # noqa: E731  # fails at delivery, with the reason
        taken = [r for r in results if kind_ok(r.kind)]
        if taken:
            new += outbox.add(job_id, taken, model_version=model_version, destination=target.url)
    return new


def deliver_due(outbox: Outbox, settings: Settings, *, job_id: int | None = None) -> int:
    """Send every due row (of ``job_id`` only, if given); returns how many were stored."""
    lease_s = max(settings.listener.network_timeout_s * 5, 60.0)
    due = outbox.claim_due(job_id=job_id, lease_s=lease_s)
    by_destination: dict[str, list[ResultView]] = defaultdict(list)
    for row in due:
        by_destination[row.destination or ""].append(row)
    stored = 0
    for dest_text, rows in by_destination.items():
        stored += _deliver(outbox, settings, dest_text, rows)
    return stored


def _deliver(outbox: Outbox, settings: Settings, dest_text: str, rows: list[ResultView]) -> int:
    """Deliver ``rows`` (claimed) to one destination; returns how many it now holds."""
    try:
        destination = open_destination(dest_text, settings)
    except ValueError as exc:
        for row in rows:
            outbox.mark(row.id, DeliveryState.FAILED, error=str(exc))
        return 0
    already = _already_there(outbox, settings, destination, rows)
    _audit_sent(destination, [row for row in rows if row.id in already])
    rows = [row for row in rows if row.id not in already]
    if not rows:
        return len(already)
    by_id = {row.id: row for row in rows}
    try:
        outcome: dict[int, DeliveryError | None] = destination.send(rows)
    except Exception as exc:  # a bug in a type must not stop the other destinations
        log.exception("sending to %s failed unexpectedly", destination)
        unexpected = DeliveryError(f"{type(exc).__name__} while sending")
        outcome = dict.fromkeys(by_id, unexpected)
    ok_rows: list[ResultView] = []
    for row_id, error in outcome.items():
        if error is None:
            ok_rows.append(by_id[row_id])
        else:
            _failed(outbox, settings, by_id[row_id], str(error), permanent=not error.transient)
    for row_id in by_id.keys() - outcome.keys():  # a type that forgot a row: try it again
        _failed(outbox, settings, by_id[row_id], "no outcome from the destination type")
    if not ok_rows:
        return len(already)
    found: set[str] | None = None
    if settings.delivery.verify:
        try:
            found = destination.confirm(ok_rows)
        except Exception as exc:  # confirmation is best effort; the store already succeeded
            log.warning("confirmation at %s failed: %s", destination, exc)
    for row in ok_rows:
        if found is None:
            outbox.mark(row.id, DeliveryState.SENT)
        elif row.sop_instance_uid in found:
            outbox.mark(row.id, DeliveryState.CONFIRMED)
        else:
            _failed(outbox, settings, row, "stored, but the destination does not find it")
    _audit_sent(destination, ok_rows)
    log.info("delivered %d object(s) to %s", len(ok_rows), destination)
    woken = outbox.wake(dest_text)
    if woken:
        log.info("%s answers again: %d waiting object(s) due now", destination, woken)
    return len(ok_rows) + len(already)


def _already_there(
    outbox: Outbox,
    settings: Settings,
    destination: Destination,
    rows: list[ResultView],
) -> set[int]:
    """Ids of retried rows the destination already holds, marked confirmed without a resend.

    A retry (``attempts`` > 1) follows an attempt whose outcome may be unknown: the sender
    was killed, or the answer was lost, after the destination had stored the object. Asking
    first (C-FIND or QIDO-RS, when ``delivery_verify`` is on) keeps such an object from being
    sent twice. First attempts are sent straight away: the normal path costs no extra query.
    """
    retried = [row for row in rows if row.attempts > 1]
    if not retried or not settings.delivery.verify:
        return set()
    try:
        found = destination.confirm(retried)
    except Exception as exc:  # cannot ask: send again, the destination keeps one copy
        log.info("asking %s before resending failed: %s", destination, exc)
        return set()
    done = {row.id for row in retried if found and row.sop_instance_uid in found}
    for row in retried:
        if row.id in done:
            outbox.mark(row.id, DeliveryState.CONFIRMED)
    if done:
        log.info(
            "%d object(s) already at %s after an interrupted attempt; not sent again",
            len(done),
            destination,
        )
    return done


def _failed(
    outbox: Outbox, settings: Settings, row: ResultView, error: str, *, permanent: bool = False
) -> None:
    """Retry ``row`` after its back-off, or give up (a permanent error, or out of attempts)."""
    if permanent or row.attempts >= settings.delivery.max_attempts:
        why = "refused" if permanent else f"after {row.attempts} attempts"
        log.error(
            "result %s to %s: giving up (%s): %s", row.sop_instance_uid, row.destination, why, error
        )
        outbox.mark(row.id, DeliveryState.FAILED, error=f"{why}: {error}")
        _audit_given_up(row, error, settings)
        return
    delay = retry_delay(settings, row.attempts)
    log.warning(
        "result %s to %s: attempt %d failed (%s); retry in %.0f s",
        row.sop_instance_uid,
        row.destination,
        row.attempts,
        error,
        delay,
    )
    outbox.mark(row.id, DeliveryState.PENDING, error=error, retry_in_s=delay)


def _audit_sent(destination: Destination, rows: list[ResultView]) -> None:
    """One audit event (instances sent) per study of ``rows``."""
    by_study: dict[str, list[ResultView]] = defaultdict(list)
    for row in rows:
        by_study[row.study_instance_uid or ""].append(row)
    name, host = destination.peer
    for study_uid, study_rows in by_study.items():
        if study_uid:
            audit.record(
                InstancesSent(
                    destination_ae=name,
                    destination_host=host,
                    study_instance_uid=study_uid,
                    sop_classes=count_sop_classes(r.sop_class_uid for r in study_rows),
                    patient_id=_patient_id(study_rows[0].path),
                )
            )


def _audit_given_up(row: ResultView, error: str, settings: Settings) -> None:
    """A result that will not be delivered: the transfer's audit event, with the failure."""
    if not row.study_instance_uid:
        return
    try:
        name, host = open_destination(row.destination or "", settings).peer
    except ValueError:
        return
    audit.record(
        InstancesSent(
            destination_ae=name,
            destination_host=host,
            study_instance_uid=row.study_instance_uid,
            sop_classes={row.sop_class_uid: 1},
            patient_id=_patient_id(row.path),
            failure=f"not delivered after {row.attempts} attempts: {error}",
        )
    )


def _patient_id(path: str) -> str | None:
    """The Patient ID of a result object (the audit message's Patient participant), if any."""
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=[PATIENT_ID])
    except (OSError, InvalidDicomError, ValueError):
        return None
    value = ds.get("PatientID")
    return str(value) if value else None


def start_dispatcher(
    outbox: Outbox, settings: Settings, interval_s: float = 1.0
) -> threading.Event:
    """Deliver due objects every ``interval_s`` in a daemon thread; set the event to stop."""
    stop = threading.Event()
    outage = OutageLog(log, "dispatcher")

    def loop() -> None:
        while not stop.is_set():
            try:
                deliver_due(outbox, settings)
                outage.succeeded()
            except UNREACHABLE_ERRORS as exc:  # one line per outage, not a traceback a second
                outage.failed(exc)
            except Exception:
                log.exception("dispatcher run failed")
            stop.wait(interval_s)

    threading.Thread(target=loop, name="dispatcher", daemon=True).start()
    return stop
