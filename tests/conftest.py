"""Fixtures shared by the unit and integration layers.

Integration fixtures start real servers (redis-server, Celery worker processes, our node,
Orthanc) on loopback ports picked free at run time, and always stop them. The servers
themselves live in :mod:`tests.harness`, which benchmarks import too; this file holds only
the fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import Settings, get_settings
from tests.harness.factories import random_registry
from tests.harness.net import free_port
from tests.harness.pgdatabase import fresh_pg_database
from tests.harness.redisserver import RedisServer
from tests.harness.services import ServiceProcess


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data folder for one test."""
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def model_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with one active, randomly initialised SqueezeNet 1.1 (seeded)."""
    return random_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture
def settings_env(
    data_dir: Path, model_registry: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Environment for services under test: embedded defaults inside the test's tmp folder."""
    env = {
        "DEEPCOVID_MODEL_REGISTRY_DIR": str(model_registry),
        "DEEPCOVID_DATA_DIR": str(data_dir),
        "DEEPCOVID_PORT": str(free_port()),
        "DEEPCOVID_BIND_ADDRESS": "127.0.0.1",
        "DEEPCOVID_MIN_FREE_SPACE_MB": "1",
        "DEEPCOVID_TORCH_THREADS": "1",
        "DEEPCOVID_OCCLUSION_STRIDE": "16",  # 13x13 windows: the same code, a quarter the work
        "DEEPCOVID_MONITORING_PORT": str(free_port()),
        "DEEPCOVID_ANALYSIS_LEASE_S": "15",
        "DEEPCOVID_RECONCILE_INTERVAL_S": "10",
        # Most tests send synthetic pixels, which the view check rightly calls "not a chest
        # radiograph"; the tests of the check itself turn it on (tests/*/test_view*.py).
        "DEEPCOVID_VIEW_CHECK": "false",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    """Settings read from :func:`settings_env`."""
    return get_settings()


# --- PostgreSQL ---------------------------------------------------------------------------
@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The job store URL on each supported backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    return request.getfixturevalue("pg_url")


# --- Redis --------------------------------------------------------------------------------
@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running private redis-server."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["embedded", "redis"])
def broker_env(
    request: pytest.FixtureRequest, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Settings environment on the embedded broker, then on a private redis-server."""
    env = dict(settings_env)
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        env["DEEPCOVID_BROKER_URL"] = server.url
        monkeypatch.setenv("DEEPCOVID_BROKER_URL", server.url)
    return env


# --- our processes ------------------------------------------------------------------------
@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    """A list to register started services in; all are stopped at the end of the test."""
    started: list[ServiceProcess] = []
    yield started
    for svc in reversed(started):
        svc.stop()
