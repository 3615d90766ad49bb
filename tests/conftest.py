"""Fixtures shared by the unit and integration layers.

Integration fixtures start real servers (redis-server, Celery worker processes, our node,
Orthanc) on loopback ports picked free at run time, and always stop them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import Settings, get_settings

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data folder for one test."""
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def model_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with one active, randomly initialised SqueezeNet 1.1 (seeded)."""
    from tests.factories import random_registry

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
PG_ADMIN_URL = os.environ.get(
    "DEEPCOVID_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@contextlib.contextmanager
def fresh_pg_database(prefix: str = "deepcovid_test") -> Iterator[str]:
    """A new, empty PostgreSQL database (uniquely named) on the server of ``PG_ADMIN_URL``;
    yields its URL and drops it afterwards. Used by tests and by ``benchmarks/bench_load.py``."""
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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
class RedisServer:
    """A private ``redis-server`` with persistence (AOF), so tests may stop and restart it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not installed (scripts/test-services.sh installs it)"
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._ping, timeout=20, what="redis-server")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


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
class ServiceProcess:
    """One of our services (``deepcovid node`` / ``worker``) as a subprocess with a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = {**os.environ, **env}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        self._fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deepcovid.cli", *self.args],
            env=self.env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group (Celery's children too)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=20)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        if hasattr(self, "_fh"):
            self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    """A list to register started services in; all are stopped at the end of the test."""
    started: list[ServiceProcess] = []
    yield started
    for svc in reversed(started):
        svc.stop()
