"""``deepcovid doctor``: what a site needs before going live, checked, with what to do if wrong.

Each check gives ``ok``, ``warn`` (works, but worth knowing) or ``fail`` (the node would not do
its job), a detail and, when not ok, the fix:

- **dicom port** / **monitoring port**: free, or in use by this node (it answers C-ECHO as our AE
  title / ``/health/live``); taken by another program is a failure;
- **job store**: reachable and at the migrations' head (not created yet, or behind: a warning,
  since every service start migrates; unreachable: a failure);
- **broker**: accepts a connection (the embedded one is created on first start);
- **model**: the active version loads and its weights match the card's sha256;
- **view check**: the pixel view check loads and its weights match its card (off: a warning);
- **spool**: its disk has more free space than ``min_free_space_mb`` and it is writable;
- **tls**: the listener's certificate and key load (when ``tls_cert`` is set);
- **destination**: answers C-ECHO (after a verified TLS handshake when ``destination_tls``);
- **ris**: each RIS destination is reachable: an MLLP listener accepts a connection (and the TLS
  handshake), a FHIR server answers ``GET [base]/metadata`` with an R4 CapabilityStatement;
- **dcmtk**: ``storescu``, ``echoscu`` and ``dsr2html`` are installed (for the README's lines
  and the demo's SR rendering; a warning only).

Nothing is created or changed. The readiness checks of the running node
(:mod:`dicom_node.ops.health`) are reused where they say the same thing. The command exits 1 when
any check fails.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from common.redact import redact_url
from common.settings import DestinationSettings, Settings

Level = Literal["ok", "warn", "fail"]
DOCTOR_AE = "DOCTOR"
"""Calling AE title of the doctor's C-ECHOs (the first allowed one when the node has a list)."""
DCMTK_TOOLS = ("storescu", "echoscu", "dsr2html")


@dataclass(frozen=True)
class Finding:
    """The outcome of one check."""

    name: str
    level: Level
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        """Whether this check says the node would not do its job."""
        return self.level == "fail"


def _calling_ae(settings: Settings) -> str:
    allowed = settings.listener.allowed_calling_aes
    return allowed[0] if allowed else DOCTOR_AE


def _connect_host(bind_address: str) -> str:
    """Where to reach a listener bound to ``bind_address`` from this machine."""
    if bind_address in {"0.0.0.0", ""}:
        return "127.0.0.1"
    return "::1" if bind_address == "::" else bind_address


def port_state(host: str, port: int) -> tuple[str, str]:
    """``("free"|"taken"|"denied"|"no-address", detail)`` for binding ``host:port`` now.

    SO_REUSEADDR as the servers set it, so a port in TIME_WAIT after a stop counts as free.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            kind = {
                errno.EADDRINUSE: "taken",
                errno.EACCES: "denied",
                errno.EADDRNOTAVAIL: "no-address",
            }.get(exc.errno or 0, "denied")
            return kind, exc.strerror or str(exc)
    return "free", "free"


def check_port(
    name: str, host: str, port: int, setting: str, ours: Callable[[], str | None]
) -> Finding:
    """``host:port`` can be bound, or is bound by this node (``ours()`` says how it knows)."""
    where = f"{host}:{port}"
    state, text = port_state(host, port)
    if state == "free":
        return Finding(name, "ok", f"{where} is free")
    if state == "taken":
        evidence = ours()
        if evidence:
            return Finding(name, "ok", f"{where} is in use by this node ({evidence})")
        return Finding(
            name,
            "fail",
            f"{where} is in use by another program",
            f"stop it, or choose another port with {setting}",
        )
    if state == "no-address":
        return Finding(
            name,
            "fail",
            f"{host} is not an address of this machine ({text})",
            "set DEEPCOVID_BIND_ADDRESS to one of its addresses, or 0.0.0.0",
        )
    return Finding(
        name,
        "fail",
        f"cannot listen on {where}: {text}",
        f"ports below 1024 need privileges: choose another with {setting}",
    )


def check_dicom_port(settings: Settings) -> Finding:
    """The listener's port: free, or taken by this node answering C-ECHO."""

    def ours() -> str | None:
        from dicom_client.echo import echo
        from dicom_client.scu import Destination

        if settings.tls.cert is not None:
            return None  # a TLS listener: doctor has no client certificate to prove it is ours
        host = _connect_host(settings.listener.bind_address)
        reply = echo(
            Destination(settings.listener.ae_title, host, settings.listener.port),
            calling_ae=_calling_ae(settings),
            timeout_s=5.0,
        )
        return f"answers C-ECHO as {settings.listener.ae_title}" if reply.ok else None

    listener = settings.listener
    return check_port("dicom port", listener.bind_address, listener.port, "DEEPCOVID_PORT", ours)


def check_monitoring_port(settings: Settings) -> Finding:
    """The health/metrics port: off, free, or taken by this node's ``/health/live``."""
    if settings.monitoring.port == 0:
        return Finding("monitoring port", "ok", "health and metrics endpoints are off")

    def ours() -> str | None:
        host = _connect_host(settings.monitoring.bind)
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{settings.monitoring.port}/health/live"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.loads(response.read().decode())
        except (OSError, ValueError):
            return None
        return "answers /health/live" if body.get("status") == "live" else None

    return check_port(
        "monitoring port",
        settings.monitoring.bind,
        settings.monitoring.port,
        "DEEPCOVID_MONITORING_PORT",
        ours,
    )


def check_job_store(settings: Settings) -> Finding:
    """Reachable and migrated (see the module docstring for what only warns)."""
    from store.existing import UPGRADE_FIX, schema_status

    status = schema_status(settings.storage.db_url)
    if status.ok:
        return Finding("job store", "ok", status.detail)
    if status.state in {"missing", "empty", "behind"}:
        return Finding("job store", "warn", status.detail, UPGRADE_FIX)
    if status.state == "unknown":
        return Finding("job store", "fail", status.detail, "upgrade deepcovid-node")
    return Finding(
        "job store",
        "fail",
        status.detail,
        "check DEEPCOVID_DATABASE_URL and that the database server runs",
    )


def check_broker(settings: Settings) -> Finding:
    """The task broker accepts a connection; the embedded one may not exist yet."""
    from dicom_node.ops.health import check_broker as probe

    url = settings.storage.broker
    if url.startswith("sqla+sqlite:///"):
        path = Path(url.removeprefix("sqla+sqlite:///"))
        if not path.is_file():
            return Finding("broker", "ok", f"embedded broker {path}, created on first start")
    result = probe(url)
    if result.ok:
        return Finding("broker", "ok", f"{redact_url(url)}: {result.detail}")
    return Finding(
        "broker",
        "fail",
        f"{redact_url(url)}: {result.detail}",
        "check DEEPCOVID_BROKER_URL and that the broker (redis-server) runs",
    )


def check_model(settings: Settings) -> Finding:
    """The active version loads, its weights matching the card's sha256."""
    from models.operating_point import PAPER, describe
    from models.registry import Registry, RegistryError

    root = Path(settings.model.registry_dir)
    registry = Registry(root)
    try:
        version = registry.active_version()
        if version is None:
            return Finding(
                "model",
                "fail",
                f"no active model version in {root}",
                "activate one with `deepcovid models activate VERSION` (`models list`)",
            )
        _, card = registry.load(version)
    except (RegistryError, OSError, ValueError, RuntimeError) as exc:
        return Finding(
            "model",
            "fail",
            f"the active model cannot be used: {exc}",
            "copy the version again, or activate another (`deepcovid models list`)",
        )
    weights = (
        f"the {len(card.members)} members' weights match their sha256"
        if card.is_ensemble
        else f"weights match sha256 {card.weights_sha256[:12]}"
    )
    policy = settings.model.threshold_policy
    point_name, point = card.operating_point(policy)
    loads = (
        f"active version {version} ({card.architecture}, threshold {point.threshold:.4f}: "
        f"{describe(point_name)}) loads; {weights}"
    )
    if point_name != policy and policy != PAPER:
        # Serving still works, at the card's single threshold: not what the setting asks for.
        return Finding(
            "model",
            "warn",
            f"{loads}; threshold_policy {policy}, but the card holds no {policy} point: "
            "findings are called at its single threshold",
            f"store both points with `deepcovid threshold --model {version}` on labelled films, "
            "or set threshold_policy paper",
        )
    return Finding("model", "ok", loads)


def check_view_check(settings: Settings) -> Finding:
    """The pixel view check (setting ``model.view_check``) loads, its weights matching its card."""
    if not settings.model.view_check:
        return Finding(
            "view check",
            "warn",
            "off (model.view_check false): a lateral or CT image whose header does not say so "
            "reaches the classifier",
            "set model.view_check true",
        )
    from models.viewcheck import FOLDER, load_view_check

    try:
        check = load_view_check()
    except (OSError, ValueError, RuntimeError) as exc:
        return Finding(
            "view check",
            "fail",
            f"the view check cannot be used: {exc}",
            f"reinstall the package (its files are in {FOLDER}), or set model.view_check false",
        )
    sha = str(check.card.get("weights_sha256", ""))[:12]
    return Finding("view check", "ok", f"{check.version} loads; weights match sha256 {sha}")


def _existing_ancestor(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_spool(settings: Settings) -> Finding:
    """Free space above the watermark, and a folder the node can write."""
    from dicom_node.ops.health import check_spool as probe

    spool = settings.storage.spool
    folder = _existing_ancestor(spool)
    result = probe(folder, settings.storage.min_free_space_mb)
    if not result.ok:
        return Finding(
            "spool",
            "fail",
            f"{spool}: {result.detail}",
            "free disk space, or move DEEPCOVID_SPOOL_DIR (or lower min_free_space_mb)",
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        return Finding(
            "spool", "fail", f"{folder} is not writable", "give the service's user write access"
        )
    made = "" if spool.exists() else " (created on first start)"
    return Finding("spool", "ok", f"{spool}{made}: {result.detail}")


def check_tls(settings: Settings) -> Finding | None:
    """The listener's certificate and key load (None when the listener has no TLS)."""
    if settings.tls.cert is None:
        return None
    import ssl

    try:
        settings.tls.server_context()
    except (OSError, ssl.SSLError) as exc:
        return Finding(
            "tls",
            "fail",
            f"the listener's certificate, key or CA cannot be loaded: {exc}",
            "check DEEPCOVID_TLS_CERT, DEEPCOVID_TLS_KEY and DEEPCOVID_TLS_CA",
        )
    return Finding("tls", "ok", f"listener certificate {settings.tls.cert} loads")


def check_destination(settings: Settings) -> Finding:
    """Each DICOM destination answers: C-ECHO (over a verified TLS handshake when configured)
    for ``AE@host:port``, a QIDO-RS query for a DICOMweb URL (RIS types: :func:`check_ris`)."""
    from worker.destinations.base import type_for

    targets = settings.delivery.targets()
    if not targets:
        return Finding(
            "destination", "ok", f"none configured: results are kept in {settings.storage.results}"
        )
    details = []
    for target in targets:
        try:
            kind = type_for(target.url).type_name
        except ValueError as exc:
            return Finding(
                "destination",
                "fail",
                str(exc),
                "set DEEPCOVID_DESTINATION=AE@host:port or https://host/dicom-web",
            )
        if kind == "dimse":
            found = _check_dimse(target, settings)
        elif kind == "stowrs":
            found = _check_stowrs(target, settings)
        else:
            continue  # a RIS: check_ris
        if found.failed:
            return found
        details.append(found.detail)
    return Finding("destination", "ok", "; ".join(details) or "only RIS destinations")


def _check_stowrs(target: DestinationSettings, settings: Settings) -> Finding:
    """A DICOMweb destination answers a QIDO-RS study query (with its TLS and credentials)."""
    from worker.destinations.stowrs import StowRsDestination

    try:
        destination = StowRsDestination.parse(target, settings)
        destination.probe()
    except Exception as exc:  # any failure is the finding: connection, TLS, HTTP, a secret file
        return Finding(
            "destination",
            "fail",
            f"{target.url}: QIDO-RS failed: {type(exc).__name__}: {exc}"[:300],
            "check the URL, that the server runs with DICOMweb, its certificate against the "
            "destination's ca (or DEEPCOVID_TLS_CA) and the token or password file",
        )
    return Finding("destination", "ok", f"{target.url} answers QIDO-RS")


def _check_dimse(target: DestinationSettings, settings: Settings) -> Finding:
    """A DIMSE destination answers C-ECHO, over a verified TLS handshake when configured."""
    from common import tls
    from dicom_client.echo import echo, tls_handshake
    from dicom_client.scu import Destination

    try:
        destination = Destination.parse(target.url)
    except ValueError as exc:
        return Finding("destination", "fail", str(exc), "set DEEPCOVID_DESTINATION=AE@host:port")
    context = None
    use_tls = settings.delivery.destination_tls if target.tls is None else target.tls
    if use_tls:
        import ssl

        try:
            context = tls.client_context(
                cert=settings.tls.cert, key=settings.tls.key, ca=target.ca or settings.tls.ca
            )
        except (OSError, ssl.SSLError) as exc:
            return Finding(
                "destination",
                "fail",
                f"TLS context: {exc}",
                "check DEEPCOVID_TLS_CA, DEEPCOVID_TLS_CERT and DEEPCOVID_TLS_KEY",
            )
        handshake = tls_handshake(destination.host, destination.port, context)
        if not handshake.ok:
            return Finding(
                "destination",
                "fail",
                handshake.detail,
                "check the destination's certificate against DEEPCOVID_TLS_CA and its host name",
            )
    reply = echo(destination, calling_ae=settings.listener.ae_title, tls=context)
    if not reply.ok:
        return Finding(
            "destination",
            "fail",
            reply.detail,
            f"check DEEPCOVID_DESTINATION, that the PACS runs and that it knows AE "
            f"{settings.listener.ae_title} at this machine",
        )
    over = " over TLS" if context is not None else ""
    return Finding("destination", "ok", reply.detail + over)


def check_ris(settings: Settings) -> Finding | None:
    """Each RIS destination (HL7 over MLLP, FHIR) is reachable; None when none is configured."""
    from ris.errors import RisError
    from worker.destinations.base import open_destination, type_for
    from worker.destinations.fhir import FhirDestination
    from worker.destinations.hl7 import Hl7Destination

    texts = []
    for target in settings.delivery.targets():
        try:
            if type_for(target.url).type_name in {"hl7", "fhir"}:
                texts.append(target.url)
        except ValueError:
            continue  # not a destination type: the destination check says so
    if not texts:
        return None
    details, failed = [], []
    for text in texts:
        try:
            destination = open_destination(text, settings)
            assert isinstance(destination, Hl7Destination | FhirDestination)
            details.append(destination.probe())
        except (ValueError, OSError, RisError) as exc:
            failed.append(str(exc))
    if failed:
        return Finding(
            "ris",
            "fail",
            "; ".join(failed),
            "check that the RIS runs and listens there, its certificate against the "
            "destination's `ca` (or DEEPCOVID_TLS_CA) and its `token_file` (see docs/ris.md)",
        )
    return Finding("ris", "ok", "; ".join(details))


def check_dcmtk(which: Callable[[str], str | None] = shutil.which) -> Finding:
    """dcmtk's tools, for the README's storescu lines and the demo's SR rendering."""
    missing = [tool for tool in DCMTK_TOOLS if not which(tool)]
    if not missing:
        return Finding("dcmtk", "ok", f"{', '.join(DCMTK_TOOLS)} installed")
    return Finding(
        "dcmtk",
        "warn",
        f"{', '.join(missing)} not installed (the service does not need them; the demo's SR "
        "rendering and storescu/echoscu do)",
        "apt install dcmtk",
    )


def run_checks(settings: Settings) -> list[Finding]:
    """Every check, in the order a site meets them; a check that crashes is reported failed."""
    checks: list[Callable[[Settings], Finding | None]] = [
        check_dicom_port,
        check_monitoring_port,
        check_job_store,
        check_broker,
        check_model,
        check_view_check,
        check_spool,
        check_tls,
        check_destination,
        check_ris,
        lambda _settings: check_dcmtk(),
    ]
    findings = []
    for check in checks:
        try:
            finding = check(settings)
        except Exception as exc:  # one broken check must not hide the others
            name = getattr(check, "__name__", "check").removeprefix("check_").replace("_", " ")
            finding = Finding(name, "fail", f"the check itself failed: {type(exc).__name__}: {exc}")
        if finding is not None:
            findings.append(finding)
    return findings
