"""Intake throughput: our listener (durable writes + job rows) against dcmtk storescp.

Sends 200 copies (fresh UIDs) of ``RG1_UNCR.dcm`` (7.2 MB, Explicit VR LE) with dcmtk
``storescu`` over one association to

(a) our listener (``dicom_node.scp``): temp file + fdatasync + rename + folder fsync per
    instance, and a job row in a real SQLite job store (migrated, WAL) before Success;
(b) dcmtk ``storescp`` writing to disk (no fsync), by default and with ``+B`` (bit-preserving
    streaming to disk, its fastest mode);

and measures in the same run the disk's synced-write bandwidth (7.2 MB files, each written and
fdatasynced, plus ``dd oflag=dsync`` as a cross-check). Everything is written under one scratch
folder on the same file system. Prints images/s, MB/s and the ratios; it is not a test.

    .venv/bin/python benchmarks/bench_intake.py [--count 200] [--rounds 2] [--scratch DIR]

Goals: ours >= 1.2x storescp, and >= 60 % of the synced-write bandwidth.
The analysis queue is replaced by a no-op here (enqueueing runs on a background thread after
Success anyway); the figure is what the listener itself sustains.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pydicom import dcmread  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from common.settings import Settings  # noqa: E402
from dicom_node.scp import start_server  # noqa: E402
from store import JobStore  # noqa: E402
from store.migrate import upgrade  # noqa: E402
from tests.harness.factories import DICOM_DIR  # noqa: E402

SOURCE = DICOM_DIR / "RG1_UNCR.dcm"
MB = 1e6


def make_copies(count: int, folder: Path) -> list[Path]:
    """``count`` copies of the source with fresh SOP Instance UIDs."""
    folder.mkdir(parents=True)
    ds = dcmread(SOURCE)
    paths = []
    for i in range(count):
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"{i:04d}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def storescu(port: int, called: str, files: list[Path]) -> float:
    """Seconds dcmtk storescu takes to send ``files`` over one association."""
    start = time.perf_counter()
    result = subprocess.run(
        ["storescu", "-aet", "STORESCU", "-aec", called, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"storescu failed: {result.stderr[-2000:]}")
    return elapsed


def run_ours(files: list[Path], scratch: Path) -> float:
    """Send to our listener with a fresh spool and job store; check everything landed."""
    data = Path(tempfile.mkdtemp(prefix="ours-", dir=scratch))
    url = f"sqlite:///{data / 'jobs.sqlite'}"
    upgrade(url)
    store = JobStore(url)
    settings = Settings(
        data_dir=data,
        bind_address="127.0.0.1",
        port=0,
        database_url=url,
        min_free_space_mb=200,
        max_pdu=0,
    )
    enqueued: list[int] = []
    lock = threading.Lock()

    def enqueue(job_id: int) -> None:
        with lock:
            enqueued.append(job_id)

    listener = start_server(settings, store=store, enqueue=enqueue)
    try:
        elapsed = storescu(listener.address[1], "DEEPCOVID", files)
    finally:
        listener.shutdown()
    jobs = sum(store.counts().values())
    spooled = len(list(settings.storage.spool.glob("*.dcm")))
    store.engine.dispose()
    if jobs != len(files) or spooled != len(files):
        raise RuntimeError(f"ours: {jobs} jobs and {spooled} files for {len(files)} sent")
    shutil.rmtree(data)
    return elapsed


def run_storescp(files: list[Path], scratch: Path, *options: str) -> float:
    """Send to dcmtk storescp writing to a fresh folder; check everything landed."""
    out = Path(tempfile.mkdtemp(prefix="storescp-", dir=scratch))
    port = free_port()
    proc = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "--output-directory", str(out), *options, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        elapsed = storescu(port, "STORESCP", files)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    written = len([p for p in out.iterdir() if p.is_file()])
    if written != len(files):
        raise RuntimeError(f"storescp: {written} files for {len(files)} sent")
    shutil.rmtree(out)
    return elapsed


def synced_bandwidth(scratch: Path, size: int, count: int = 40) -> float:
    """MB/s writing ``count`` files of ``size`` bytes, each fdatasynced (like the spool)."""
    folder = Path(tempfile.mkdtemp(prefix="disk-", dir=scratch))
    payload = os.urandom(size)
    start = time.perf_counter()
    for i in range(count):
        fd = os.open(folder / f"{i}.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fdatasync(fd)
        finally:
            os.close(fd)
    elapsed = time.perf_counter() - start
    shutil.rmtree(folder)
    return count * size / elapsed / MB


def dd_bandwidth(scratch: Path, size: int, count: int = 40) -> float | None:
    """MB/s of ``dd oflag=dsync`` in blocks of one instance's size (cross-check)."""
    target = scratch / "dd.bin"
    start = time.perf_counter()
    result = subprocess.run(
        ["dd", "if=/dev/zero", f"of={target}", f"bs={size}", f"count={count}", "oflag=dsync"],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    target.unlink(missing_ok=True)
    return None if result.returncode else count * size / elapsed / MB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="instances per run (200)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each receiver (2)")
    parser.add_argument(
        "--scratch",
        type=Path,
        default=None,
        help="scratch folder on the disk to test (default: a temp folder)",
    )
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "dd"):
        if not shutil.which(tool):
            print(f"{tool} is missing (apt-get install -y dcmtk coreutils)", file=sys.stderr)
            return 2

    scratch = Path(tempfile.mkdtemp(prefix="bench-intake-", dir=args.scratch))
    try:
        files = make_copies(args.count, scratch / "copies")
        size = files[0].stat().st_size
        total_mb = sum(p.stat().st_size for p in files) / MB
        times: dict[str, list[float]] = {
            "ours": [],
            "storescp": [],
            "storescp +B": [],
        }
        disk: list[float] = []
        dd: list[float] = []
        for _ in range(args.rounds):  # interleaved, so background load hits all alike
            times["ours"].append(run_ours(files, scratch))
            times["storescp"].append(run_storescp(files, scratch))
            times["storescp +B"].append(run_storescp(files, scratch, "+B"))
            disk.append(synced_bandwidth(scratch, size))
            dd_mbs = dd_bandwidth(scratch, size)
            if dd_mbs is not None:
                dd.append(dd_mbs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"{args.count} x {SOURCE.name} ({size / MB:.1f} MB), one association each, "
        f"{args.rounds} round(s); median of the rounds"
    )
    rate = {name: args.count / statistics.median(t) for name, t in times.items()}
    mbs = {name: total_mb / statistics.median(t) for name, t in times.items()}
    for name in times:
        runs = ", ".join(f"{args.count / t:.1f}" for t in times[name])
        print(f"  {name:<15} {rate[name]:6.1f} img/s  {mbs[name]:6.1f} MB/s   (runs: {runs} img/s)")
    disk_mbs = statistics.median(disk)
    print(
        f"  disk synced writes (fdatasync per {size / MB:.1f} MB file): {disk_mbs:.1f} MB/s"
        + (f"; dd oflag=dsync: {statistics.median(dd):.1f} MB/s" if dd else "")
    )
    print(f"ours / storescp:      {rate['ours'] / rate['storescp']:.2f}x  (goal >= 1.2x)")
    print(f"ours / storescp +B:   {rate['ours'] / rate['storescp +B']:.2f}x")
    print(f"ours / synced disk:   {100 * mbs['ours'] / disk_mbs:.0f} %  (goal >= 60 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
