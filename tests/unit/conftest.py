"""The unit layer starts no process: a test that needs one belongs in ``tests/integration``.

Every way this code base could start one (``subprocess``, ``multiprocessing``, ``os.fork``,
``os.system``, ``os.posix_spawn``) fails the test at once instead, with pytest's own failure, which
no ``except Exception`` in the code under test can swallow. That keeps this layer fast and free of
machine-dependent waits, and a new test that starts a process says so the first time it runs.
"""

from __future__ import annotations

import multiprocessing.process
import os
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

from tests.harness.factories import random_ensemble_registry


def _refuse(what: str) -> object:
    def refused(*args: object, **kwargs: object) -> NoReturn:
        pytest.fail(
            f"a unit test started a process ({what}); move it to tests/integration", pytrace=True
        )

    return refused


@pytest.fixture(scope="session", autouse=True)
def _matplotlib_font_cache() -> None:
    """Build matplotlib's font cache before any test refuses processes: on a fresh machine the
    first import of ``matplotlib.pyplot`` runs ``fc-list`` to fill it, which the guard below would
    fail when the unit layer runs alone (in the whole suite an integration test fills it first)."""
    import matplotlib.font_manager  # noqa: F401


@pytest.fixture(autouse=True)
def _no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse to start a process for the length of each unit test."""
    monkeypatch.setattr(subprocess.Popen, "_execute_child", _refuse("subprocess"))
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", _refuse("multiprocessing"))
    for name in ("fork", "forkpty", "system", "posix_spawn", "posix_spawnp"):
        monkeypatch.setattr(os, name, _refuse(f"os.{name}"))


@pytest.fixture(scope="module")
def ensemble_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three random SqueezeNets (64 px input) and their active ensemble ``ens``."""
    return random_ensemble_registry(tmp_path_factory.mktemp("ensemble"))
