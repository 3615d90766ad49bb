"""Wake-ups between the processes sharing the embedded broker: a hint that a task is waiting.

kombu's SQLAlchemy transport has no notification of its own: a worker finds a new task only by
polling the queue table, so every task waited half a poll interval on average (0.41-0.47 s of
a round trip at kombu's 1 s; ``docs/operations.md``, "Queue wait"). Here each consuming worker
binds a Unix datagram socket in a folder beside the broker's SQLite file, and a publisher,
once its message is committed, sends one byte to every socket there. The byte carries nothing:
the worker that receives it polls the table at once instead of at its next poll. A wake-up
that is lost (no socket bound yet, a full socket buffer, a data folder that cannot hold
sockets) costs at most one poll interval, never a task -- the table stays the only record.

A worker killed by SIGKILL leaves its socket file behind; the next publisher that meets it
(``ECONNREFUSED``: nobody bound) removes it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import secrets
import selectors
import socket
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".sock"


def wake_dir(broker_file: Path) -> Path:
    """The folder of wake-up sockets for the SQLite broker file ``broker_file``
    (``broker.sqlite`` -> ``broker.wake``)."""
    return broker_file.with_suffix(".wake")


def wake_all(directory: Path) -> int:
    """Send a wake-up to every worker socket in ``directory``; returns how many took it.

    Never raises: a publisher's message is already committed, and a wake-up only shortens the
    wait. A socket nobody has bound (its worker died) is removed; a full one (its worker has
    wake-ups pending already) is skipped.
    """
    try:
        names = [p for p in directory.iterdir() if p.name.endswith(SUFFIX)]
    except OSError:
        return 0  # no worker has bound one yet
    if not names:
        return 0
    woken = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for path in names:
            try:
                sender.sendto(b"!", str(path))
                woken += 1
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED:
                    path.unlink(missing_ok=True)  # left behind by a killed worker
                elif exc.errno not in (errno.EAGAIN, errno.ENOENT):
                    log.debug("broker wake-up to %s failed: %s", path.name, exc)
    return woken


class WakeListener:
    """One worker's wake-up socket: :meth:`wait` sleeps until a wake-up or a timeout.

    When the socket cannot be bound (a path too long for a Unix socket, a filesystem that
    holds no sockets) the listener still works, as a plain sleep: the worker then finds its
    tasks by polling alone, as without wake-ups, and says so once in its log. Without a
    ``directory`` (a broker in memory) only :meth:`wake` from its own process wakes it.
    """

    def __init__(self, directory: Path | None) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        # Wake-ups from this process's own threads, bound or not.
        self._own_r, self._own_w = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._own_r.setblocking(False)
        self._own_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._sock, selectors.EVENT_READ)
        self._selector.register(self._own_r, selectors.EVENT_READ)
        self.path: Path | None = None
        if directory is None:  # a broker in memory: only this process's own wake-ups
            return
        self.path = directory / f"{secrets.token_hex(4)}{SUFFIX}"
        try:  # a path too long for a Unix socket (107 bytes on Linux) fails here too
            directory.mkdir(parents=True, exist_ok=True)
            self._sock.bind(str(self.path))
        except OSError as exc:
            log.warning(
                "broker wake-ups are off (%s: %s); the worker polls for tasks only",
                self.path,
                exc.strerror or exc,
            )
            self.path = None

    @property
    def bound(self) -> bool:
        """Whether publishers can wake this listener."""
        return self.path is not None

    def wait(self, timeout: float) -> bool:
        """Sleep until a wake-up arrives or ``timeout`` seconds pass; True when woken.

        Every pending wake-up is consumed, so one poll answers all that came before it.
        """
        ready = self._selector.select(max(timeout, 0.0))
        for key, _ in ready:
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            while True:
                try:
                    sock.recv(64)
                except OSError:  # BlockingIOError: all read
                    break
        return bool(ready)

    def wake(self) -> None:
        """Wake this listener from its own process (the next :meth:`wait` returns at once)."""
        with contextlib.suppress(OSError):  # its buffer is full: it is awake already
            self._own_w.send(b"!")

    def close(self) -> None:
        """Close the sockets and remove the socket's file."""
        self._selector.close()
        for sock in (self._sock, self._own_r, self._own_w):
            sock.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None
