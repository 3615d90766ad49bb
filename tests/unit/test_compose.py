"""The deployment files: docker-compose.yml, deploy/env.example and the Orthanc configuration.

Docker cannot run here, so these tests check what can be checked without it: the compose file
is valid by the Compose Specification's JSON schema, every service command is a real
``deepcovid`` sub-command, every ``DEEPCOVID_*`` variable is a real setting and the values the
services get make a valid :class:`~common.settings.Settings`, and the pieces point at each other
(destination, Orthanc modality, volumes at the same paths, the GPU reservation).

What runs for real (the node's health check, ``deploy/orthanc`` in a real Orthanc) is in
``tests/integration/test_compose_running.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from common.settings import OPTIONS, Settings
from deepcovid.cli import build_parser
from dicom_client.scu import Destination
from tests.harness.factories import SHARED
from tests.harness.net import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / "deploy" / "env.example"
ORTHANC_DIR = REPO / "deploy" / "orthanc"
ORTHANC_CONFIG = ORTHANC_DIR / "orthanc.json"
AUTOROUTING_LUA = ORTHANC_DIR / "autorouting.lua"
COMPOSE_SCHEMA = SHARED / "schemas" / "compose-spec.json"

SECRETS = {"POSTGRES_PASSWORD": "test-pg-password", "ORTHANC_ADMIN_PASSWORD": "test-orthanc"}
"""Values for the secrets deploy/env.example leaves empty."""
NOT_SETTINGS = frozenset({"DEEPCOVID_CONFIG"})
"""DEEPCOVID_* variables that are not fields: the TOML file's path (common.settings)."""
LUA_ONLY = frozenset({"DEEPCOVID_ROUTED_MODALITIES"})
"""Read by autorouting.lua inside Orthanc (which modalities to forward), not by the node."""
_DEEPCOVID_VAR = re.compile(r"\bDEEPCOVID_[A-Z0-9_]+")
_INTERPOLATION = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


# --- helpers ----------------------------------------------------------------------------------
def load_compose() -> dict[str, Any]:
    """docker-compose.yml as YAML data (anchors and merge keys resolved, no interpolation)."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments and blank lines skipped)."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        env[key.strip()] = value.strip()
    return env


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation over YAML data: ``${VAR}``, ``${VAR:-default}``,
    ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}`` and ``$$``.

    Raises ``KeyError`` where Compose would refuse to start (a required variable unset).
    """
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group("dollar"):
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name)
        if op == ":-":
            return current if current else arg
        if op == "-":
            return arg if current is None else current
        if op in (":?", "?") and (current is None or (op == ":?" and not current)):
            raise KeyError(f"{name}: {arg}")
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


def example_env() -> dict[str, str]:
    """The variables of deploy/env.example, with test values for the secrets it leaves out."""
    return {**read_env_file(ENV_EXAMPLE), **SECRETS}


def deepcovid_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the ``deepcovid`` command."""
    return {
        name: service
        for name, service in compose["services"].items()
        if isinstance(service.get("command"), list) and service["command"][:1] == ["deepcovid"]
    }


def settings_from(environment: Mapping[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a container with ``environment`` would get (no other DEEPCOVID_* set)."""
    import os

    for key in list(os.environ):
        if key.startswith("DEEPCOVID_"):
            monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, str(value))
    return Settings()


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target path -> volume name (or host path) of a service's short-syntax volumes."""
    result: dict[str, str] = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        result[target] = source
    return result


# --- the compose file itself ------------------------------------------------------------------
def test_compose_file_is_valid_by_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    compose = load_compose()
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in validator.iter_errors(compose)
    ]
    assert errors == []
    # The same file after interpolation (what Compose validates), and a sanity check that the
    # validator does reject what the specification forbids.
    assert list(validator.iter_errors(interpolate(compose, example_env()))) == []
    broken = load_compose()
    broken["services"]["node"]["not_a_compose_key"] = True
    assert list(validator.iter_errors(broken)), "the schema should reject unknown service keys"


def test_the_stack_has_the_services_of_the_design() -> None:
    services = load_compose()["services"]
    assert {"redis", "postgres", "orthanc", "migrate", "node", "worker"} <= set(services)
    assert services["redis"]["image"].startswith("redis:")
    assert services["postgres"]["image"].startswith("postgres:")


def test_every_deepcovid_command_is_a_real_cli_subcommand() -> None:
    parser = build_parser()
    services = deepcovid_services(load_compose())
    commands = {name: service["command"][1:] for name, service in services.items()}
    assert commands["node"][:1] == ["node"]
    assert commands["worker"][:1] == ["worker"]
    assert commands["migrate"] == ["db", "upgrade"]
    for name, argv in commands.items():
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"service {name}: `deepcovid {' '.join(argv)}` is not a valid command")
        assert callable(getattr(args, "func", None)), f"service {name}: {argv} runs nothing"


def test_the_image_runs_the_cli_as_an_unprivileged_user() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.MULTILINE)
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert cmd is not None
    argv = json.loads(cmd.group(1))
    assert argv[0] == "deepcovid"
    assert callable(getattr(build_parser().parse_args(argv[1:]), "func", None))
    assert re.search(r"^USER deepcovid$", dockerfile, re.MULTILINE)
    assert f"EXPOSE {OPTIONS['port'].info.default}" in dockerfile
    # The image's registry folder is the one compose mounts the models volume on.
    compose = load_compose()
    env = compose["x-deepcovid-environment"]
    assert f"DEEPCOVID_MODEL_REGISTRY_DIR={env['DEEPCOVID_MODEL_REGISTRY_DIR']}" in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".env" in ignored and ".git" in ignored


def test_the_image_seeds_the_models_volume_with_the_shipped_default_model() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    registry = "/var/lib/deepcovid/models"
    assert f"cp -a /tmp/src/models/registry/. {registry}/" in dockerfile
    assert "cp -a /tmp/src/models/registry /opt/deepcovid-node/registry" in dockerfile
    assert "/opt/deepcovid-node/registry/." in (REPO / "docs" / "deployment.md").read_text()
    # What gets copied: a registry whose ACTIVE version has its card and weights, and that the
    # build context does not leave out.
    shipped = REPO / "models" / "registry"
    version = (shipped / "ACTIVE").read_text().strip()
    assert (shipped / version / "model_card.json").is_file()
    assert (shipped / version / "weights.pt").is_file()
    ignored = (REPO / ".dockerignore").read_text().split()
    assert not {"models", "models/registry", "*.pt", "**/*.pt"} & set(ignored)


def test_every_deepcovid_variable_is_a_setting() -> None:
    texts = {
        path.relative_to(REPO): path.read_text()
        for path in (
            COMPOSE_FILE,
            ENV_EXAMPLE,
            ORTHANC_CONFIG,
            AUTOROUTING_LUA,
            REPO / "Dockerfile",
            REPO / "docs" / "deployment.md",
        )
    }
    found = {name for text in texts.values() for name in _DEEPCOVID_VAR.findall(text)}
    assert "DEEPCOVID_DATABASE_URL" in found and "DEEPCOVID_BROKER_URL" in found
    unknown = sorted(
        name
        for name in found - NOT_SETTINGS - LUA_ONLY
        if name.removeprefix("DEEPCOVID_").lower() not in OPTIONS
    )
    assert unknown == [], f"not settings of common.settings.Settings: {unknown}"
    # The Lua script's own variables never reach the node or the workers.
    node_side = texts[COMPOSE_FILE.relative_to(REPO)] + texts[ENV_EXAMPLE.relative_to(REPO)]
    assert not LUA_ONLY & set(_DEEPCOVID_VAR.findall(node_side))


def test_services_get_valid_production_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = interpolate(load_compose(), example_env())
    services = deepcovid_services(compose)
    for name, service in services.items():
        settings = settings_from(service["environment"], monkeypatch)
        assert settings.storage.db_url.startswith("postgresql+psycopg://deepcovid:"), name
        assert "@postgres:5432/" in settings.storage.db_url, name
        assert settings.storage.broker == "redis://redis:6379/0", name
        assert settings.delivery.destination is not None, name
    assert settings_from(services["worker"]["environment"], monkeypatch).model.device == "cuda"
    assert settings_from(services["worker-cpu"]["environment"], monkeypatch).model.device == "cpu"
    node = settings_from(services["node"]["environment"], monkeypatch)
    assert node.listener.allowed_calling_aes == []  # env.example: empty means any calling AE
    # The health and metrics endpoints answer from outside the node's container.
    assert node.monitoring.bind == "0.0.0.0"
    assert node.monitoring.port != 0
    assert f"127.0.0.1:8088:{node.monitoring.port}" in services["node"]["ports"]
    assert node.listener.ae_title == read_env_file(ENV_EXAMPLE)["DEEPCOVID_AE_TITLE"]


def test_secrets_are_required_and_not_committed() -> None:
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(load_compose(), read_env_file(ENV_EXAMPLE))
    example = read_env_file(ENV_EXAMPLE)
    for key in SECRETS:
        assert example[key] == "", f"deploy/env.example must not carry a value for {key}"
    text = COMPOSE_FILE.read_text()
    for key in SECRETS:
        assert f"${{{key}:?" in text, f"{key} must be a required variable in docker-compose.yml"
    assert "${ORTHANC_ADMIN_PASSWORD}" in ORTHANC_CONFIG.read_text()


def test_results_go_to_the_orthanc_of_the_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = interpolate(load_compose(), example_env())
    settings = settings_from(compose["services"]["node"]["environment"], monkeypatch)
    assert settings.delivery.destination is not None
    destination = Destination.parse(settings.delivery.destination)
    orthanc = json.loads(ORTHANC_CONFIG.read_text())
    assert destination.host in compose["services"]
    assert destination.host == "orthanc"
    assert destination.ae_title == orthanc["DicomAet"]
    assert destination.port == orthanc["DicomPort"]
    # A site's own PACS instead, from .env.
    own = {**example_env(), "DEEPCOVID_DESTINATION": "MYPACS@pacs.example.org:104"}
    worker = interpolate(load_compose(), own)["services"]["worker"]
    assert settings_from(worker["environment"], monkeypatch).delivery.destination == (
        "MYPACS@pacs.example.org:104"
    )


def test_orthanc_routes_to_the_node_it_is_deployed_with(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = interpolate(load_compose(), example_env())
    services = compose["services"]
    node = settings_from(services["node"]["environment"], monkeypatch)
    modality = json.loads(ORTHANC_CONFIG.read_text())["DicomModalities"]["deepcovid"]
    # The AE title reaches Orthanc (config substitution and the Lua script) from the same
    # variable the node reads.
    assert modality["AET"] == "${DEEPCOVID_AE_TITLE}"
    assert services["orthanc"]["environment"]["DEEPCOVID_AE_TITLE"] == node.listener.ae_title
    assert modality["Host"] == "node"
    assert modality["Port"] == node.listener.port
    assert any(port.endswith(f":{node.listener.port}") for port in services["node"]["ports"])
    assert "os.getenv('DEEPCOVID_AE_TITLE')" in AUTOROUTING_LUA.read_text()
    # The Lua script Orthanc is told to load is the one mounted from deploy/orthanc.
    (lua_path,) = json.loads(ORTHANC_CONFIG.read_text())["LuaScripts"]
    orthanc_mounts = mounts(services["orthanc"])
    assert orthanc_mounts[lua_path] == "./deploy/orthanc/autorouting.lua"
    assert (REPO / orthanc_mounts[lua_path]).is_file()
    # The configuration Orthanc starts with (the image's CMD) is the one mounted from deploy/.
    cmd = re.search(r"^CMD (\[.*\])$", (ORTHANC_DIR / "Dockerfile").read_text(), re.MULTILINE)
    assert cmd is not None
    assert orthanc_mounts[json.loads(cmd.group(1))[-1]] == "./deploy/orthanc/orthanc.json"


def test_node_and_workers_share_spool_results_and_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compose = interpolate(load_compose(), example_env())
    for name in ("node", "worker", "worker-cpu"):
        service = compose["services"][name]
        settings = settings_from(service["environment"], monkeypatch)
        volumes = mounts(service)
        # Jobs record absolute spool paths: the worker must see the file where the node wrote it.
        assert volumes[str(settings.storage.spool)] == "spool", name
        assert volumes[str(settings.storage.results)] == "results", name
        assert volumes[str(settings.model.registry_dir)] == "models", name
    for volume in ("spool", "results", "models", "postgres", "redis", "orthanc"):
        assert volume in compose["volumes"]


def test_worker_reserves_one_nvidia_gpu() -> None:
    worker = load_compose()["services"]["worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    ]
    assert "cpu" in load_compose()["services"]["worker-cpu"]["profiles"]


def test_node_waits_for_the_migration_and_its_servers() -> None:
    services = load_compose()["services"]
    for name in ("node", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"][1]


def test_the_documented_multi_gpu_edit_is_a_valid_compose_file() -> None:
    """docs/deployment.md: pin `worker` to GPU 0 and add the `worker-gpu1` snippet."""
    doc = (REPO / "docs" / "deployment.md").read_text()
    snippet = re.search(r"```yaml\n(  worker-gpu1:\n.*?)```", doc, re.DOTALL)
    assert snippet is not None, "docs/deployment.md lost its worker-gpu1 example"
    text = COMPOSE_FILE.read_text()
    assert text.count("              count: 1\n") == 1
    text = text.replace("              count: 1\n", '              device_ids: ["0"]\n')
    text = text.replace(
        "  # The same worker on the CPU", snippet.group(1) + "\n  # The same worker on the CPU"
    )
    edited = yaml.safe_load(text)
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert list(jsonschema.Draft7Validator(schema).iter_errors(edited)) == []
    services = edited["services"]
    gpu_ids = [
        services[name]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]
        for name in ("worker", "worker-gpu1")
    ]
    assert gpu_ids == [["0"], ["1"]]
    assert services["worker-gpu1"]["environment"] == services["worker"]["environment"]
    assert mounts(services["worker-gpu1"]) == mounts(services["worker"])
    assert services["worker-gpu1"]["command"] == services["worker"]["command"]


# --- the conformance statement follows the code -----------------------------------------------
CONFORMANCE = REPO / "docs" / "conformance-statement.md"


def _config_row(text: str, setting: str) -> str:
    """The row of the conformance statement's configuration table that names ``setting``."""
    section = text[text.index("### 3.4 Configuration") :]
    rows = [line for line in section.splitlines() if f"`{setting}`" in line]
    assert rows, f"conformance statement: no configuration row for {setting}"
    return rows[0]


def test_conformance_statement_lists_what_the_listener_negotiates() -> None:
    from dicom_node.contexts import ANALYSED_SOP_CLASSES, IMAGE_TRANSFER_SYNTAXES

    text = CONFORMANCE.read_text()
    for uid in (*IMAGE_TRANSFER_SYNTAXES, *ANALYSED_SOP_CLASSES):
        assert f"| {uid} |" in text, f"conformance statement does not list {uid}"


def test_conformance_statement_lists_every_c_store_status() -> None:
    from dicom_client.scu import WARNING_STATUSES
    from dicom_node.intake import Status

    text = CONFORMANCE.read_text()
    for status in Status:
        assert f"| 0x{int(status):04X} |" in text, f"status {status.name} is not documented"
    for warning in WARNING_STATUSES:
        assert f"0x{warning:04X}" in text, f"warning 0x{warning:04X} is not documented"
    from dicom_node.intake import MAX_INFLATED_BYTES

    assert f"more than {MAX_INFLATED_BYTES // 2**20} MiB" in text


def test_conformance_statement_lists_every_emitted_code() -> None:
    from pydicom.sr.coding import Code

    from worker.results import codes

    text = CONFORMANCE.read_text()
    # The codes the builders use (codes.py may define one before anything emits it).
    users = "\n".join(
        path.read_text()
        for path in (REPO / "worker" / "results").glob("*.py")
        if path.name != "codes.py"
    )
    emitted = [
        value
        for name, value in vars(codes).items()
        if isinstance(value, Code) and re.search(rf"\b{name}\b", users)
    ]
    assert len(emitted) >= 10
    for code in emitted:
        assert f"| {code.scheme_designator} | {code.value} |" in text, f"{code} missing"


def test_conformance_statement_states_the_defaults_of_the_settings() -> None:
    text = CONFORMANCE.read_text()

    def default(name: str) -> Any:
        return OPTIONS[name].info.default

    assert f"`{default('ae_title')}`" in _config_row(text, "ae_title")
    assert f"{default('port')}" in _config_row(text, "port")
    assert f"| {default('max_associations')} |" in _config_row(text, "max_associations")
    assert f"| {default('max_pdu')} (unlimited) |" in _config_row(text, "max_pdu")
    assert f"| {default('network_timeout_s'):g} s |" in _config_row(text, "network_timeout_s")
    assert f"| {default('min_free_space_mb')} MiB |" in _config_row(text, "min_free_space_mb")
    retries = f"| {default('delivery_max_attempts')}, {default('delivery_backoff_s'):g} s |"
    assert retries in _config_row(text, "delivery_max_attempts")
    assert ("on" if default("delivery_verify") else "off") in _config_row(text, "delivery_verify")
    assert ("on" if default("send_rejection_sr") else "off") in _config_row(
        text, "send_rejection_sr"
    )
