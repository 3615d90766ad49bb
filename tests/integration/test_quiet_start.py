"""A service starts with its own lines, not Alembic's per-plugin INFO chatter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from store.existing import head_revision
from tests.harness.net import REPO


def test_start_up_logs_the_revision_and_nothing_of_alembic(tmp_path: Path) -> None:
    code = (
        "from common.settings import get_settings\n"
        "from deepcovid.runtime import prepare\n"
        "prepare(get_settings(), 'node')\n"
    )
    env = {**os.environ, "DEEPCOVID_DATA_DIR": str(tmp_path), "DEEPCOVID_LOG_LEVEL": "INFO"}
    env.pop("DEEPCOVID_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f"node: job store at revision {head_revision()}" in result.stderr
    assert "alembic" not in result.stderr.lower(), result.stderr
