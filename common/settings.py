"""One typed settings object for every service, grouped by concern.

``Settings`` holds one sub-model per concern -- ``storage``, ``listener``, ``tls``,
``delivery``, ``ris``, ``model``, ``worker``, ``audit``, ``monitoring``, ``console`` -- so a
reader sees which options belong together and a service can be handed the group it needs
(``settings.listener.port``).

Values come, in order of precedence, from environment variables, from a TOML file named by
``DEEPCOVID_CONFIG`` (a ``DEEPCOVID_CONFIG`` that names no readable TOML file is an error, not a
silent fall-back to the defaults), and from the defaults below. Each option has one *name*, the
field's name before settings were grouped: it is the environment variable ``DEEPCOVID_<NAME>``
(``DEEPCOVID_PORT=11113``) and a top-level TOML key (``port = 11113``); the TOML file may also use
the group tables (``[listener]`` then ``port = 11113``). Keyword arguments take either form too
(``Settings(port=11113)`` or ``Settings(listener={"port": 11113})``). The name is the field's name,
or the one given by :class:`Name` where the group's prefix is dropped inside the group
(``console_port`` is ``console.port``); :data:`OPTIONS` is the table of them all.

The defaults are the *embedded* setup: one machine, SQLite job store, a serverless durable broker,
results kept in a local folder. Every field carries a description; ``docs/configuration.md`` is
generated from them (``deepcovid config docs``) and a test checks the two never drift.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from common import tls
from common.errors import UsageError
from common.paths import SHIPPED_REGISTRY

DEFAULT_DATA_DIR = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / (
    "deepcovid-node"
)

ENV_PREFIX = "DEEPCOVID_"


@dataclass(frozen=True)
class Name:
    """A field's option name where it differs from the field's name (``console.port`` is
    ``console_port``): the ``DEEPCOVID_<NAME>`` variable and the top-level TOML key."""

    name: str


class _Group(BaseModel):
    """A group of settings: unknown keys are errors, so a typo cannot pass unnoticed."""

    model_config = ConfigDict(extra="forbid")


class StorageSettings(_Group):
    """Where the service keeps what it receives and writes, and how long."""

    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR,
        description="Folder for everything the service writes (spool, results, SQLite files, "
        "logs).",
    )
    spool_dir: Path | None = Field(
        default=None,
        description="Where received instances are written durably. Default: `data_dir/spool`.",
    )
    results_dir: Path | None = Field(
        default=None,
        description="Where result objects are kept (always), one folder per study. "
        "Default: `data_dir/results`.",
    )
    log_dir: Path | None = Field(
        default=None,
        description="Folder for the application and audit logs. Default: `data_dir/logs`.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the job store, e.g. "
        "`postgresql+psycopg://user@db/deepcovid`. Default: SQLite file `data_dir/jobs.sqlite`.",
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker URL, e.g. `redis://redis:6379/0`. Default: a durable broker "
        "that needs no server, kombu's SQLAlchemy transport on `data_dir/broker.sqlite`.",
    )
    min_free_space_mb: int = Field(
        default=200,
        description="Free-space watermark of the spool's disk in MiB: below it, C-STORE answers "
        "0xA700 (out of resources) instead of accepting what it cannot keep.",
    )
    retention_days: int = Field(
        default=0,
        ge=0,
        description="Days after which the received instance and the result files of a "
        "delivered (or gate-rejected) job are removed; the job row and its timeline stay. "
        "Undelivered, failed and unfinished jobs are never purged. Checked hourly by the node; "
        "`deepcovid db purge` runs it on demand. 0: files are kept forever.",
    )

    @model_validator(mode="after")
    def _derive_paths(self) -> StorageSettings:
        """Fill the paths that default to places under ``data_dir``."""
        self.data_dir = self.data_dir.expanduser()
        if self.spool_dir is None:
            self.spool_dir = self.data_dir / "spool"
        if self.results_dir is None:
            self.results_dir = self.data_dir / "results"
        if self.log_dir is None:
            self.log_dir = self.data_dir / "logs"
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'jobs.sqlite'}"
        if self.broker_url is None:
            self.broker_url = f"sqla+sqlite:///{self.data_dir / 'broker.sqlite'}"
        return self

    # Typed accessors for the derived values (never None after validation).
    @property
    def spool(self) -> Path:
        """The spool folder."""
        assert self.spool_dir is not None
        return self.spool_dir

    @property
    def results(self) -> Path:
        """The results folder."""
        assert self.results_dir is not None
        return self.results_dir

    @property
    def logs(self) -> Path:
        """The log folder."""
        assert self.log_dir is not None
        return self.log_dir

    @property
    def db_url(self) -> str:
        """The job store URL."""
        assert self.database_url is not None
        return self.database_url

    @property
    def broker(self) -> str:
        """The broker URL."""
        assert self.broker_url is not None
        return self.broker_url

    def ensure_dirs(self) -> None:
        """Create the folders the services write to, readable by the owner only."""
        for path in (self.data_dir, self.spool, self.results, self.logs):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            if path.stat().st_uid == os.getuid():
                path.chmod(0o700)  # an existing folder too: it holds patient data


class ListenerSettings(_Group):
    """The DICOM listener (SCP): who it answers to and how much it takes on."""

    ae_title: str = Field(
        default="DEEPCOVID", description="Called AE title the listener answers to."
    )
    bind_address: str = Field(default="0.0.0.0", description="Address the listener binds to.")
    port: int = Field(default=11112, description="TCP port of the DICOM listener.")
    allowed_calling_aes: list[str] = Field(
        default_factory=list,
        description="Calling AE titles allowed to associate (comma-separated in the environment). "
        "Empty: any calling AE is accepted.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="IP addresses or networks (CIDR, e.g. `10.1.0.0/16`) allowed to associate "
        "(comma-separated in the environment). Empty: any host. Others are rejected and audited.",
    )
    max_associations: int = Field(
        default=10, description="Maximum number of concurrent associations."
    )
    max_pdu: int = Field(
        default=0,
        description="Maximum PDU length we receive, in bytes; 0 means unlimited (fastest).",
    )
    network_timeout_s: float = Field(
        default=60.0, description="DIMSE/ACSE/network timeout in seconds."
    )

    @field_validator("allowed_calling_aes", "allowed_hosts", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        """Accept ``"PACS1,PACS2"`` from the environment as well as a TOML list."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        """Every entry must be an IP address or network, so a typo cannot open the listener."""
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                message = f"allowed_hosts: {entry!r} is not an IP address or network"
                raise ValueError(message) from exc
        return value

    @field_validator("ae_title")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        """An AE title is 1 to 16 characters (PS3.5 AE value representation)."""
        if len(value) > 16 or not value.strip():
            raise ValueError("ae_title must be 1 to 16 characters")
        return value


class TlsSettings(_Group):
    """This node's certificate and the CAs it trusts: DICOM TLS of the listener and the sender,
    the audit syslog over TLS, the console over HTTPS."""

    cert: Annotated[Path | None, Name("tls_cert")] = Field(
        default=None,
        description="PEM certificate (chain) of this node. Set: the listener accepts DICOM TLS "
        "only, and the sender presents it to destinations that ask for a client certificate.",
    )
    key: Annotated[Path | None, Name("tls_key")] = Field(
        default=None,
        description="PEM private key of `tls.cert` (omit when `tls.cert` holds the key).",
    )
    ca: Annotated[Path | None, Name("tls_ca")] = Field(
        default=None,
        description="PEM CA certificate(s) trusted to sign peers' certificates: clients of the "
        "listener, and TLS destinations (default there: the system's CAs).",
    )
    require_client_cert: Annotated[bool | None, Name("tls_require_client_cert")] = Field(
        default=None,
        description="Whether the listener refuses TLS clients without a certificate signed by "
        "`tls.ca`. Default: true when `tls.ca` is set.",
    )

    @model_validator(mode="after")
    def _check_pairs(self) -> TlsSettings:
        """A key needs its certificate; requiring client certificates needs a CA to check them."""
        if self.key is not None and self.cert is None:
            raise ValueError("tls_key is set but tls_cert is not")
        if self.require_client_cert and self.ca is None:
            raise ValueError("tls_require_client_cert needs tls_ca to verify client certificates")
        return self

    @property
    def client_cert_required(self) -> bool:
        """Whether the TLS listener requires a verified client certificate."""
        if self.require_client_cert is None:
            return self.ca is not None
        return self.require_client_cert

    def server_context(self) -> ssl.SSLContext | None:
        """The listener's context (:func:`common.tls.server_context`); ``None`` without ``cert``
        (plain TCP)."""
        if self.cert is None:
            return None
        return tls.server_context(
            cert=self.cert, key=self.key, ca=self.ca, require_client_cert=self.client_cert_required
        )

    def client_context(self) -> ssl.SSLContext:
        """A context for connecting to a peer (:func:`common.tls.client_context`): verify it
        against ``ca`` (or the system's CAs), present ``cert`` when set."""
        return tls.client_context(cert=self.cert, key=self.key, ca=self.ca)


class DestinationSettings(_Group):
    """One destination of ``delivery.destinations`` with its own TLS and credentials."""

    url: str = Field(
        description="The destination's text, which also picks its type: `AE@host:port` (DIMSE "
        "C-STORE), `https://host/dicom-web` (DICOMweb STOW-RS), `mllp://host:port` (HL7), "
        "`fhir+https://host/fhir` (FHIR)."
    )
    tls: bool | None = Field(
        default=None,
        description="DIMSE only: DICOM TLS, verifying the peer against `ca` (default: "
        "`delivery.destination_tls`). HTTP types use TLS as their URL's scheme says.",
    )
    ca: Path | None = Field(
        default=None,
        description="PEM CA certificate(s) this destination's certificate must chain to "
        "(default: `tls.ca`, else the system's CAs). Certificates are always verified.",
    )
    token_file: Path | None = Field(
        default=None,
        description="File holding a bearer token sent to this (HTTP) destination; read at each "
        "send, never logged.",
    )
    username: str | None = Field(
        default=None, description="HTTP basic-auth user name (with `password_file`)."
    )
    password_file: Path | None = Field(
        default=None, description="File holding the HTTP basic-auth password; never logged."
    )

    @model_validator(mode="after")
    def _check_auth(self) -> DestinationSettings:
        """A bearer token or a user with a password file, not both halves of each."""
        if (self.username is None) != (self.password_file is None):
            raise ValueError(f"destination {self.url}: username and password_file go together")
        if self.token_file is not None and self.username is not None:
            raise ValueError(f"destination {self.url}: a token_file or a username, not both")
        return self


class DeliverySettings(_Group):
    """Where results go and how hard the node tries to get them there."""

    destination: str | None = Field(
        default=None,
        description="Where results are delivered: `AE@host:port` (C-STORE, e.g. "
        "`ORTHANC@pacs:4242`) or a DICOMweb base URL `https://host/dicom-web` (STOW-RS); "
        "several, comma-separated, are each sent every result once. Destinations that need "
        "credentials or their own CA go in `delivery.destinations`. Empty (and no "
        "`destinations`): results stay in `storage.results_dir` only.",
    )
    destinations: list[DestinationSettings] = Field(
        default_factory=list,
        description="More destinations, each with its own options (TOML: "
        "`[[delivery.destinations]]` tables with `url`, `tls`, `ca`, `token_file`, `username`, "
        "`password_file`). Each result goes to every destination once, with its own retries.",
    )
    destination_tls: bool = Field(
        default=False,
        description="Deliver results to `destination` over DICOM TLS (verifying its certificate "
        "and host name against `tls.ca`; presenting `tls.cert` when set).",
    )
    parametric_map: Literal["always", "with_spacing", "never"] = Field(
        default="with_spacing",
        description="When the Parametric Map (the raw heatmap as floats) is sent with the SR, SC "
        "and GSPS: `with_spacing` (the default): only for a source that states a positive "
        "Pixel Spacing or Imager Pixel Spacing (OHIF 3.13 can draw the map only then); "
        "`always`; `never`. Without the map the SR does not reference it; the SC and the "
        "GSPS show the evidence. See docs/result-objects.md.",
    )
    send_rejection_sr: bool = Field(
        default=False,
        description="Send a 'not analysed: reason' SR back for instances the input gate rejects.",
    )
    max_attempts: Annotated[int, Name("delivery_max_attempts")] = Field(
        default=12, description="Attempts to deliver a result before the job is marked failed."
    )
    backoff_s: Annotated[float, Name("delivery_backoff_s")] = Field(
        default=5.0,
        description="First retry delay in seconds; doubles on each attempt (capped at 10 min).",
    )
    verify: Annotated[bool, Name("delivery_verify")] = Field(
        default=True,
        description="After C-STORE Success, confirm with C-FIND (IMAGE level) that the "
        "destination holds the objects, where it supports C-FIND (STOW-RS: with QIDO-RS).",
    )

    @field_validator("destinations", mode="before")
    @classmethod
    def _urls_from_text(cls, value: Any) -> Any:
        """Accept ``"AE@h:1,https://x/dicom-web"`` from the environment as a list of URLs."""
        if isinstance(value, str):
            return [{"url": part.strip()} for part in value.split(",") if part.strip()]
        return value

    def targets(self) -> list[DestinationSettings]:
        """Every destination, each once (by its text; `destinations`' options win)."""
        found: dict[str, DestinationSettings] = {}
        for text in (self.destination or "").split(","):
            if text.strip():
                url = text.strip()
                found.setdefault(url, DestinationSettings(url=url, tls=self.destination_tls))
        for target in self.destinations:
            found[target.url] = target
        return list(found.values())


class RisSettings(_Group):
    """How study results are told to a RIS (HL7 v2 ORU^R01 over MLLP, FHIR R4 DiagnosticReport).

    The RIS itself is a destination (`mllp://host:port` or `fhir+https://host/base` in
    `delivery.destination` / `delivery.destinations`); these options shape the messages."""

    sending_facility: Annotated[str, Name("ris_sending_facility")] = Field(
        default="", description="HL7 MSH-4 Sending Facility (e.g. the hospital's code)."
    )
    receiving_application: Annotated[str, Name("ris_receiving_application")] = Field(
        default="", description="HL7 MSH-5 Receiving Application (the RIS's name, if it checks)."
    )
    receiving_facility: Annotated[str, Name("ris_receiving_facility")] = Field(
        default="", description="HL7 MSH-6 Receiving Facility."
    )
    patient_id_issuer: Annotated[str, Name("ris_patient_id_issuer")] = Field(
        default="",
        description="HL7 PID-3.4 Assigning Authority of the Patient ID (the DICOM Issuer of "
        "Patient ID the RIS expects); empty: none sent.",
    )
    patient_id_system: Annotated[str | None, Name("ris_patient_id_system")] = Field(
        default=None,
        description="FHIR `Patient.identifier.system` URI of the Patient ID (e.g. "
        "`urn:oid:1.2.3.4`); empty: the Patient is matched by the identifier's value alone.",
    )
    timeout_s: Annotated[float, Name("ris_timeout_s")] = Field(
        default=30.0,
        gt=0,
        description="Seconds to wait for a RIS to connect and answer (MLLP ACK, HTTP response) "
        "before the attempt counts as failed and is retried with the delivery back-off.",
    )


class ModelSettings(_Group):
    """Which model analyses the images, where, and how its evidence map is drawn."""

    registry_dir: Annotated[Path, Name("model_registry_dir")] = Field(
        default=SHIPPED_REGISTRY,
        description="Model registry folder (one sub-folder per version, `ACTIVE` names the "
        "active one). Default: the registry shipped with the package.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where inference runs: `auto` picks CUDA when available."
    )
    engine: Literal["auto", "eager", "onnx", "compile"] = Field(
        default="auto",
        description="Inference engine; `auto` picks the fastest exact one per device.",
    )
    threshold_policy: Literal["paper", "clinical"] = Field(
        default="clinical",
        description="Which of the model card's operating points calls an image COVID-19: "
        "`clinical` (default), the highest specificity with sensitivity >= 90 %; `paper`, the "
        "highest threshold with sensitivity >= 98 % (the paper's point: on the shipped card's "
        "out-of-fold choice it flags most normal films). A card without that point uses its "
        "single threshold. The results state the point used.",
    )
    torch_threads: int | None = Field(
        default=None, description="Threads PyTorch may use per worker process. Default: all cores."
    )
    occlusion_window: int = Field(default=32, description="Occluder size N in model-input pixels.")
    occlusion_stride: int = Field(default=8, description="Occluder stride S in model-input pixels.")
    occlusion_fill: Literal["zero", "mean", "gray"] = Field(
        default="gray",
        description="Value the occluder paints: zero, image mean, or the normalised gray.",
    )
    heatmap_members: int = Field(
        default=0,
        ge=0,
        description="For an ensemble model: draw the heatmap with its first N members only "
        "(0: all). The map is then the occlusion map of those members' mean probability, and "
        "the SR's algorithm parameters say how many members it used (`heatmap_members`). "
        "Each member's map costs about as much as a single model's (see docs/models.md).",
    )
    view_check: bool = Field(
        default=True,
        description="Check from the pixels, before the classifier, that the image is a frontal "
        "chest radiograph (not a lateral, a CT slice or localiser, another body part). Where "
        "the header's View Position is missing or disagrees, the pixels decide: the job is "
        "rejected with `lateral view (from the image)` or `not a chest radiograph (from the "
        "image)`, or analysed with a note on its timeline. Off: the header gate alone decides.",
    )


class WorkerSettings(_Group):
    """The analysis workers and how the node keeps their jobs moving."""

    concurrency: Annotated[int, Name("worker_concurrency")] = Field(
        default=1, description="Celery worker processes started by `serve`."
    )
    analysis_lease_s: float = Field(
        default=120.0,
        description="A worker renews its claim on a job every quarter of this; a claim not "
        "renewed for this long belongs to a dead worker and the job is analysed again.",
    )
    reconcile_interval_s: float = Field(
        default=60.0,
        description="How often the node re-enqueues jobs the broker may have lost (waiting "
        "jobs older than 10 intervals, analyses whose lease expired).",
    )
    study_settle_s: float = Field(
        default=30.0,
        gt=0,
        description="A study is answered as a whole once it has been quiet this long: every "
        "job of its Study Instance UID done and none changed for `study_settle_s` seconds. The "
        "node then sends one study-level SR and a Key Object Selection (and the RIS "
        "notifications); an image arriving later makes a replacing result. Longer waits for "
        "slow senders; shorter answers sooner (see docs/operations.md).",
    )
    broker_poll_s: float = Field(
        default=1.0,
        gt=0,
        description="How often a worker looks for tasks in the embedded broker "
        "(`sqla+sqlite:///`) when nothing wakes it: a publisher wakes the workers of the broker "
        "file through Unix sockets in `broker.wake/` beside it, so this only bounds the wait "
        "for a lost wake-up (data folder that cannot hold sockets). Other brokers: no effect.",
    )


class AuditSettings(_Group):
    """The audit trail sent to an Audit Record Repository (IHE ATNA)."""

    syslog_host: Annotated[str | None, Name("audit_syslog_host")] = Field(
        default=None,
        description="Audit Record Repository (a syslog collector) that receives DICOM audit "
        "messages (PS3.15 A.5, IHE ATNA) of association decisions, received instances and "
        "delivered results. Empty: none are sent; the JSON audit log is written either way.",
    )
    syslog_port: Annotated[int | None, Name("audit_syslog_port")] = Field(
        default=None,
        description="Port of `audit.syslog_host`. Default: 514 (udp, tcp), 6514 (tls).",
    )
    syslog_protocol: Annotated[Literal["udp", "tcp", "tls"], Name("audit_syslog_protocol")] = Field(
        default="tls",
        description="Syslog transport: `udp` (RFC 5426), `tcp` (octet counting, RFC 6587) or "
        "`tls` (RFC 5425; the collector's certificate and host name are verified against "
        "`tls.ca`, or the system CAs; `tls.cert` is presented when set).",
    )


class MonitoringSettings(_Group):
    """What an operator watches: health and metrics endpoints, and the log's level."""

    port: Annotated[int, Name("monitoring_port")] = Field(
        default=8088,
        description="TCP port of the node's HTTP endpoints `/health/live`, `/health/ready` and "
        "`/metrics` (Prometheus); 0 turns them off.",
    )
    bind: Annotated[str, Name("monitoring_bind")] = Field(
        default="127.0.0.1",
        description="Address the health and metrics endpoints bind to (`0.0.0.0` in a "
        "container that Prometheus scrapes from outside).",
    )
    log_level: str = Field(default="INFO", description="Python logging level.")


class ConsoleSettings(_Group):
    """The operator console: where it is served and how its sessions and logins are limited."""

    enabled: Annotated[bool, Name("console_enabled")] = Field(
        default=True,
        description="Serve the operator console (dashboard, jobs, models, settings; login "
        "required, users from `deepcovid users add`).",
    )
    port: Annotated[int | None, Name("console_port")] = Field(
        default=None,
        description="TCP port of the operator console. Default: `monitoring.port`, one server "
        "for the console, `/health` and `/metrics`.",
    )
    bind: Annotated[str | None, Name("console_bind")] = Field(
        default=None,
        description="Address the operator console binds to. Default: `monitoring.bind`.",
    )
    tls: Annotated[bool, Name("console_tls")] = Field(
        default=False,
        description="Serve the console over HTTPS with the node's `tls.cert`/`tls.key` (session "
        "cookies then marked Secure). When the console shares `monitoring.port`, `/health` and "
        "`/metrics` are HTTPS too.",
    )
    session_idle_min: Annotated[float, Name("console_session_idle_min")] = Field(
        default=30.0,
        description="A console session ends after this many minutes without a request (an "
        "open page polls, so it keeps its session).",
    )
    session_max_h: Annotated[float, Name("console_session_max_h")] = Field(
        default=12.0,
        description="A console session ends this many hours after its login, however active.",
    )
    login_max_failures: Annotated[int, Name("console_login_max_failures")] = Field(
        default=5,
        description="Failed console logins allowed per client address and per user name within "
        "`console.login_window_s`; further attempts are refused (HTTP 429) until the window "
        "has passed.",
    )
    login_window_s: Annotated[float, Name("console_login_window_s")] = Field(
        default=300.0, description="The window of `console.login_max_failures`, in seconds."
    )
    dicomweb: Annotated[bool, Name("console_dicomweb")] = Field(
        default=True,
        description="Take studies by DICOMweb STOW-RS at `POST /dicom-web/studies` on the "
        "console's server (HTTPS with `console.tls`); senders need a bearer token from "
        "`deepcovid tokens add NAME`. The same checks and durable spool as C-STORE.",
    )
    dicomweb_max_mb: Annotated[int, Name("console_dicomweb_max_mb")] = Field(
        default=512,
        ge=1,
        description="Largest STOW-RS request body in MiB; a larger one is refused whole (HTTP "
        "413) before anything is stored. The body is held in memory while it is checked.",
    )


class Settings(BaseSettings):
    """Configuration of the node, the worker and the command line, one group per concern."""

    model_config = SettingsConfigDict(extra="forbid")

    storage: StorageSettings = Field(
        default_factory=StorageSettings,
        description="Storage: folders, job store and broker.",
    )
    listener: ListenerSettings = Field(
        default_factory=ListenerSettings, description="The DICOM listener (SCP)."
    )
    tls: TlsSettings = Field(
        default_factory=TlsSettings,
        description="Certificates: DICOM TLS, syslog TLS, HTTPS.",
    )
    delivery: DeliverySettings = Field(
        default_factory=DeliverySettings, description="Results destination (SCU)."
    )
    ris: RisSettings = Field(
        default_factory=RisSettings, description="RIS notification (HL7 v2, FHIR)."
    )
    model: ModelSettings = Field(default_factory=ModelSettings, description="Model and inference.")
    worker: WorkerSettings = Field(default_factory=WorkerSettings, description="Workers.")
    audit: AuditSettings = Field(default_factory=AuditSettings, description="Audit trail (ATNA).")
    monitoring: MonitoringSettings = Field(
        default_factory=MonitoringSettings, description="Health, metrics and logging."
    )
    console: ConsoleSettings = Field(
        default_factory=ConsoleSettings, description="Operator console."
    )

    def __init__(self, **values: Any) -> None:
        """Settings from keyword arguments (option names or groups), environment, TOML file."""
        super().__init__(**_nest(values, origin="keyword arguments"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment beats the TOML file named by ``DEEPCOVID_CONFIG``, which beats defaults."""
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            _GroupedSource(settings_cls, _environment()),
        ]
        config_file = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if config_file:
            sources.append(_GroupedSource(settings_cls, _toml_file(Path(config_file))))
        return tuple(sources)

    @model_validator(mode="after")
    def _check_across_groups(self) -> Settings:
        """Checks that need two groups: the console's HTTPS needs the node's certificate."""
        if self.console.tls and self.tls.cert is None:
            raise ValueError("console_tls needs tls_cert (and tls_key) for HTTPS")
        return self

    @property
    def console_address(self) -> tuple[str, int]:
        """Where the console listens (``monitoring.bind``/``monitoring.port`` by default)."""
        port = self.monitoring.port if self.console.port is None else self.console.port
        return (self.console.bind or self.monitoring.bind, port)

    def values(self) -> dict[str, Any]:
        """Option name -> effective value, in the order of :data:`OPTIONS` (``config show``)."""
        return {name: self.value(name) for name in OPTIONS}

    def value(self, name: str) -> Any:
        """The effective value of the option ``name`` (``"port"``, ``"tls_cert"``)."""
        option = OPTIONS[name]
        return getattr(getattr(self, option.group), option.field)


@dataclass(frozen=True)
class Option:
    """One setting: its name (environment variable, top-level TOML key) and where it lives."""

    name: str
    group: str
    field: str
    info: FieldInfo

    @property
    def env(self) -> str:
        """The environment variable, e.g. ``DEEPCOVID_TLS_CERT``."""
        return f"{ENV_PREFIX}{self.name.upper()}"

    @property
    def key(self) -> str:
        """The grouped TOML key and attribute path, e.g. ``tls.cert``."""
        return f"{self.group}.{self.field}"


def _options() -> dict[str, Option]:
    """Every option, read off the groups' fields (their :class:`Name` or the field's name)."""
    options: dict[str, Option] = {}
    for group, group_info in Settings.model_fields.items():
        model = group_info.annotation
        assert isinstance(model, type) and issubclass(model, _Group)
        for field, info in model.model_fields.items():
            name = next((m.name for m in info.metadata if isinstance(m, Name)), field)
            assert name not in options and name not in Settings.model_fields, name
            options[name] = Option(name, group, field, info)
    return options


#: Option name -> (group, field), for every setting; the one table of names.
OPTIONS: Mapping[str, Option] = _options()
_BY_PLACE = {(option.group, option.field): option for option in OPTIONS.values()}


def _nest(values: Mapping[str, Any], *, origin: str) -> dict[str, Any]:
    """``values`` with each option name moved into its group (``port`` -> ``listener.port``).

    Group tables (``listener = {...}``, or a group's model) are taken as they are; a value given
    both ways is an error. Other keys are left for validation to refuse.
    """
    nested: dict[str, Any] = {}
    flat: list[tuple[str, Option, Any]] = []
    for key, value in values.items():
        if key in Settings.model_fields:
            if isinstance(value, BaseModel):
                value = value.model_dump(exclude_unset=True)
            nested[key] = dict(value) if isinstance(value, Mapping) else value
        elif key in OPTIONS:
            flat.append((key, OPTIONS[key], value))
        else:
            nested[key] = value
    for key, option, value in flat:
        group = nested.setdefault(option.group, {})
        if not isinstance(group, dict):
            raise UsageError(f"{origin}: {key} given beside a whole [{option.group}]", _FIX)
        if option.field in group:
            raise UsageError(f"{origin}: {key} given twice, as {key} and in [{option.group}]", _FIX)
        group[option.field] = value
    return nested


class _GroupedSource(PydanticBaseSettingsSource):
    """A settings source whose values are read up front, option names moved into groups."""

    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: :meth:`__call__` hands over all values at once."""
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._values


def _environment() -> dict[str, Any]:
    """The ``DEEPCOVID_<NAME>`` variables that name an option (any case), grouped."""
    found: dict[str, Any] = {}
    for variable, value in os.environ.items():
        name = variable.lower().removeprefix(ENV_PREFIX.lower())
        if len(name) < len(variable) and name in OPTIONS:
            found[name] = value
    return _nest(found, origin="environment")


def _toml_file(path: Path) -> dict[str, Any]:
    """The TOML file named by ``DEEPCOVID_CONFIG``, grouped; a missing or unreadable file is an
    error (running on the defaults instead could move the port or drop the destination)."""
    fix = "correct the path or unset DEEPCOVID_CONFIG"
    if not path.is_file():
        raise UsageError(f"DEEPCOVID_CONFIG names {path}, which is not a file", fix)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"DEEPCOVID_CONFIG file {path} cannot be read: {exc}", fix) from exc
    return _nest(data, origin=f"DEEPCOVID_CONFIG file {path}")


def settings_problem(exc: ValidationError) -> str:
    """One line naming each invalid setting, its environment variable and what is wrong.

    For the command line: pydantic's own text spans several lines per error and names neither
    the environment variable nor the file the value came from.
    """
    parts = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        loc = tuple(str(part) for part in error.get("loc") or ())
        if error.get("type") == "extra_forbidden":
            parts.append(f"unknown setting {'.'.join(loc)!r} (in the DEEPCOVID_CONFIG file)")
            continue
        option = _BY_PLACE.get((loc[0], loc[1])) if len(loc) >= 2 else None
        if option is None:  # a check across fields (model validator): the message names them
            parts.append(message)
            continue
        parts.append(f"setting {option.name} = {error.get('input')!r} ({option.env}): {message}")
    return "; ".join(parts)


_FIX = SETTINGS_FIX = (
    "fix the environment variable or the DEEPCOVID_CONFIG file "
    "(`deepcovid config docs` lists every setting)"
)


@lru_cache(maxsize=1)
def get_settings(**overrides: Any) -> Settings:
    """The process-wide settings (read once; tests call ``get_settings.cache_clear()``)."""
    return Settings(**overrides)
