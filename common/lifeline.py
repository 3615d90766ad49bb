"""A child process's lifeline to its parent: when the parent dies, the child goes too.

``deepcovid serve`` runs its worker as a child process. Killed with SIGKILL (the OOM killer, a
``kill -9``, a crashed container runtime), serve cannot stop that worker, and an orphaned
worker would go on taking tasks beside the worker of the next ``serve`` -- two where the
operator asked for one. Two mechanisms close that gap:

- the kernel's parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG)``): the kernel sends a
  chosen signal to the child the moment its parent exits, however it exits;
- a watchdog thread that polls :func:`os.getppid` (the parent's pid changes when it dies: the
  orphan is re-parented to init or a subreaper). It covers systems without ``prctl`` and the
  moment before ``prctl`` took effect, and it escalates to SIGKILL when a graceful stop takes
  longer than the grace period.

The parent-death signal is cleared on ``fork``, so processes a child forks (Celery's pool
children) call :func:`die_with_parent` themselves.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal this process gets when its parent dies (linux/prctl.h)."""


def set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent dies.

    Returns False where that is not available (not Linux, no ``prctl``). On Linux the
    "parent" is the *thread* that created this process; a process started by a thread that
    exits early would be signalled then, so start children from long-lived threads.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    if prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return False
    return True


def exit_with_parent(
    parent_pid: int,
    *,
    signum: int = signal.SIGTERM,
    grace_s: float = 10.0,
    poll_s: float = 0.5,
) -> threading.Thread:
    """Stop this process when ``parent_pid`` stops being its parent.

    ``signum`` (default SIGTERM: Celery's warm shutdown) is sent on the parent's death -- by
    the kernel where it can, by the watchdog otherwise -- and if the process is still alive
    ``grace_s`` later, the watchdog SIGKILLs it. Returns the (daemon) watchdog thread.
    """
    by_kernel = set_parent_death_signal(signum)
    if os.getppid() != parent_pid:
        # The parent died before the kernel was told to watch it.
        log.warning("parent process %d is gone; stopping", parent_pid)
        os.kill(os.getpid(), signum)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        log.warning("parent process %d died; stopping within %.0f s", parent_pid, grace_s)
        if not by_kernel:
            os.kill(os.getpid(), signum)
        time.sleep(grace_s)
        log.error("still running %.0f s after the parent died; killing this process", grace_s)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="lifeline", daemon=True)
    thread.start()
    return thread


def die_with_parent(expected_parent: int | None = None, *, signum: int = signal.SIGKILL) -> bool:
    """Receive ``signum`` (default SIGKILL) when this process's parent dies (Linux).

    For processes forked by a service (Celery's pool children), whose parent-death signal the
    fork cleared. With ``expected_parent``, a parent that is already gone (this process was
    orphaned between the fork and this call) ends this process at once. Returns whether the
    kernel will deliver the signal.
    """
    armed = set_parent_death_signal(signum)
    if expected_parent is not None and os.getppid() != expected_parent:
        os.kill(os.getpid(), signum)
    return armed
