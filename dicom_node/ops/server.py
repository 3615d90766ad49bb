"""The node's HTTP server: ``/health/live``, ``/health/ready``, ``/metrics`` and the console.

A Starlette app served by uvicorn on a daemon thread (``monitoring_bind``:``monitoring_port``,
:mod:`dicom_node.webserver`), started by ``deepcovid node`` / ``serve`` beside the DICOM
listener. The operations endpoints only read: the job store through their own small connection
pool with short connect timeouts, the broker with a short-lived connection, the spool's free
space and the registry's files. They need no login. If the port cannot be bound the node logs
it and goes on serving DICOM: monitoring must never stop intake.

- ``GET /health/live``: 200 while the process serves requests.
- ``GET /health/ready`` (and ``/health``): 200 when every readiness check passes, else 503;
  the JSON body lists each check with ``ok``, ``detail`` and ``seconds``.
- ``GET /metrics``: Prometheus text format (see ``docs/operations.md`` for the series).

The operator console (:mod:`dicom_node.console`, login required) is served by the same server,
or by a second one when ``console_port``/``console_bind`` name another address.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine, create_engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from common.settings import Settings
from dicom_node.ops import counters
from dicom_node.ops.health import (
    MIB,
    ModelCheck,
    Readiness,
    check_broker,
    check_database,
    check_spool,
)
from dicom_node.ops.metrics import JobStoreCollector, SpoolCollector
from dicom_node.webserver import SecurityHeaders, ThreadedServer

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0


def monitoring_engine(url: str) -> Engine:
    """A small engine for the probes: fails within seconds when the database is away."""
    if url.startswith("sqlite"):
        from store.jobstore import make_engine

        return make_engine(url)
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        connect_args = {"connect_timeout": int(CONNECT_TIMEOUT_S)}
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=2,
        connect_args=connect_args,
        hide_parameters=True,  # as the job store's engine: no bound values in logged errors
    )


def readiness_for(settings: Settings, engine: Engine) -> Readiness:
    """The four readiness checks of the node (see :mod:`dicom_node.ops.health`)."""
    storage = settings.storage
    return Readiness(
        {
            "database": lambda: check_database(engine),
            "broker": lambda: check_broker(storage.broker, CONNECT_TIMEOUT_S),
            "spool": lambda: check_spool(storage.spool, storage.min_free_space_mb),
            "model": ModelCheck(settings.model.registry_dir),
        }
    )


class ReadinessCollector(Collector):
    """``deepcovid_ready_check{check}``: 1 or 0 per readiness check, for alerting."""

    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness

    def describe(self) -> list[Metric]:
        """Nothing up front (the checks run at scrape time)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Run the checks and report each."""
        _, results = self.readiness.run()
        gauge = GaugeMetricFamily(
            "deepcovid_ready_check",
            "Readiness checks of the node (1 passing, 0 failing): database, broker, spool, model.",
            labels=["check"],
        )
        for result in results:
            gauge.add_metric([result.name], 1.0 if result.ok else 0.0)
        yield gauge


def build_registry(settings: Settings, engine: Engine, readiness: Readiness) -> CollectorRegistry:
    """The registry ``/metrics`` serves: in-process counters plus scrape-time collectors."""
    registry = CollectorRegistry()
    registry.register(_Forward(counters.REGISTRY))
    registry.register(JobStoreCollector(engine))
    storage = settings.storage
    registry.register(SpoolCollector(storage.spool, storage.min_free_space_mb * MIB))
    registry.register(ReadinessCollector(readiness))
    ProcessCollector(registry=registry)
    return registry


class _Forward(Collector):
    """Serve the metrics of another registry (the listener's in-process counters)."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        """Whatever the source registry holds now."""
        yield from self.source.collect()


ENDPOINTS = ["/health/live", "/health/ready", "/metrics"]


def ops_routes(readiness: Readiness, registry: CollectorRegistry) -> list[BaseRoute]:
    """``/health/live``, ``/health/ready`` (also ``/health``) and ``/metrics``; no login."""

    def live(request: Request) -> Response:
        return JSONResponse({"status": "live"})

    def ready(request: Request) -> Response:
        ok, results = readiness.run()
        body = {
            "status": "ready" if ok else "not ready",
            "checks": {r.name: r.as_dict() for r in results},
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/health/live", live),
        Route("/health/ready", ready),
        Route("/health", ready),
        Route("/metrics", metrics),
    ]


def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "not found", "endpoints": ENDPOINTS}, status_code=404)


def make_app(routes: list[BaseRoute]) -> Starlette:
    """The node's ASGI app: ``routes`` behind the security headers; JSON 404 elsewhere."""
    return Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={404: _not_found},
    )


@dataclass
class MonitoringServer:
    """The running HTTP server(s); :meth:`shutdown` stops them."""

    http: ThreadedServer
    console: ThreadedServer | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0 in tests)."""
        return self.http.port

    def shutdown(self) -> None:
        """Stop serving and close the sockets."""
        for server in (self.console, self.http):
            if server is not None:
                server.shutdown()


def console_routes(settings: Settings, readiness: Readiness) -> list[BaseRoute]:
    """The console's routes (its audit events go to the process's recorder)."""
    from dicom_node.console import app
    from dicom_node.console.context import ConsoleContext
    from store.jobstore import JobStore

    # Its own engine and pool: operators' pages never hold up a probe or a scrape.
    store = JobStore(settings.storage.db_url)
    # DICOMweb first: its routes take a bearer token, not the console's session.
    web = dicomweb_routes(settings, store) if settings.console.dicomweb else []
    return [
        *web,
        *app.console_routes(ConsoleContext.create(settings, store=store, readiness=readiness)),
    ]


def dicomweb_routes(settings: Settings, store: Any) -> list[BaseRoute]:
    """STOW-RS intake (:mod:`dicom_node.stow`) on the job store, enqueueing from its own thread."""
    from dicom_node.enqueuer import Enqueuer
    from dicom_node.intake import Intake
    from dicom_node.spool import Spool
    from dicom_node.stow import StowService
    from store.queue import enqueue_analysis
    from store.tokens import Tokens

    spool = Spool(settings.storage.spool, min_free_bytes=settings.storage.min_free_space_mb * MIB)
    spool.ensure()
    enqueuer = Enqueuer(enqueue_analysis, name="deepcovid-stow-enqueue")
    service = StowService(
        Intake(spool, store),
        Tokens(store).authenticate,
        enqueuer.submit,
        max_bytes=settings.console.dicomweb_max_mb * MIB,
    )
    return service.routes()


def _serve(
    app: Starlette, address: tuple[str, int], settings: Settings, name: str, tls: bool
) -> ThreadedServer | None:
    try:
        return ThreadedServer(
            app,
            *address,
            name=name,
            certfile=settings.tls.cert if tls else None,
            keyfile=settings.tls.key if tls else None,
        )
    except OSError as exc:
        log.error(
            "%s not started: cannot bind %s:%d (%s); DICOM intake goes on",
            name,
            *address,
            exc.strerror or type(exc).__name__,
        )
        return None


def start_monitoring(settings: Settings) -> MonitoringServer | None:
    """Serve the operations endpoints (and the console) on daemon threads.

    Returns None when ``monitoring_port`` is 0 or its port is taken (the console, on its own
    port, may still run then: it is returned in neither case, and stops with the process).
    """
    engine = monitoring_engine(settings.storage.db_url)
    readiness = readiness_for(settings, engine)
    console_on = settings.console.enabled and settings.console_address[1] != 0
    shared = console_on and settings.console_address == (
        settings.monitoring.bind,
        settings.monitoring.port,
    )
    console_server = None
    if console_on and not shared:
        console_server = _serve(
            make_app(console_routes(settings, readiness)),
            settings.console_address,
            settings,
            "console",
            settings.console.tls,
        )
        if console_server is not None:
            _announce("operator console", console_server, "/")
    if settings.monitoring.port == 0:
        log.info("operations endpoints off (monitoring_port = 0)")
        return None
    registry = build_registry(settings, engine, readiness)
    routes = ops_routes(readiness, registry)
    if shared:
        routes += console_routes(settings, readiness)
    address = (settings.monitoring.bind, settings.monitoring.port)
    http = _serve(make_app(routes), address, settings, "ops-http", shared and settings.console.tls)
    if http is None:
        return None
    _announce(
        "operations endpoints" + (" and operator console" if shared else ""),
        http,
        "/health/live, /health/ready, /metrics" + (", / (console)" if shared else ""),
    )
    return MonitoringServer(http, console_server)


def _announce(what: str, server: ThreadedServer, paths: str) -> None:
    scheme = "https" if server.tls else "http"
    log.info("%s on %s://%s:%d (%s)", what, scheme, server.host, server.port, paths)
