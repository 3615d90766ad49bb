"""``deepcovid serve`` (what the README's first command runs): listener and worker together,
stopped together -- also when ``serve`` is SIGKILLed: its worker and pool children then stop by
themselves, and the next ``serve`` runs exactly one worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from store import JobStore
from tests.harness.factories import DICOM_DIR
from tests.harness.net import wait_for
from tests.harness.services import ServiceProcess


def our_processes(data_dir: str) -> list[int]:
    """Pids of processes started with this test's data folder in their environment."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"DEEPCOVID_DATA_DIR={data_dir}".encode() in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def test_serve_analyses_and_stops_with_its_worker(
    settings_env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    serve = ServiceProcess(["serve"], settings_env, tmp_path / "serve.log").start()
    services.append(serve)
    port = settings_env["DEEPCOVID_PORT"]
    echo = ["echoscu", "-aec", "DEEPCOVID", "127.0.0.1", port]
    wait_for(lambda: subprocess.run(echo, capture_output=True).returncode == 0, timeout=90)
    assert "listening as DEEPCOVID" in serve.output()
    store_cmd = ["storescu", "-aec", "DEEPCOVID", "127.0.0.1", port]
    subprocess.run([*store_cmd, str(DICOM_DIR / "nih_chestxray_DX_nhsx_test.dcm")], check=True)
    store = JobStore(f"sqlite:///{Path(settings_env['DEEPCOVID_DATA_DIR']) / 'jobs.sqlite'}")
    wait_for(lambda: store.counts() == {"delivered": 1}, timeout=120, what="job delivered")
    data_dir = settings_env["DEEPCOVID_DATA_DIR"]
    assert len(our_processes(data_dir)) >= 3, "node, worker and its pool child"
    assert serve.proc is not None
    serve.proc.terminate()  # SIGTERM to serve only: it must stop its worker itself
    serve.proc.wait(timeout=60)
    wait_for(lambda: not our_processes(data_dir), timeout=60, what="every process stopped")


def _stat(pid: int) -> tuple[int, bytes] | None:
    """(parent pid, command line) of a live process, None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), cmdline


def workers(data_dir: str) -> dict[int, list[int]]:
    """Celery main processes of this data folder and the pool children of each."""
    procs = {pid: info for pid in our_processes(data_dir) if (info := _stat(pid)) is not None}
    mains = [
        pid
        for pid, (ppid, cmd) in procs.items()
        if b"\0worker" in cmd and not (ppid in procs and b"\0worker" in procs[ppid][1])
    ]
    return {main: [pid for pid, (ppid, _) in procs.items() if ppid == main] for main in mains}


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if _stat(pid) is not None}


def start_serve(env: dict[str, str], log: Path, services: list[ServiceProcess]) -> ServiceProcess:
    """``deepcovid serve``, once it answers C-ECHO and its worker's pool child is up."""
    serve = ServiceProcess(["serve"], env, log).start()
    services.append(serve)
    echo = ["echoscu", "-aec", "DEEPCOVID", "127.0.0.1", env["DEEPCOVID_PORT"]]
    wait_for(lambda: subprocess.run(echo, capture_output=True).returncode == 0, timeout=90)
    data_dir = env["DEEPCOVID_DATA_DIR"]
    wait_for(lambda: any(workers(data_dir).values()), timeout=60, what="worker and pool child")
    return serve


def test_killed_serve_leaves_no_worker_and_a_restart_runs_exactly_one(
    settings_env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    data_dir = settings_env["DEEPCOVID_DATA_DIR"]
    serve = start_serve(settings_env, tmp_path / "serve1.log", services)
    first = set(our_processes(data_dir))
    assert serve.proc is not None
    assert len(workers(data_dir)) == 1

    os.kill(serve.proc.pid, signal.SIGKILL)  # serve only: its worker is in another group
    serve.proc.wait(timeout=10)
    t0 = time.monotonic()
    wait_for(lambda: not alive(first), timeout=15, what="the orphaned worker and its pool gone")
    assert time.monotonic() - t0 < 12

    second = start_serve(settings_env, tmp_path / "serve2.log", services)
    assert second.proc is not None
    now = workers(data_dir)
    assert len(now) == 1, now
    (main,) = now
    assert _stat(main) is not None and _stat(main)[0] == second.proc.pid  # type: ignore[index]
    assert not alive(first)

    # A second serve on the same data folder refuses, and leaves the running worker alone.
    third = subprocess.run(
        [sys.executable, "-m", "deepcovid.cli", "serve"],
        env={**os.environ, **settings_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert third.returncode == 1
    assert "another serve" in third.stderr
    assert list(workers(data_dir)) == [main]


def test_restarted_serve_stops_a_worker_that_outlived_its_serve(
    settings_env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    """A worker still running from an earlier serve (say, finishing a long task) is stopped
    before the new serve starts its own: found by the lock it holds."""
    data_dir = settings_env["DEEPCOVID_DATA_DIR"]
    # Its "parent" is this test process, which stays alive: only the lock can find it.
    leftover = ServiceProcess(
        ["worker", "--parent-pid", str(os.getpid())], settings_env, tmp_path / "old-worker.log"
    ).start()
    services.append(leftover)
    wait_for(lambda: any(workers(data_dir).values()), timeout=60, what="leftover worker's pool")
    old = set(our_processes(data_dir))

    serve = start_serve(settings_env, tmp_path / "serve.log", services)
    assert leftover.proc is not None and leftover.proc.poll() is not None
    assert not alive(old)
    assert serve.proc is not None
    assert [_stat(m)[0] for m in workers(data_dir)] == [serve.proc.pid]  # type: ignore[index]
    assert "left running by an earlier serve" in serve.output()
