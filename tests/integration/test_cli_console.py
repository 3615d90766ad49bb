"""Bad input as a newcomer's shell sees it: ``deepcovid`` run as a real process prints one line
on stderr and exits non-zero, with no traceback. The in-process cases of every command are in
``tests/unit/test_cli_errors.py``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.harness.net import REPO


def _console(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deepcovid.cli", *argv],
        env={**os.environ, **env, "OMP_NUM_THREADS": "1"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    ("argv", "says", "status"),
    [
        (["jobs", "list"], "deepcovid jobs list: no job store yet", 1),
        (["evaluate", "--model", "nope"], "deepcovid evaluate: no model version 'nope'", 2),
    ],
)
def test_the_console_sees_one_line(
    settings_env: dict[str, str], argv: list[str], says: str, status: int
) -> None:
    done = _console(argv, settings_env)
    assert done.returncode == status
    assert done.stderr.startswith(says) and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
