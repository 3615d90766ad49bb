"""The DICOM listener: a pynetdicom AE that answers C-ECHO and C-STORE.

What is negotiated lives in :mod:`dicom_node.contexts`, what happens to one instance in
:mod:`dicom_node.intake`; this module wires them to pynetdicom and to the settings:

- called AE title ``settings.listener.ae_title`` (associations addressed to another title are
  rejected),
- calling-AE allow-list ``listener.allowed_calling_aes`` (pynetdicom's ``require_calling_aet``;
  empty means any) and host allow-list ``listener.allowed_hosts`` (IP addresses or networks,
  checked when the association is requested; empty means any),
- DICOM TLS when ``settings.tls.cert`` is set (:mod:`common.tls`); the handshake runs in the
  connection's own thread, so a peer that stalls it cannot hold up the accept loop,
- every association decision, every failed TLS handshake, each stored instance and the
  listener's start and stop recorded as audit events (:mod:`audit`: the JSON audit log and the
  DICOM audit trail), rejections also in the application log,
- ``listener.max_associations``, ``listener.max_pdu`` (0 = unlimited),
  ``listener.network_timeout_s`` (network, ACSE and DIMSE timeouts),
- the spool in ``settings.storage.spool`` with the free-space watermark
  ``storage.min_free_space_mb``.

After a C-STORE is answered Success, the job is handed to an
:class:`~dicom_node.enqueuer.Enqueuer` that publishes the analysis task on a background thread.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

import audit
from audit import events
from common.settings import Settings
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

    def __init__(
        self,
        ae_title: str,
        intake: Intake,
        enqueuer: Enqueuer,
        *,
        recorder: audit.Recorder | None = None,
        allowed_hosts: Sequence[str] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(ae_title=ae_title)
        self.intake = intake
        self.enqueuer = enqueuer
        # Where audit events go: the process's recorder unless this listener has its own.
        self.recorder = recorder or audit.current()
        self.allowed_networks = [ipaddress.ip_network(h, strict=False) for h in allowed_hosts]
        self.ssl_context = ssl_context
        # Why we rejected an association ourselves (host check), for the EVT_REJECTED handler.
        self._reject_reasons: weakref.WeakKeyDictionary[Association, str] = (
            weakref.WeakKeyDictionary()
        )
        self.handlers: list[tuple[Any, Any]] = [
            (evt.EVT_C_ECHO, _handle_echo),
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_REQUESTED, self._check_host),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ACCEPTED, self._on_accepted),
            *ops_counters.HANDLERS,  # association and C-STORE status counters for /metrics
        ]

    def start_server(  # type: ignore[override]  # narrower signature on purpose
        self,
        address: tuple[str, int],
        block: bool = True,
        evt_handlers: list[Any] | None = None,
        **kwargs: Any,
    ) -> ThreadedAssociationServer | None:
        """Start listening on ``address`` with the node's handlers (plus ``evt_handlers``)."""
        handlers = [*self.handlers, *(evt_handlers or [])]
        kwargs.setdefault("ssl_context", self.ssl_context)
        return super().start_server(address, block=block, evt_handlers=handlers, **kwargs)

    def make_server(self, *args: Any, **kwargs: Any) -> Any:
        """Always our :class:`NodeServer` (threaded, TLS handshake per connection thread)."""
        kwargs["server_class"] = NodeServer
        return super().make_server(*args, **kwargs)

    # --- access control and audit ---------------------------------------------------------
    def _check_host(self, event: Event) -> None:
        """EVT_REQUESTED: reject (permanent, no reason given) a peer outside ``allowed_hosts``.

        pynetdicom skips its own negotiation when a handler of this event has rejected.
        """
        if not self.allowed_networks or _host_allowed(
            event.assoc.requestor.address, self.allowed_networks
        ):
            return
        self._reject_reasons[event.assoc] = "host not allowed"
        event.assoc.acse.send_reject(0x01, 0x01, 0x01)
        evt.trigger(event.assoc, evt.EVT_REJECTED, {})
        event.assoc.kill()

    def _on_rejected(self, event: Event) -> None:
        """EVT_REJECTED: the application log and the audit log say who was turned away."""
        reason = self._reject_reasons.pop(event.assoc, None) or _rejection_reason(event.assoc)
        log.warning("association from %s rejected: %s", _peer(event), reason)
        self._audit_association(event.assoc, reason)

    def _on_accepted(self, event: Event) -> None:
        """EVT_ACCEPTED: who associated (audit log; debug line in the application log)."""
        log.debug("association from %s accepted", _peer(event))
        self._audit_association(event.assoc, None)

    def _audit_association(self, assoc: Association, rejected_for: str | None) -> None:
        """Record the decision on ``assoc``: accepted (``None``), or rejected for a reason."""
        requestor = assoc.requestor
        primitive = requestor.primitive
        calling_ae = str(requestor.ae_title or getattr(primitive, "calling_ae_title", ""))
        called_ae = str(getattr(primitive, "called_ae_title", "") or "")
        address = str(requestor.address)
        port = int(requestor.port) if requestor.port is not None else None
        self.recorder.record(
            events.AssociationAccepted(
                calling_ae=calling_ae, called_ae=called_ae, peer_address=address, peer_port=port
            )
            if rejected_for is None
            else events.AssociationRejected(
                calling_ae=calling_ae, called_ae=called_ae, peer_address=address, peer_port=port,
                reason=rejected_for,
            )
        )  # fmt: skip

    def tls_failed(self, client_address: Any, exc: BaseException) -> None:
        """A TLS handshake failed (no or untrusted client certificate, not TLS at all...)."""
        address, port = [*client_address, None, None][:2]
        reason = f"TLS handshake failed: {_tls_reason(exc)}"
        log.warning("connection from %s:%s refused: %s", address, port, reason)
        self.recorder.record(
            events.TlsHandshakeFailed(
                peer_address=str(address),
                peer_port=port if isinstance(port, int) else None,
                reason=reason,
            )
        )

    def _handle_store(self, event: Event) -> Dataset:
        """EVT_C_STORE: run the intake sequence, answer its status, then enqueue."""
        request = event.request
        assert isinstance(request, C_STORE)  # EVT_C_STORE carries a C-STORE request
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
        if result.ok and result.study_instance_uid:
            self.recorder.record(
                events.InstancesReceived(
                    calling_ae=str(event.assoc.requestor.ae_title),
                    peer_address=str(event.assoc.requestor.address),
                    study_instance_uid=result.study_instance_uid,
                    sop_classes={str(request.AffectedSOPClassUID): 1},
                    patient_id=result.patient_id,
                    received_as="C" if result.created else "U" if result.changed else "R",
                )
            )
        return _status_dataset(result)


class NodeServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with the TLS handshake moved off the accept loop.

    pynetdicom wraps accepted sockets in ``get_request`` -- on the one thread that accepts, with
    no timeout, so a peer that never completes the handshake would block the listener. Here
    ``get_request`` only accepts; the handshake runs, bounded by the network timeout, in the
    thread that then serves the connection, and a failure is audited and closes it.
    """

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection (no TLS yet)."""
        assert self.socket is not None
        client_socket, address = self.socket.accept()
        return client_socket, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Complete the TLS handshake when configured, then serve the association."""
        if self.ssl_context is not None:
            try:
                request = self._handshake(request)
            except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
                node: Any = self.ae
                if isinstance(node, NodeAE):
                    node.tls_failed(client_address, exc)
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)

    def _handshake(self, request: socket.socket) -> socket.socket:
        assert self.ssl_context is not None
        request.settimeout(self.ae.network_timeout)
        tls = self.ssl_context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except BaseException:
            tls.close()
            raise
        tls.settimeout(None)  # as pynetdicom's own accepted sockets: blocking
        return tls


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


def build_ae(
    settings: Settings,
    *,
    store: JobRecorder,
    enqueue: EnqueueFn,
    recorder: audit.Recorder | None = None,
) -> NodeAE:
    """The configured listener AE (not yet listening); ``store``/``enqueue`` are injectable.

    Audit events go to ``recorder``, by default the process's (:func:`audit.configure`).

    Creates the spool folder (0700) and removes temporary files a crash left in it.
    """
    spool = Spool(settings.storage.spool, min_free_bytes=settings.storage.min_free_space_mb * MIB)
    spool.ensure()
    spool.clean_stale()
    ae = NodeAE(
        settings.listener.ae_title,
        Intake(spool, store),
        Enqueuer(enqueue),
        recorder=recorder,
        allowed_hosts=settings.listener.allowed_hosts,
        ssl_context=settings.tls.server_context(),
    )
    for abstract_syntax, transfer_syntaxes in supported_contexts():
        ae.add_supported_context(abstract_syntax, list(transfer_syntaxes))
    ae.require_called_aet = True
    ae.require_calling_aet = list(settings.listener.allowed_calling_aes)
    ae.maximum_associations = settings.listener.max_associations
    ae.maximum_pdu_size = settings.listener.max_pdu
    ae.network_timeout = settings.listener.network_timeout_s
    ae.acse_timeout = settings.listener.network_timeout_s
    ae.dimse_timeout = settings.listener.network_timeout_s
    return ae


def start_server(
    settings: Settings,
    *,
    store: JobRecorder,
    enqueue: EnqueueFn,
    recorder: audit.Recorder | None = None,
) -> Listener:
    """Build the AE and start listening without blocking; call ``.shutdown()`` to stop."""
    ae = build_ae(settings, store=store, enqueue=enqueue, recorder=recorder)
    server = ae.start_server((settings.listener.bind_address, settings.listener.port), block=False)
    assert server is not None
    listener = Listener(ae, server)
    host, port = listener.address
    ae_title, spool = settings.listener.ae_title, settings.storage.spool
    log.info("DICOM listener %s on %s:%d, spool %s", ae_title, host, port, spool)
    return listener


def serve_forever(settings: Settings) -> None:
    """Run the listener with the real job store and queue until interrupted (blocking).

    The caller applies the job store's migrations first (``deepcovid node`` does).
    """
    from store import JobStore
    from store.queue import enqueue_analysis

    settings.storage.ensure_dirs()
    store = JobStore(settings.storage.db_url)
    ae = build_ae(settings, store=store, enqueue=enqueue_analysis)
    log.info(
        "DICOM listener %s on %s:%d, spool %s",
        settings.listener.ae_title,
        settings.listener.bind_address,
        settings.listener.port,
        settings.storage.spool,
    )
    ae.recorder.record(events.ApplicationStarted())
    try:
        ae.start_server((settings.listener.bind_address, settings.listener.port), block=True)
    except KeyboardInterrupt:
        log.info("DICOM listener stopping")
    finally:
        ae.recorder.record(events.ApplicationStopped())
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


_REJECTIONS = {
    (0x01, 0x01, 0x03): "calling AE title not allowed",
    (0x01, 0x01, 0x07): "called AE title not recognised",
    (0x01, 0x01, 0x02): "application context name not supported",
    (0x02, 0x02, 0x01): "user identity not verified",
    (0x02, 0x03, 0x02): "maximum associations reached",
}


def _rejection_reason(assoc: Association) -> str:
    """Why pynetdicom rejected: its A-ASSOCIATE-RJ result, source and diagnostic in words."""
    primitive = assoc.acceptor.primitive
    key = tuple(
        getattr(primitive, name, None) for name in ("result", "result_source", "diagnostic")
    )
    return _REJECTIONS.get(key, f"rejected (result, source, diagnostic = {key})")  # type: ignore[arg-type]  # key is a tuple of ints


def _host_allowed(address: str, networks: Sequence[Any]) -> bool:
    """Whether ``address`` (an IPv4/IPv6 literal, maybe IPv4-mapped) is in ``networks``."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    return any(c in net for c in candidates for net in networks if c.version == net.version)


def _tls_reason(exc: BaseException) -> str:
    """A short, fixed reason for a failed handshake (OpenSSL's reason code when it has one)."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return type(exc).__name__
