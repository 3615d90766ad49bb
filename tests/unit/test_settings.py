"""Settings: sources, groups and the option names that predate them, derived paths, validation,
and the documentation generated from them."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from common.errors import UsageError
from common.settings import OPTIONS, DestinationSettings, Settings, settings_problem
from deepcovid.commands.config import configuration_markdown

REPO = Path(__file__).resolve().parents[2]

#: Every option name the settings had before they were grouped, and where it lives now. Written
#: out (not read off OPTIONS) so that renaming a field cannot quietly drop a name in use.
OLD_NAMES = {
    "data_dir": "storage.data_dir",
    "spool_dir": "storage.spool_dir",
    "results_dir": "storage.results_dir",
    "log_dir": "storage.log_dir",
    "database_url": "storage.database_url",
    "broker_url": "storage.broker_url",
    "min_free_space_mb": "storage.min_free_space_mb",
    "retention_days": "storage.retention_days",
    "ae_title": "listener.ae_title",
    "bind_address": "listener.bind_address",
    "port": "listener.port",
    "allowed_calling_aes": "listener.allowed_calling_aes",
    "allowed_hosts": "listener.allowed_hosts",
    "max_associations": "listener.max_associations",
    "max_pdu": "listener.max_pdu",
    "network_timeout_s": "listener.network_timeout_s",
    "tls_cert": "tls.cert",
    "tls_key": "tls.key",
    "tls_ca": "tls.ca",
    "tls_require_client_cert": "tls.require_client_cert",
    "destination_tls": "delivery.destination_tls",
    "destination": "delivery.destination",
    "destinations": "delivery.destinations",
    "parametric_map": "delivery.parametric_map",
    "send_rejection_sr": "delivery.send_rejection_sr",
    "delivery_max_attempts": "delivery.max_attempts",
    "delivery_backoff_s": "delivery.backoff_s",
    "delivery_verify": "delivery.verify",
    "model_registry_dir": "model.registry_dir",
    "device": "model.device",
    "engine": "model.engine",
    "torch_threads": "model.torch_threads",
    "occlusion_window": "model.occlusion_window",
    "occlusion_stride": "model.occlusion_stride",
    "occlusion_fill": "model.occlusion_fill",
    "heatmap_members": "model.heatmap_members",
    "view_check": "model.view_check",
    "threshold_policy": "model.threshold_policy",
    "worker_concurrency": "worker.concurrency",
    "analysis_lease_s": "worker.analysis_lease_s",
    "reconcile_interval_s": "worker.reconcile_interval_s",
    "broker_poll_s": "worker.broker_poll_s",
    "study_settle_s": "worker.study_settle_s",
    "log_level": "monitoring.log_level",
    "audit_syslog_host": "audit.syslog_host",
    "audit_syslog_port": "audit.syslog_port",
    "audit_syslog_protocol": "audit.syslog_protocol",
    "monitoring_port": "monitoring.port",
    "monitoring_bind": "monitoring.bind",
    "console_enabled": "console.enabled",
    "console_port": "console.port",
    "console_bind": "console.bind",
    "console_tls": "console.tls",
    "console_session_idle_min": "console.session_idle_min",
    "console_session_max_h": "console.session_max_h",
    "console_login_max_failures": "console.login_max_failures",
    "console_login_window_s": "console.login_window_s",
    "console_dicomweb": "console.dicomweb",
    "console_dicomweb_max_mb": "console.dicomweb_max_mb",
    "ris_sending_facility": "ris.sending_facility",
    "ris_receiving_application": "ris.receiving_application",
    "ris_receiving_facility": "ris.receiving_facility",
    "ris_patient_id_issuer": "ris.patient_id_issuer",
    "ris_patient_id_system": "ris.patient_id_system",
    "ris_timeout_s": "ris.timeout_s",
}


def _sample(name: str, tmp_path: Path) -> tuple[str, Any]:
    """A value unlike the default for the option ``name``: (as the environment writes it, as
    the field holds it)."""
    option = OPTIONS[name]
    if name in ("tls_cert", "tls_key", "tls_ca"):  # consistent with each other, see below
        path = tmp_path / f"{name}.pem"
        return str(path), path
    kind = option.info.annotation
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None: X
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    base = kind
    if typing.get_origin(base) is typing.Literal:
        value = next(v for v in typing.get_args(base) if v != option.info.default)
        return str(value), value
    if base is bool:
        return ("false", False) if option.info.default else ("true", True)
    if base is int:
        return "7", 7
    if base is float:
        return "7.5", 7.5
    if base is Path:
        return str(tmp_path / name), tmp_path / name
    if base == list[str]:
        return "10.0.0.1, 10.0.0.2", ["10.0.0.1", "10.0.0.2"]
    if name == "destination":
        return "PACS@pacs:104", "PACS@pacs:104"
    if name == "destinations":  # the environment's form: URLs, comma-separated
        urls = ["PACS@pacs:104", "https://pacs/dicom-web"]
        return ",".join(urls), [DestinationSettings(url=url) for url in urls]
    if name.endswith("_url"):
        return f"sqlite:///{tmp_path / name}", f"sqlite:///{tmp_path / name}"
    return "VALUE", "VALUE"


def _companions(name: str, tmp_path: Path) -> dict[str, Any]:
    """Other options an option needs to be valid (a key needs its certificate, ...)."""
    cert = str(tmp_path / "tls_cert.pem")
    return {
        "tls_key": {"tls_cert": cert},
        "tls_require_client_cert": {"tls_ca": str(tmp_path / "tls_ca.pem")},
        "console_tls": {"tls_cert": cert},
    }.get(name, {})


def _field(settings: Settings, place: str) -> Any:
    group, field = place.split(".")
    return getattr(getattr(settings, group), field)


def test_every_option_has_a_name_the_test_knows() -> None:
    assert set(OPTIONS) == set(OLD_NAMES)
    assert {name: option.key for name, option in OPTIONS.items()} == OLD_NAMES


@pytest.mark.parametrize("name", sorted(OLD_NAMES))
def test_each_old_environment_variable_loads_into_its_field(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, value = _sample(name, tmp_path)
    for other, other_value in _companions(name, tmp_path).items():
        monkeypatch.setenv(f"DEEPCOVID_{other.upper()}", other_value)
    monkeypatch.setenv(f"DEEPCOVID_{name.upper()}", text)
    settings = Settings()
    assert _field(settings, OLD_NAMES[name]) == value


@pytest.mark.parametrize("name", sorted(OLD_NAMES))
def test_each_old_toml_key_loads_into_its_field(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, value = _sample(name, tmp_path)
    values = {name: value, **_companions(name, tmp_path)}
    config = tmp_path / "deepcovid.toml"
    config.write_text("".join(f"{key} = {_toml(v)}\n" for key, v in values.items()))
    monkeypatch.setenv("DEEPCOVID_CONFIG", str(config))
    assert _field(Settings(), OLD_NAMES[name]) == value


@pytest.mark.parametrize("name", sorted(OLD_NAMES))
def test_each_old_keyword_argument_sets_its_field(name: str, tmp_path: Path) -> None:
    _, value = _sample(name, tmp_path)
    settings = Settings(**{name: value, **_companions(name, tmp_path)})
    assert _field(settings, OLD_NAMES[name]) == value


def _toml(value: Any) -> str:
    if isinstance(value, DestinationSettings):  # an inline table
        fields = value.model_dump(exclude_none=True).items()
        return "{" + ", ".join(f"{key} = {_toml(v)}" for key, v in fields) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value) + '"'


def test_group_tables_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "deepcovid.toml"
    config.write_text(
        '[listener]\nport = 4000\nae_title = "GROUPED"\n'
        '[delivery]\nmax_attempts = 3\ndestination = "PACS@pacs:104"\n'
        "[console]\nlogin_window_s = 60.0\n"
    )
    monkeypatch.setenv("DEEPCOVID_CONFIG", str(config))
    s = Settings(data_dir=tmp_path)
    assert (s.listener.port, s.listener.ae_title) == (4000, "GROUPED")
    assert (s.delivery.max_attempts, s.delivery.destination) == (3, "PACS@pacs:104")
    assert s.console.login_window_s == 60.0
    assert Settings(listener={"port": 4001}).listener.port == 4001


def test_environment_beats_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "deepcovid.toml"
    cfg.write_text(
        'port = 4000\nae_title = "FROMFILE"\nallowed_calling_aes = ["A", "B"]\n'
        "[delivery]\nmax_attempts = 3\nverify = false\n"
    )
    monkeypatch.setenv("DEEPCOVID_CONFIG", str(cfg))
    monkeypatch.setenv("DEEPCOVID_PORT", "5000")
    monkeypatch.setenv("DEEPCOVID_DELIVERY_MAX_ATTEMPTS", "4")
    s = Settings(data_dir=tmp_path)
    assert s.listener.port == 5000
    assert s.listener.ae_title == "FROMFILE"
    assert s.listener.allowed_calling_aes == ["A", "B"]
    assert (s.delivery.max_attempts, s.delivery.verify) == (4, False)  # merged, not replaced
    assert Settings(port=6000).listener.port == 6000  # keyword arguments beat both


def test_a_value_given_both_flat_and_in_its_table_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "deepcovid.toml"
    cfg.write_text("port = 4000\n[listener]\nport = 4001\n")
    monkeypatch.setenv("DEEPCOVID_CONFIG", str(cfg))
    with pytest.raises(UsageError, match="port given twice"):
        Settings()


@pytest.mark.parametrize(
    ("text", "unknown"),
    [
        ("prot = 1\n", "'prot'"),
        ("[listener]\nprot = 1\n", "'listener.prot'"),
        ("[nope]\n", "'nope'"),
    ],
)
def test_unknown_setting_is_refused(
    text: str, unknown: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    monkeypatch.setenv("DEEPCOVID_CONFIG", str(cfg))
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert f"unknown setting {unknown}" in settings_problem(raised.value)


def test_errors_name_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPCOVID_CONSOLE_LOGIN_WINDOW_S", "soon")
    with pytest.raises(ValidationError) as raised:
        Settings()
    text = settings_problem(raised.value)
    assert "setting console_login_window_s = 'soon' (DEEPCOVID_CONSOLE_LOGIN_WINDOW_S)" in text


def test_defaults_are_the_embedded_setup(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.listener.ae_title == "DEEPCOVID" and s.listener.port == 11112
    assert s.storage.db_url == f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    assert s.storage.broker.startswith("sqla+sqlite:///")
    assert s.storage.spool == tmp_path / "spool" and s.storage.results == tmp_path / "results"


def test_comma_separated_allow_list_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPCOVID_ALLOWED_CALLING_AES", "PACS1, PACS2")
    assert Settings().listener.allowed_calling_aes == ["PACS1", "PACS2"]


@pytest.mark.parametrize("bad", ["", "A" * 17])
def test_invalid_ae_title_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="ae_title"):
        Settings(ae_title=bad)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tls_key": "k.pem"}, "tls_key is set but tls_cert is not"),
        (
            {"tls_require_client_cert": True},
            "tls_require_client_cert needs tls_ca to verify client certificates",
        ),
        ({"console_tls": True}, "console_tls needs tls_cert (and tls_key) for HTTPS"),
    ],
)
def test_settings_that_need_each_other_are_checked(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(**values)
    assert settings_problem(raised.value) == message


def test_values_lists_every_option_by_name(tmp_path: Path) -> None:
    values = Settings(data_dir=tmp_path, console_port=9000).values()
    assert list(values) == list(OPTIONS)
    assert values["console_port"] == 9000 and values["spool_dir"] == tmp_path / "spool"


def test_configuration_doc_matches_the_code() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc == configuration_markdown(), "run: deepcovid config docs > docs/configuration.md"
    for option in OPTIONS.values():
        assert f"`{option.env}`" in doc
        assert f"`{option.name}`" in doc and f"## `[{option.group}]`" in doc
