"""The node's operations HTTP server: ``/health/live``, ``/health/ready`` and ``/metrics``.

A small stdlib HTTP server on its own daemon thread (``monitoring_bind``:``monitoring_port``),
started by ``deepcovid node`` / ``serve`` beside the DICOM listener. It only reads: the job
store through its own small connection pool with short connect timeouts, the broker with a
short-lived connection, the spool's free space and the registry's files. If its port cannot be
bound the node logs it and goes on serving DICOM: monitoring must never stop intake.

- ``GET /health/live``: 200 while the process serves requests.
- ``GET /health/ready`` (and ``/health``): 200 when every readiness check passes, else 503;
  the JSON body lists each check with ``ok``, ``detail`` and ``seconds``.
- ``GET /metrics``: Prometheus text format (see ``docs/operations.md`` for the series).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine, create_engine

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
        url, pool_pre_ping=True, pool_size=2, max_overflow=2, connect_args=connect_args
    )


def readiness_for(settings: Settings, engine: Engine) -> Readiness:
    """The four readiness checks of the node (see :mod:`dicom_node.ops.health`)."""
    return Readiness(
        {
            "database": lambda: check_database(engine),
            "broker": lambda: check_broker(settings.broker, CONNECT_TIMEOUT_S),
            "spool": lambda: check_spool(settings.spool, settings.min_free_space_mb),
            "model": ModelCheck(settings.model_registry_dir),
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
    registry.register(SpoolCollector(settings.spool, settings.min_free_space_mb * MIB))
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


@dataclass
class MonitoringServer:
    """A running operations server; :meth:`shutdown` stops it."""

    httpd: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0 in tests)."""
        return int(self.httpd.server_address[1])

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()


def make_handler(readiness: Readiness, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to the node's readiness checks and metric registry."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "deepcovid-node-ops"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            if path == "/health/live":
                self._json(200, {"status": "live"})
            elif path in {"/health", "/health/ready"}:
                ready, results = readiness.run()
                body = {
                    "status": "ready" if ready else "not ready",
                    "checks": {r.name: r.as_dict() for r in results},
                }
                self._json(200 if ready else 503, body)
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            else:
                self._json(404, {"error": "not found", "endpoints": ENDPOINTS})

        def _json(self, code: int, body: dict[str, Any]) -> None:
            self._send(code, "application/json", json.dumps(body, indent=1).encode())

        def _send(self, code: int, content_type: str, payload: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("ops http: " + format, *args)

    return Handler


ENDPOINTS = ["/health/live", "/health/ready", "/metrics"]


def start_monitoring(settings: Settings) -> MonitoringServer | None:
    """Serve the operations endpoints on a daemon thread; None when off or the port is taken."""
    if settings.monitoring_port == 0:
        log.info("operations endpoints off (monitoring_port = 0)")
        return None
    engine = monitoring_engine(settings.db_url)
    readiness = readiness_for(settings, engine)
    registry = build_registry(settings, engine, readiness)
    address = (settings.monitoring_bind, settings.monitoring_port)
    try:
        httpd = ThreadingHTTPServer(address, make_handler(readiness, registry))
    except OSError as exc:
        log.error(
            "operations endpoints not started: cannot bind %s:%d (%s); DICOM intake goes on",
            *address,
            exc.strerror or type(exc).__name__,
        )
        return None
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="ops-http", daemon=True)
    thread.start()
    server = MonitoringServer(httpd, thread)
    log.info(
        "operations endpoints on http://%s:%d (/health/live, /health/ready, /metrics)",
        settings.monitoring_bind,
        server.port,
    )
    return server
