"""Intake throughput: our listener (durable writes + job rows) against dcmtk storescp, and
our STOW-RS intake against C-STORE and against Orthanc's own STOW-RS.

Sends 200 copies (fresh UIDs) of ``RG1_UNCR.dcm`` (7.2 MB, Explicit VR LE) with dcmtk
``storescu`` over one association to

(a) our listener (``dicom_node.scp``): temp file + fdatasync + rename + folder fsync per
    instance, and a job row in a real SQLite job store (migrated, WAL) before Success;
(b) dcmtk ``storescp`` writing to disk (no fsync), by default and with ``+B`` (bit-preserving
    streaming to disk, its fastest mode);

(c) our STOW-RS intake (``dicom_node.stow`` on the node's uvicorn server, the same intake
    per part: durable spool file and job row before the answer), and Orthanc's DICOMweb plugin
    (``orthanc-dicomweb``), both sent the same files by ``dicomweb-client`` from a separate
    process, ``--batch`` instances per POST;

and measures in the same run the disk's synced-write bandwidth (7.2 MB files, each written and
fdatasynced, plus ``dd oflag=dsync`` as a cross-check). Everything is written under one scratch
folder on the same file system. Prints images/s, MB/s and the ratios; it is not a test.

    .venv/bin/python benchmarks/bench_intake.py [--count 200] [--rounds 2] [--scratch DIR]

Goals: ours >= 1.2x storescp, and >= 60 % of the synced-write bandwidth; STOW-RS >= 1.0x
Orthanc's STOW-RS. ``--receivers`` picks some of them (e.g. ``ours stow orthanc-stow``).
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
RECEIVERS = ("ours", "storescp", "storescp +B", "stow", "orthanc-stow")


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


def stow_send(url: str, token: str | None, batch: int, files: list[Path]) -> float:
    """Seconds a separate process spends in dicomweb-client's ``store_instances`` sending
    ``files`` (read beforehand: the clock runs while it encodes, posts and waits)."""
    args = [sys.executable, __file__, "--stow-send", url, token or "-", str(batch)]
    result = subprocess.run([*args, *map(str, files)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"STOW-RS sender failed: {result.stderr[-2000:]}")
    return float(result.stdout.split()[-1])


def _sender_main(argv: list[str]) -> int:
    """The sender process: ``--stow-send URL TOKEN|- BATCH FILE...``."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    url, token, batch, paths = argv[0], argv[1], int(argv[2]), argv[3:]
    session = requests.Session()
    if token != "-":
        session.headers["Authorization"] = f"Bearer {token}"
    # One body with a Content-Length (not chunked): what a sender of whole studies does.
    client = DICOMwebClient(url, session=session, timeout=600, chunk_size=2**31)
    client.set_http_retry_params(retry=False)
    batches = [[dcmread(p) for p in paths[i : i + batch]] for i in range(0, len(paths), batch)]
    start = time.perf_counter()
    for datasets in batches:
        answer = client.store_instances(datasets)
        if answer.get("FailedSOPSequence"):
            print(f"failed: {answer.FailedSOPSequence}", file=sys.stderr)
            return 1
    print(f"{time.perf_counter() - start:.6f}")
    return 0


def run_stow(files: list[Path], scratch: Path, batch: int) -> float:
    """STOW-RS to our intake (the node's web server, in this process) with a fresh store."""
    from dicom_node.enqueuer import Enqueuer
    from dicom_node.intake import Intake
    from dicom_node.ops.server import make_app
    from dicom_node.spool import Spool
    from dicom_node.stow import StowService
    from dicom_node.webserver import ThreadedServer
    from store.tokens import Tokens

    data = Path(tempfile.mkdtemp(prefix="stow-", dir=scratch))
    url = f"sqlite:///{data / 'jobs.sqlite'}"
    upgrade(url)
    store = JobStore(url)
    spool = Spool(data / "spool", min_free_bytes=200 * 2**20)
    spool.ensure()
    enqueuer = Enqueuer(lambda job_id: None)
    service = StowService(
        Intake(spool, store), Tokens(store).authenticate, enqueuer.submit, max_bytes=2**30
    )
    token = Tokens(store).add("bench")
    server = ThreadedServer(make_app(service.routes()), "127.0.0.1", 0)
    try:
        elapsed = stow_send(f"http://127.0.0.1:{server.port}/dicom-web", token, batch, files)
    finally:
        server.shutdown()
        enqueuer.close()
    jobs = sum(store.counts().values())
    spooled = len(list(spool.root.glob("*.dcm")))
    store.engine.dispose()
    if jobs != len(files) or spooled != len(files):
        raise RuntimeError(f"stow: {jobs} jobs and {spooled} files for {len(files)} sent")
    shutil.rmtree(data)
    return elapsed


def run_orthanc_stow(files: list[Path], scratch: Path, batch: int) -> float:
    """STOW-RS to Orthanc's DICOMweb plugin with a fresh storage folder."""
    from tests.harness.orthanc import Orthanc

    work = Path(tempfile.mkdtemp(prefix="orthanc-", dir=scratch))
    orthanc = Orthanc(work, node_aet="NONE", node_port=1, routed_modalities="NONE", dicomweb=True)
    orthanc.start()
    try:
        elapsed = stow_send(f"{orthanc.url}/dicom-web", None, batch, files)
        stored = orthanc.instance_count()
    finally:
        orthanc.stop()
    if stored != len(files):
        raise RuntimeError(f"Orthanc: {stored} instances for {len(files)} sent")
    shutil.rmtree(work)
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
    parser.add_argument("--batch", type=int, default=10, help="instances per STOW-RS POST (10)")
    parser.add_argument(
        "--receivers",
        nargs="+",
        choices=RECEIVERS,
        default=list(RECEIVERS),
        help="which receivers to run (default: all)",
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
        runners = {
            "ours": lambda: run_ours(files, scratch),
            "storescp": lambda: run_storescp(files, scratch),
            "storescp +B": lambda: run_storescp(files, scratch, "+B"),
            "stow": lambda: run_stow(files, scratch, args.batch),
            "orthanc-stow": lambda: run_orthanc_stow(files, scratch, args.batch),
        }
        times: dict[str, list[float]] = {name: [] for name in args.receivers}
        disk: list[float] = []
        dd: list[float] = []
        for _ in range(args.rounds):  # interleaved, so background load hits all alike
            for name in args.receivers:
                times[name].append(runners[name]())
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
    ratios = [
        ("ours", "storescp", "  (goal >= 1.2x)"),
        ("ours", "storescp +B", ""),
        ("stow", "ours", "  (STOW-RS vs C-STORE intake)"),
        ("stow", "orthanc-stow", "  (goal >= 1.0x)"),
    ]
    for a, b, goal in ratios:
        if a in rate and b in rate:
            print(f"{a} / {b}:".ljust(22) + f"{rate[a] / rate[b]:.2f}x{goal}")
    for name in ("ours", "stow"):
        if name in mbs:
            share = 100 * mbs[name] / disk_mbs
            print(f"{name} / synced disk:".ljust(22) + f"{share:.0f} %  (goal >= 60 %)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--stow-send"]:
        sys.exit(_sender_main(sys.argv[2:]))
    sys.exit(main())
