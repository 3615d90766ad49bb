"""The DICOM listener: a pynetdicom AE that answers C-ECHO and C-STORE.

What is negotiated lives in :mod:`dicom_node.contexts`, what happens to one instance in
:mod:`dicom_node.intake`; this module wires them to pynetdicom and to the settings:

- called AE title ``settings.ae_title`` (associations addressed to another title are rejected),
- calling-AE allow-list ``settings.allowed_calling_aes`` (pynetdicom's ``require_calling_aet``;
  empty means any), rejected associations logged with the peer's address and AE title,
- ``max_associations``, ``max_pdu`` (0 = unlimited), ``network_timeout_s`` (network, ACSE and
  DIMSE timeouts),
- the spool in ``settings.spool`` with the free-space watermark ``settings.min_free_space_mb``.

After a C-STORE is answered Success, the job is handed to an
:class:`~dicom_node.enqueuer.Enqueuer` that publishes the analysis task on a background thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from deepcovid.settings import Settings
from dicom_node.contexts import supported_contexts
from dicom_node.enqueuer import EnqueueFn, Enqueuer
from dicom_node.intake import Intake, IntakeResult, JobRecorder, Status
from dicom_node.ops import counters as ops_counters
from dicom_node.spool import Spool

log = logging.getLogger(__name__)

MIB = 1024 * 1024


class NodeAE(AE):
    """A pynetdicom AE that carries the listener's own event handlers and intake.

    :meth:`start_server` binds the handlers itself, so ``build_ae(...).start_server(addr)``
    is a complete listener; extra handlers may still be passed.
    """

    def __init__(self, ae_title: str, intake: Intake, enqueuer: Enqueuer) -> None:
        super().__init__(ae_title=ae_title)
        self.intake = intake
        self.enqueuer = enqueuer
        self.handlers: list[tuple[Any, Any]] = [
            (evt.EVT_C_ECHO, _handle_echo),
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_REJECTED, _log_rejected),
            (evt.EVT_ACCEPTED, _log_accepted),
            *ops_counters.HANDLERS,  # association and C-STORE status counters for /metrics
        ]

    def start_server(  # type: ignore[override]
        self,
        address: tuple[str, int],
        block: bool = True,
        evt_handlers: list[Any] | None = None,
        **kwargs: Any,
    ) -> ThreadedAssociationServer | None:
        """Start listening on ``address`` with the node's handlers (plus ``evt_handlers``)."""
        handlers = [*self.handlers, *(evt_handlers or [])]
        return super().start_server(address, block=block, evt_handlers=handlers, **kwargs)

    def _handle_store(self, event: Event) -> Dataset:
        """EVT_C_STORE: run the intake sequence, answer its status, then enqueue."""
        request = event.request
        try:
            result = self.intake.receive(
                sop_class_uid=str(request.AffectedSOPClassUID or ""),
                sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
                transfer_syntax_uid=str(event.context.transfer_syntax),
                calling_ae=str(event.assoc.requestor.ae_title),
                dataset=event.encoded_dataset(include_meta=False),
            )
        except Exception:  # a bug, not bad input: keep serving, tell the sender to retry later
            log.exception("C-STORE handler failed unexpectedly")
            result = IntakeResult(Status.OUT_OF_RESOURCES, "internal error in the listener")
        if result.ok and result.needs_analysis and result.job_id is not None:
            self.enqueuer.submit(result.job_id)
        return _status_dataset(result)


@dataclass
class Listener:
    """A running, non-blocking listener: the AE, its server thread and the enqueuer."""

    ae: NodeAE
    server: ThreadedAssociationServer

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (useful with port 0)."""
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def shutdown(self) -> None:
        """Stop accepting, close associations, publish pending enqueues."""
        self.server.shutdown()
        self.ae.enqueuer.close()


def build_ae(settings: Settings, *, store: JobRecorder, enqueue: EnqueueFn) -> NodeAE:
    """The configured listener AE (not yet listening); ``store``/``enqueue`` are injectable.

    Creates the spool folder (0700) and removes temporary files a crash left in it.
    """
    spool = Spool(settings.spool, min_free_bytes=settings.min_free_space_mb * MIB)
    spool.ensure()
    spool.clean_stale()
    ae = NodeAE(settings.ae_title, Intake(spool, store), Enqueuer(enqueue))
    for abstract_syntax, transfer_syntaxes in supported_contexts():
        ae.add_supported_context(abstract_syntax, list(transfer_syntaxes))
    ae.require_called_aet = True
    ae.require_calling_aet = list(settings.allowed_calling_aes)
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = settings.max_pdu
    ae.network_timeout = settings.network_timeout_s
    ae.acse_timeout = settings.network_timeout_s
    ae.dimse_timeout = settings.network_timeout_s
    return ae


def start_server(settings: Settings, *, store: JobRecorder, enqueue: EnqueueFn) -> Listener:
    """Build the AE and start listening without blocking; call ``.shutdown()`` to stop."""
    ae = build_ae(settings, store=store, enqueue=enqueue)
    server = ae.start_server((settings.bind_address, settings.port), block=False)
    assert server is not None
    listener = Listener(ae, server)
    host, port = listener.address
    log.info("DICOM listener %s on %s:%d, spool %s", settings.ae_title, host, port, settings.spool)
    return listener


def serve_forever(settings: Settings) -> None:
    """Run the listener with the real job store and queue until interrupted (blocking).

    The caller applies the job store's migrations first (``deepcovid node`` does).
    """
    from worker.queue import enqueue_analysis
    from worker.store import JobStore

    settings.ensure_dirs()
    store = JobStore(settings.db_url)
    ae = build_ae(settings, store=store, enqueue=enqueue_analysis)
    log.info(
        "DICOM listener %s on %s:%d, spool %s",
        settings.ae_title,
        settings.bind_address,
        settings.port,
        settings.spool,
    )
    try:
        ae.start_server((settings.bind_address, settings.port), block=True)
    except KeyboardInterrupt:
        log.info("DICOM listener stopping")
    finally:
        ae.shutdown()
        ae.enqueuer.close()


def _status_dataset(result: IntakeResult) -> Dataset:
    """The C-STORE response status, with Error Comment and Offending Element on failure."""
    status = Dataset()
    status.Status = int(result.status)
    if not result.ok:
        status.ErrorComment = result.error_comment
        if result.offending_elements:
            status.OffendingElement = list(result.offending_elements)
    return status


def _handle_echo(event: Event) -> int:
    """EVT_C_ECHO: always Success."""
    del event
    return int(Status.SUCCESS)


def _peer(event: Event) -> str:
    requestor = event.assoc.requestor
    return f"{requestor.ae_title!s} at {requestor.address}:{requestor.port}"


def _log_rejected(event: Event) -> None:
    """EVT_REJECTED: who was turned away (the audit log of issue 6 hooks in here)."""
    log.warning("association from %s rejected", _peer(event))


def _log_accepted(event: Event) -> None:
    """EVT_ACCEPTED: who associated (debug level: one line per association)."""
    log.debug("association from %s accepted", _peer(event))
