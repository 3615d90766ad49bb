"""One typed settings object for every service.

Values come, in order of precedence, from environment variables prefixed ``DEEPCOVID_``
(``DEEPCOVID_PORT=11113``), from a TOML file named by ``DEEPCOVID_CONFIG`` (keys are the field
names: ``port = 11113``; a ``DEEPCOVID_CONFIG`` that names no readable TOML file is an error, not a
silent fall-back to the defaults), and from the defaults below. The defaults are the *embedded*
setup: one machine, SQLite job store, a serverless durable broker, results kept in a local folder.

Every field carries a description; ``docs/configuration.md`` is generated from them
(``deepcovid config docs``) and a test checks the two never drift.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from common.errors import UsageError
from common.paths import SHIPPED_REGISTRY

DEFAULT_DATA_DIR = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / (
    "deepcovid-node"
)


class Settings(BaseSettings):
    """Configuration of the node, the worker and the command line."""

    model_config = SettingsConfigDict(env_prefix="DEEPCOVID_", extra="forbid")

    # --- storage -------------------------------------------------------------------------
    data_dir: Path = Field(
        DEFAULT_DATA_DIR,
        description="Folder for everything the service writes (spool, results, SQLite files, "
        "logs).",
    )
    spool_dir: Path | None = Field(
        None, description="Where received instances are written durably. Default: `data_dir/spool`."
    )
    results_dir: Path | None = Field(
        None,
        description="Where result objects are kept (always), one folder per study. "
        "Default: `data_dir/results`.",
    )
    log_dir: Path | None = Field(
        None, description="Folder for the application and audit logs. Default: `data_dir/logs`."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the job store, e.g. "
        "`postgresql+psycopg://user@db/deepcovid`. Default: SQLite file `data_dir/jobs.sqlite`.",
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker URL, e.g. `redis://redis:6379/0`. Default: a durable broker "
        "that needs no server, kombu's SQLAlchemy transport on `data_dir/broker.sqlite`.",
    )
    min_free_space_mb: int = Field(
        200,
        description="Free-space watermark of the spool's disk in MiB: below it, C-STORE answers "
        "0xA700 (out of resources) instead of accepting what it cannot keep.",
    )
    retention_days: int = Field(
        0,
        ge=0,
        description="Days after which the received instance and the result files of a "
        "delivered (or gate-rejected) job are removed; the job row and its timeline stay. "
        "Undelivered, failed and unfinished jobs are never purged. Checked hourly by the node; "
        "`deepcovid db purge` runs it on demand. 0: files are kept forever.",
    )

    # --- listener (SCP) --------------------------------------------------------------------
    ae_title: str = Field("DEEPCOVID", description="Called AE title the listener answers to.")
    bind_address: str = Field("0.0.0.0", description="Address the listener binds to.")
    port: int = Field(11112, description="TCP port of the DICOM listener.")
    allowed_calling_aes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Calling AE titles allowed to associate (comma-separated in the environment). "
        "Empty: any calling AE is accepted.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="IP addresses or networks (CIDR, e.g. `10.1.0.0/16`) allowed to associate "
        "(comma-separated in the environment). Empty: any host. Others are rejected and audited.",
    )
    max_associations: int = Field(10, description="Maximum number of concurrent associations.")
    max_pdu: int = Field(
        0, description="Maximum PDU length we receive, in bytes; 0 means unlimited (fastest)."
    )
    network_timeout_s: float = Field(60.0, description="DIMSE/ACSE/network timeout in seconds.")

    # --- DICOM TLS (listener and sender) -----------------------------------------------------
    tls_cert: Path | None = Field(
        None,
        description="PEM certificate (chain) of this node. Set: the listener accepts DICOM TLS "
        "only, and the sender presents it to destinations that ask for a client certificate.",
    )
    tls_key: Path | None = Field(
        None, description="PEM private key of `tls_cert` (omit when `tls_cert` holds the key)."
    )
    tls_ca: Path | None = Field(
        None,
        description="PEM CA certificate(s) trusted to sign peers' certificates: clients of the "
        "listener, and TLS destinations (default there: the system's CAs).",
    )
    tls_require_client_cert: bool | None = Field(
        None,
        description="Whether the listener refuses TLS clients without a certificate signed by "
        "`tls_ca`. Default: true when `tls_ca` is set.",
    )
    destination_tls: bool = Field(
        False,
        description="Deliver results to `destination` over DICOM TLS (verifying its certificate "
        "and host name against `tls_ca`; presenting `tls_cert` when set).",
    )

    # --- results destination (SCU) --------------------------------------------------------
    destination: str | None = Field(
        None,
        description="Where results are C-STOREd, as `AE@host:port` (e.g. `ORTHANC@pacs:4242`). "
        "Empty: results stay in `results_dir` only.",
    )
    parametric_map: Literal["always", "with_spacing", "never"] = Field(
        "with_spacing",
        description="When the Parametric Map (the raw heatmap as floats) is sent with the SR, SC "
        "and GSPS: `with_spacing` (the default): only for a source that states a positive "
        "Pixel Spacing or Imager Pixel Spacing (OHIF 3.13 can draw the map only then); "
        "`always`; `never`. Without the map the SR does not reference it; the SC and the "
        "GSPS show the evidence. See docs/result-objects.md.",
    )
    send_rejection_sr: bool = Field(
        False,
        description="Send a 'not analysed: reason' SR back for instances the input gate rejects.",
    )
    delivery_max_attempts: int = Field(
        12, description="Attempts to deliver a result before the job is marked failed."
    )
    delivery_backoff_s: float = Field(
        5.0, description="First retry delay in seconds; doubles on each attempt (capped at 10 min)."
    )
    delivery_verify: bool = Field(
        True,
        description="After C-STORE Success, confirm with C-FIND (IMAGE level) that the "
        "destination holds the objects, where it supports C-FIND.",
    )

    # --- model and inference ----------------------------------------------------------------
    model_registry_dir: Path = Field(
        SHIPPED_REGISTRY,
        description="Model registry folder (one sub-folder per version, `ACTIVE` names the "
        "active one). Default: the registry shipped with the package.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where inference runs: `auto` picks CUDA when available."
    )
    engine: Literal["auto", "eager", "onnx", "compile"] = Field(
        "auto", description="Inference engine; `auto` picks the fastest exact one per device."
    )
    torch_threads: int | None = Field(
        None, description="Threads PyTorch may use per worker process. Default: all cores."
    )
    occlusion_window: int = Field(32, description="Occluder size N in model-input pixels.")
    occlusion_stride: int = Field(8, description="Occluder stride S in model-input pixels.")
    occlusion_fill: Literal["zero", "mean", "gray"] = Field(
        "gray", description="Value the occluder paints: zero, image mean, or the normalised gray."
    )

    # --- worker -----------------------------------------------------------------------------
    worker_concurrency: int = Field(1, description="Celery worker processes started by `serve`.")
    analysis_lease_s: float = Field(
        120.0,
        description="A worker renews its claim on a job every quarter of this; a claim not "
        "renewed for this long belongs to a dead worker and the job is analysed again.",
    )
    reconcile_interval_s: float = Field(
        60.0,
        description="How often the node re-enqueues jobs the broker may have lost (waiting "
        "jobs older than 10 intervals, analyses whose lease expired).",
    )
    log_level: str = Field("INFO", description="Python logging level.")

    # --- audit trail (ATNA) ------------------------------------------------------------------
    audit_syslog_host: str | None = Field(
        None,
        description="Audit Record Repository (a syslog collector) that receives DICOM audit "
        "messages (PS3.15 A.5, IHE ATNA) of association decisions, received instances and "
        "delivered results. Empty: none are sent; the JSON audit log is written either way.",
    )
    audit_syslog_port: int | None = Field(
        None, description="Port of `audit_syslog_host`. Default: 514 (udp, tcp), 6514 (tls)."
    )
    audit_syslog_protocol: Literal["udp", "tcp", "tls"] = Field(
        "tls",
        description="Syslog transport: `udp` (RFC 5426), `tcp` (octet counting, RFC 6587) or "
        "`tls` (RFC 5425; the collector's certificate and host name are verified against "
        "`tls_ca`, or the system CAs; `tls_cert` is presented when set).",
    )

    # --- operations -------------------------------------------------------------------------
    monitoring_port: int = Field(
        8088,
        description="TCP port of the node's HTTP endpoints `/health/live`, `/health/ready` and "
        "`/metrics` (Prometheus); 0 turns them off.",
    )
    monitoring_bind: str = Field(
        "127.0.0.1",
        description="Address the health and metrics endpoints bind to (`0.0.0.0` in a "
        "container that Prometheus scrapes from outside).",
    )

    # --- operator console -------------------------------------------------------------------
    console_enabled: bool = Field(
        True,
        description="Serve the operator console (dashboard, jobs, models, settings; login "
        "required, users from `deepcovid users add`).",
    )
    console_port: int | None = Field(
        None,
        description="TCP port of the operator console. Default: `monitoring_port`, one server "
        "for the console, `/health` and `/metrics`.",
    )
    console_bind: str | None = Field(
        None, description="Address the operator console binds to. Default: `monitoring_bind`."
    )
    console_tls: bool = Field(
        False,
        description="Serve the console over HTTPS with the node's `tls_cert`/`tls_key` (session "
        "cookies then marked Secure). When the console shares `monitoring_port`, `/health` and "
        "`/metrics` are HTTPS too.",
    )
    console_session_idle_min: float = Field(
        30.0,
        description="A console session ends after this many minutes without a request (an "
        "open page polls, so it keeps its session).",
    )
    console_session_max_h: float = Field(
        12.0, description="A console session ends this many hours after its login, however active."
    )
    console_login_max_failures: int = Field(
        5,
        description="Failed console logins allowed per client address and per user name within "
        "`console_login_window_s`; further attempts are refused (HTTP 429) until the window "
        "has passed.",
    )
    console_login_window_s: float = Field(
        300.0, description="The window of `console_login_max_failures`, in seconds."
    )

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
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("DEEPCOVID_CONFIG")
        if config_file:
            sources.append(_toml_source(settings_cls, Path(config_file)))
        return tuple(sources)

    @field_validator("allowed_calling_aes", "allowed_hosts", mode="before")
    @classmethod
    def _split_aes(cls, value: Any) -> Any:
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

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
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
        if len(self.ae_title) > 16 or not self.ae_title.strip():
            raise ValueError("ae_title must be 1 to 16 characters")
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("tls_key is set but tls_cert is not")
        if self.console_tls and self.tls_cert is None:
            raise ValueError("console_tls needs tls_cert (and tls_key) for HTTPS")
        if self.tls_require_client_cert and self.tls_ca is None:
            raise ValueError("tls_require_client_cert needs tls_ca to verify client certificates")
        return self

    @property
    def client_cert_required(self) -> bool:
        """Whether the TLS listener requires a verified client certificate."""
        if self.tls_require_client_cert is None:
            return self.tls_ca is not None
        return self.tls_require_client_cert

    @property
    def console_address(self) -> tuple[str, int]:
        """Where the console listens (``monitoring_bind``/``monitoring_port`` by default)."""
        port = self.monitoring_port if self.console_port is None else self.console_port
        return (self.console_bind or self.monitoring_bind, port)

    # Typed accessors for the derived paths (never None after validation).
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
        for path in (self.data_dir, self.spool, self.results, self.log_dir):
            assert path is not None
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            if path.stat().st_uid == os.getuid():
                path.chmod(0o700)  # an existing folder too: it holds patient data


def _toml_source(settings_cls: type[BaseSettings], path: Path) -> PydanticBaseSettingsSource:
    """The TOML file named by ``DEEPCOVID_CONFIG``; a missing or unreadable file is an error
    (pydantic-settings would silently run on the defaults: a typo must not move the port or
    drop the destination)."""
    fix = "correct the path or unset DEEPCOVID_CONFIG"
    if not path.is_file():
        raise UsageError(f"DEEPCOVID_CONFIG names {path}, which is not a file", fix)
    try:
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"DEEPCOVID_CONFIG file {path} cannot be read: {exc}", fix) from exc


def settings_problem(exc: ValidationError) -> str:
    """One line naming each invalid setting, its environment variable and what is wrong.

    For the command line: pydantic's own text spans several lines per error and names neither
    the environment variable nor the file the value came from.
    """
    parts = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        loc = error.get("loc") or ()
        if not loc:  # a check across fields (model validator): the message names them
            parts.append(message)
            continue
        name = str(loc[0])
        if error.get("type") == "extra_forbidden":
            parts.append(f"unknown setting {name!r} (in the DEEPCOVID_CONFIG file)")
            continue
        parts.append(
            f"setting {name} = {error.get('input')!r} (DEEPCOVID_{name.upper()}): {message}"
        )
    return "; ".join(parts)


SETTINGS_FIX = (
    "fix the environment variable or the DEEPCOVID_CONFIG file "
    "(`deepcovid config docs` lists every setting)"
)


@lru_cache(maxsize=1)
def get_settings(**overrides: Any) -> Settings:
    """The process-wide settings (read once; tests call ``get_settings.cache_clear()``)."""
    return Settings(**overrides)
