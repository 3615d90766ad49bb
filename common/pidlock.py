"""A lock file that names its holder, released by the kernel when the holder is gone.

``fcntl.flock`` on a file in the data folder, with the holder's pid written in it. The kernel
drops the lock when the last process holding the open file exits, however it exits (SIGKILL
included), so a lock can never outlive its holder and needs no stale-lock cleanup; and a
process's forked children (Celery's pool) share the open file, so a lock taken by a worker
is held until the worker *and* its pool children are gone.

``deepcovid serve`` uses two: ``serve.lock`` (one ``serve`` per data folder) and
``serve-worker.lock`` (held by the worker ``serve`` started, so the next ``serve`` can find and
stop a worker that outlived its parent before it starts its own).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path

FILE_MODE = 0o600

SERVE_LOCK = "serve.lock"
"""In ``data_dir``: held by the running ``deepcovid serve`` (one per data folder)."""
SERVE_WORKER_LOCK = "serve-worker.lock"
"""In ``data_dir``: held by the worker ``serve`` started, and by its pool children."""


class PidLock:
    """An exclusive, non-blocking lock on ``path`` holding the holder's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock and write our pid; False if another process holds it."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        """Give the lock up (closing the file releases it; the file stays)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def holder(self) -> int | None:
        """The pid written by the process holding the lock, or None when nobody holds it.

        A holder that died before writing its pid reads as 0.
        """
        if not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 32, 0).decode(errors="replace").strip()
                return int(text) if text.isdigit() else 0
            return None  # we could lock it: nobody holds it (closing the fd unlocks)
        finally:
            os.close(fd)

    def is_held(self) -> bool:
        """Whether some process holds the lock now."""
        return self.holder() is not None


def stop_holder(lock: PidLock, *, grace_s: float = 30.0, poll_s: float = 0.2) -> int | None:
    """Stop whatever process group holds ``lock``: SIGTERM, then SIGKILL after ``grace_s``.

    The holder is signalled as a process group (the worker ``serve`` starts leads its own, so
    its pool children are reached even if the leader is already gone). Returns the pid that
    held the lock (0 if it never wrote one), or None when nobody did, once the lock is free;
    raises TimeoutError if it is still held ``grace_s`` after the SIGKILL.
    """
    holder = lock.holder()
    if holder is None:
        return None
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if holder > 0:
            _signal_group(holder, signum)
        deadline = time.monotonic() + grace_s
        while lock.is_held():
            if time.monotonic() > deadline:
                break
            time.sleep(poll_s)
        else:
            return holder
    raise TimeoutError(f"{lock.path} is still held after SIGKILL of process {holder}")


def _signal_group(pid: int, signum: int) -> None:
    """Signal ``pid``'s process group if it leads one, else the process alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signum)
                return
        except ProcessLookupError:
            # The leader is gone; its group may live on in its children.
            os.killpg(pid, signum)
            return
        os.kill(pid, signum)
