"""A child stops when its parent dies (``common.lifeline``), and lock files name a live holder
and free themselves when it ends, however it ends (``common.pidlock``). Real processes, stdlib
only: a second or two."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from common.pidlock import PidLock, stop_holder
from tests.harness.net import REPO


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float) -> float:
    t0 = time.monotonic()
    while alive(pid):
        assert time.monotonic() - t0 < timeout, f"process {pid} still alive after {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - t0


PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(child.pid, flush=True)
time.sleep(60)
"""
CHILD = """
import os, signal, time
from common.lifeline import exit_with_parent
signal.signal(signal.SIGTERM, signal.SIG_IGN if {ignore} else signal.SIG_DFL)
exit_with_parent(os.getppid(), grace_s=1.0, poll_s=0.1)
time.sleep(60)
"""


def orphan_lifetime(ignore_term: bool) -> float:
    """Seconds a child lives after its parent is SIGKILLed."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD.format(ignore=ignore_term)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(1.0)  # the child has armed its lifeline
    assert alive(child)
    parent.kill()
    parent.wait()
    return wait_gone(child, timeout=10)


def test_a_child_stops_when_its_parent_is_killed() -> None:
    assert orphan_lifetime(ignore_term=False) < 1.0  # the parent-death signal, at once


def test_a_child_that_ignores_the_signal_is_killed_after_the_grace_period() -> None:
    assert 0.8 < orphan_lifetime(ignore_term=True) < 5.0


HOLDER = """
import sys, time
from pathlib import Path
from common.pidlock import PidLock
assert PidLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_lock_names_its_holder_and_frees_itself_when_the_holder_is_killed(tmp_path: Path) -> None:
    lock = PidLock(tmp_path / "x.lock")
    assert lock.holder() is None
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock.path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    assert lock.holder() == holder.pid
    assert not lock.acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock.holder() is None, "no stale lock after SIGKILL"
    assert lock.acquire() and lock.holder() == os.getpid()
    lock.release()
    assert lock.holder() is None


def test_stop_holder_terminates_the_holders_process_group(tmp_path: Path) -> None:
    lock = PidLock(tmp_path / "x.lock")
    assert stop_holder(lock) is None
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock.path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    assert stop_holder(lock, grace_s=5) == holder.pid
    assert holder.wait(timeout=5) == -signal.SIGTERM
    assert not lock.is_held()
