"""The unit layer's guard (``tests/unit/conftest.py``) refuses every way of starting a process."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import pytest


def test_subprocess_is_refused() -> None:
    with pytest.raises(pytest.fail.Exception, match="move it to tests/integration"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_multiprocessing_is_refused() -> None:
    with pytest.raises(pytest.fail.Exception, match="multiprocessing"):
        multiprocessing.get_context("spawn").Process(target=print).start()


@pytest.mark.parametrize("name", ["fork", "system", "posix_spawn"])
def test_os_process_calls_are_refused(name: str) -> None:
    with pytest.raises(pytest.fail.Exception, match=f"os.{name}"):
        getattr(os, name)()
