"""Our own services (``deepcovid node`` / ``worker`` / ``serve``) as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.harness.net import REPO


class ServiceProcess:
    """One of our services (``deepcovid node`` / ``worker``) as a subprocess with a log file."""

    def __init__(
        self, args: list[str], env: dict[str, str], log: Path, *, cwd: Path = REPO
    ) -> None:
        self.args = args
        self.env = {**os.environ, **env}
        self.log = log
        self.cwd = cwd
        """Checkout whose code runs (a benchmark may run an older one's, for before/after)."""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        self._fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deepcovid.cli", *self.args],
            env=self.env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
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
