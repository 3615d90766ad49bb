"""The import contracts hold, and they catch a wrong-way import (so the check can fail)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = (
    "common", "store", "dicom_client", "dicom_node", "worker", "models", "training",
    "migrations", "deepcovid",
)  # fmt: skip
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def copy_tree(dst: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", dst / "pyproject.toml")
    return dst


def test_the_contracts_hold_on_the_code() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_listener_importing_the_worker_breaks_the_contracts(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    spool = root / "dicom_node" / "spool.py"
    spool.write_text(spool.read_text() + "\nfrom worker import gate  # the wrong way\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "dicom_node.spool -> worker.gate" in result.stdout


def test_the_store_importing_a_service_breaks_the_contracts(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    queue = root / "store" / "queue.py"
    queue.write_text(queue.read_text() + "\nimport worker.pipeline  # the wrong way\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "store.queue -> worker.pipeline" in result.stdout
