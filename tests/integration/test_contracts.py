"""The import contracts hold, and they catch a wrong-way import (so the check can fail).

``lint-imports`` runs twice per session, each run shared by the tests that read it: once on the
code as it is, once on a copy with five imports planted the wrong way.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.harness.net import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
ROOT_PACKAGES: list[str] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"][
    "importlinter"
]["root_packages"]
PLANTED = {
    # file: (line appended, the import chain lint-imports must report)
    "dicom_node/spool.py": ("from worker import gate", "dicom_node.spool -> worker.gate"),
    "store/queue.py": ("import worker.pipeline", "store.queue -> worker.pipeline"),
    "training/release.py": ("from worker import gate", "training.release -> worker.gate"),
    "training/metrics.py": ("import store.jobstore", "training.metrics -> store.jobstore"),
    "benchmarks/bench_intake.py": (
        "from tests.conftest import settings",
        "benchmarks.bench_intake -> tests.conftest",
    ),
}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def on_the_code() -> subprocess.CompletedProcess[str]:
    return lint_imports(REPO)


@pytest.fixture(scope="module")
def on_wrong_way_imports(
    tmp_path_factory: pytest.TempPathFactory,
) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over a copy of every root package with :data:`PLANTED` added."""
    root = tmp_path_factory.mktemp("tree")
    for name in ROOT_PACKAGES:
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    for relpath, (line, _) in PLANTED.items():
        path = root / relpath
        path.write_text(path.read_text() + f"\n{line}  # the wrong way\n")
    return lint_imports(root)


def test_the_contracts_hold_on_the_code(on_the_code: subprocess.CompletedProcess[str]) -> None:
    assert on_the_code.returncode == 0, on_the_code.stdout + on_the_code.stderr
    assert "0 broken" in on_the_code.stdout


def test_benchmarks_and_tests_are_checked_too() -> None:
    assert {"tests", "benchmarks"} <= set(ROOT_PACKAGES)


@pytest.mark.parametrize("relpath", list(PLANTED))
def test_a_wrong_way_import_breaks_the_contracts(
    on_wrong_way_imports: subprocess.CompletedProcess[str], relpath: str
) -> None:
    assert on_wrong_way_imports.returncode != 0
    assert PLANTED[relpath][1] in on_wrong_way_imports.stdout, on_wrong_way_imports.stdout
