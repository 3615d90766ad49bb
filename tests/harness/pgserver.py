"""A private PostgreSQL server for one test, which the test may stop and start again.

``initdb`` + ``pg_ctl`` from the installed PostgreSQL, on a free loopback port, its data in a
fresh folder; the machine's own server is left alone. ``initdb`` refuses to run as root, so as
root the server runs as the ``postgres`` user, in a folder that user owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.harness.net import free_port

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def pg_bin(name: str) -> str | None:
    """Path of a PostgreSQL server program (newest installed version), or None."""
    for folder in PG_BIN_DIRS:
        if (folder / name).is_file():
            return str(folder / name)
    return shutil.which(name)


class PostgresServer:
    """``initdb`` once, then :meth:`start` / :meth:`stop` as often as a test likes."""

    def __init__(self) -> None:
        self.port = free_port()
        # Not under pytest's tmp_path: as root that is a 0700 folder the postgres user
        # cannot enter.
        self.dir = Path(tempfile.mkdtemp(prefix="deepcovid-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._user: list[str] = []
        if os.getuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._user = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database (trust authentication)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._user, *args], check=True, capture_output=True, timeout=120)

    def init(self) -> PostgresServer:
        initdb = pg_bin("initdb")
        assert initdb, "PostgreSQL's initdb is not installed (scripts/test-services.sh)"
        self._run(initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            pg_bin("pg_ctl") or "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions, cut every connection)."""
        if (self.data / "postmaster.pid").exists():
            self._run(pg_bin("pg_ctl") or "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
