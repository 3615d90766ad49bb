"""Load: concurrent ``storescu`` senders against the node and two workers (not a test).

Starts our node and ``--workers`` worker processes (embedded broker and SQLite job store by
default; ``--redis`` for a private redis-server as broker, ``--postgres`` for a fresh database on
the local PostgreSQL server as job store, dropped afterwards; ``--orthanc`` to deliver the
results to a real Orthanc), sends ``--count`` chest CRs (real radiographs of the manifest's test
split, fresh UIDs) from ``--senders`` concurrent ``storescu`` processes, and waits until every
job is final. Then it checks that every instance sent has a job, that all reached ``delivered``,
that none was received or delivered twice (the jobs' timelines) and, with Orthanc, that each
result object arrived exactly once (Orthanc logs every reception, so a duplicate shows even
though it keeps one copy), and prints:

- intake rate (instances acknowledged per second of sending) and end-to-end throughput
  (instances delivered per second, first receipt to last delivery);
- receipt-to-delivery latency p50 / p95 / max, from the jobs' timelines;
- the peak resident memory (VmHWM) of the node and of each worker (Celery main process plus
  its pool child), read from ``/proc``;
- the machine's load average before and after (the figures depend on it).

The model is a randomly initialised ``--arch`` (speed does not depend on the weights). Usage::

    .venv/bin/python benchmarks/bench_load.py                       # 500 instances, embedded
    .venv/bin/python benchmarks/bench_load.py --count 500 --redis --postgres --orthanc --stride 16

``--postgres`` connects with ``DEEPCOVID_TEST_PG_URL`` (an administrative URL, default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) to create and drop its database.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pydicom.uid import generate_uid  # noqa: E402

from store import JobStore, JobView  # noqa: E402
from tests.harness.cluster import Cluster, sop_uid  # noqa: E402
from tests.harness.factories import CXR_DIR, load_cxr, random_registry, wrap_pixels  # noqa: E402
from tests.harness.net import free_port  # noqa: E402
from tests.harness.pgdatabase import fresh_pg_database  # noqa: E402
from tests.harness.redisserver import RedisServer  # noqa: E402
from tests.harness.services import ServiceProcess  # noqa: E402
from worker.results import ResultObjects  # noqa: E402


def split_images(limit: int = 24) -> list[str]:
    """Relative paths of the first ``limit`` images of the manifest's test split."""
    import csv

    with (CXR_DIR / "manifest.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("split") == "test"]
    return [r["path"] for r in rows[:limit]]


def make_instances(count: int, out: Path) -> list[Path]:
    """``count`` CR files cycling over real radiographs, each with fresh UIDs."""
    out.mkdir(parents=True)
    images = [load_cxr(p) for p in split_images()]
    paths = []
    for i in range(count):
        ds = wrap_pixels(images[i % len(images)], sop_instance_uid=generate_uid())
        path = out / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, as ``uptime`` prints them."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def storescu(port: int, files: list[Path], log: Path) -> int:
    """One sender: every file in one association; returns storescu's exit code."""
    cmd = ["storescu", "-aet", "MODALITY", "-aec", "DEEPCOVID", "127.0.0.1", str(port)]
    with log.open("w") as fh:
        res = subprocess.run([*cmd, *map(str, files)], stdout=fh, stderr=subprocess.STDOUT)
    return res.returncode


@contextmanager
def fleet(
    args: argparse.Namespace, work: Path, registry: Path, database_url: str | None = None
) -> Iterator[tuple[Cluster, dict[str, int]]]:
    """The node and ``args.workers`` workers (with a private redis-server and Orthanc when
    ``args.redis`` / ``args.orthanc``), data under ``work/data``; yields the cluster and the
    process roots to watch (node, worker1, ...). Everything is stopped afterwards."""
    env = {
        "DEEPCOVID_DATA_DIR": str(work / "data"),
        "DEEPCOVID_MODEL_REGISTRY_DIR": str(registry),
        "DEEPCOVID_PORT": str(free_port()),
        "DEEPCOVID_BIND_ADDRESS": "127.0.0.1",
        "DEEPCOVID_MIN_FREE_SPACE_MB": "50",
        "DEEPCOVID_TORCH_THREADS": str(args.torch_threads),
        "DEEPCOVID_OCCLUSION_STRIDE": str(args.stride),
        "DEEPCOVID_LOG_LEVEL": "WARNING",
    }
    if database_url is not None:
        env["DEEPCOVID_DATABASE_URL"] = database_url
    services: list[ServiceProcess] = []
    redis: RedisServer | None = None
    cluster = Cluster(env, work, services)
    try:
        if args.redis:
            redis = RedisServer(work)
            redis.start()
            cluster.env["DEEPCOVID_BROKER_URL"] = redis.url
        if args.orthanc:
            cluster.with_orthanc()
        node = cluster.start_node()
        workers = [cluster.start_worker() for _ in range(args.workers)]
        roots = {"node": node.proc.pid}  # type: ignore[union-attr]
        roots.update({f"worker{i + 1}": w.proc.pid for i, w in enumerate(workers)})  # type: ignore[union-attr]
        yield cluster, roots
    finally:
        for svc in reversed(services):
            svc.stop()
        if cluster.orthanc is not None:
            cluster.orthanc.stop()
        if redis is not None:
            redis.stop()


# --- memory ------------------------------------------------------------------------------
def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from ``/proc/*/stat``)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


class MemoryWatch:
    """Samples the summed RSS of each process tree and keeps each process's VmHWM."""

    def __init__(self, roots: dict[str, int], interval_s: float = 0.5) -> None:
        self.roots = roots
        self.peak_sum_kb = dict.fromkeys(roots, 0)
        self.hwm_kb: dict[str, dict[int, int]] = {name: {} for name in roots}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)
        self._thread.start()

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.sample()

    def sample(self) -> None:
        for name, root in self.roots.items():
            pids = process_tree(root)
            self.peak_sum_kb[name] = max(
                self.peak_sum_kb[name], sum(_status_kb(p, "VmRSS") for p in pids)
            )
            for p in pids:
                self.hwm_kb[name][p] = max(self.hwm_kb[name].get(p, 0), _status_kb(p, "VmHWM"))

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        self._thread.join()


# --- figures -----------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Outcome:
    """What the job store says became of the instances sent."""

    jobs: dict[str, JobView]
    """SOP Instance UID -> job, for the sent instances that have one."""
    missing: int
    """Sent and acknowledged, but without a job."""
    received_twice: int
    delivered_twice: int
    """Jobs whose timeline says ``delivered`` more than once."""
    latencies: list[float] = field(default_factory=list)
    """Receipt-to-delivery seconds of each delivered job."""
    first_receipt: float = float("nan")
    last_delivery: float = float("nan")


def outcome(store: JobStore, sent: Iterable[str]) -> Outcome:
    """Look up every sent instance's job and timeline."""
    everything = {j.sop_instance_uid: j for j in store.list(limit=1_000_000)}
    uids = list(sent)
    jobs = {u: everything[u] for u in uids if u in everything}
    result = Outcome(
        jobs=jobs,
        missing=len(uids) - len(jobs),
        received_twice=sum(1 for j in jobs.values() if j.times_received > 1),
        delivered_twice=0,
    )
    firsts, lasts = [], []
    for job in jobs.values():
        events = store.events(job.id)
        deliveries = [e.at for e in events if e.state == "delivered"]
        result.delivered_twice += len(deliveries) > 1
        if not deliveries:
            continue
        received = next(e.at for e in events if e.state == "received")
        result.latencies.append((deliveries[-1] - received).total_seconds())
        firsts.append(received.timestamp())
        lasts.append(deliveries[-1].timestamp())
    if firsts:
        result.first_receipt, result.last_delivery = min(firsts), max(lasts)
    return result


def orthanc_check(cluster: Cluster, instances: int) -> bool:
    """Print what Orthanc holds; True when it has every result object of ``instances``
    exactly once (stored, and received once each)."""
    receptions = cluster.receptions()
    twice = sum(1 for n in receptions.values() if n > 1)
    assert cluster.orthanc is not None
    stored = cluster.orthanc.instance_count()
    expected = len(fields(ResultObjects)) * instances
    print(f"orthanc             {stored} objects stored (expected {expected}), "
          f"{sum(receptions.values())} receptions, "
          f"{twice} objects received more than once")  # fmt: skip
    return twice == 0 and stored == expected and len(receptions) == expected


def run(args: argparse.Namespace) -> int:
    if not args.postgres:
        return run_on(args, None)
    with fresh_pg_database("deepcovid_bench") as url:
        return run_on(args, url)


def run_on(args: argparse.Namespace, database_url: str | None) -> int:
    load_before = load_average()
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    print(f"work folder: {work}; load average {load_before}", flush=True)
    registry = random_registry(work / "registry", args.arch)
    files = make_instances(args.count, work / "send")
    store = JobStore(database_url or f"sqlite:///{work / 'data' / 'jobs.sqlite'}")
    with fleet(args, work, registry, database_url) as (cluster, roots):
        memory = MemoryWatch(roots)

        chunks = [files[i :: args.senders] for i in range(args.senders)]
        codes: list[int] = [0] * args.senders
        t_send = time.monotonic()
        threads = [
            threading.Thread(
                target=lambda i=i: codes.__setitem__(
                    i, storescu(cluster.port, chunks[i], work / f"storescu{i}.log")
                )
            )
            for i in range(args.senders)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        send_s = time.monotonic() - t_send
        print(f"sent {len(files)} instances from {args.senders} senders in {send_s:.1f} s "
              f"(storescu exit codes {codes})", flush=True)  # fmt: skip

        deadline = time.monotonic() + args.timeout
        last_report = 0.0
        while True:
            counts = store.counts()
            final = sum(counts.get(s, 0) for s in ("delivered", "rejected", "failed"))
            if final >= len(files) and sum(counts.values()) >= len(files):
                break
            if time.monotonic() > deadline:
                print(f"timed out: {counts}", flush=True)
                return 1
            if time.monotonic() - last_report > 30:
                print(f"  {time.monotonic() - t_send:6.0f} s  {counts}", flush=True)
                last_report = time.monotonic()
            time.sleep(1)
        memory.stop()
        load_after = load_average()

        counts = store.counts()
        seen = outcome(store, (sop_uid(p) for p in files))
        lat = seen.latencies
        span = seen.last_delivery - seen.first_receipt
        print("\n== load benchmark ==")
        print(f"instances           {len(files)} ({args.senders} concurrent storescu senders)")
        print(f"workers             {args.workers} processes, torch threads {args.torch_threads}")
        print(f"broker              {'redis-server' if args.redis else 'embedded (SQLite)'}")
        print(f"job store           {'PostgreSQL' if database_url else 'SQLite'}")
        print(f"destination         {'Orthanc' if args.orthanc else 'results folder'}")
        print(f"model               {args.arch} (random weights), occlusion stride {args.stride}")
        print(f"final states        {counts}; lost {seen.missing} (sent, without a job)")
        print(f"twice               {seen.received_twice} received twice, "
              f"{seen.delivered_twice} delivered twice (job timelines)")  # fmt: skip
        print(f"intake rate         {len(files) / send_s:.1f} instances/s")
        print(f"throughput          {len(files) / span:.2f} instances/s "
              f"({span:.0f} s first receipt to last delivery)")  # fmt: skip
        print(f"receipt->delivered  p50 {percentile(lat, 0.5):.1f} s, "
              f"p95 {percentile(lat, 0.95):.1f} s, max {max(lat):.1f} s")  # fmt: skip
        for name in roots:
            hwm = memory.hwm_kb[name]
            detail = " + ".join(f"{kb / 1024:.0f}" for kb in hwm.values())
            print(f"peak RSS {name:<10} {memory.peak_sum_kb[name] / 1024:.0f} MiB sampled sum; "
                  f"VmHWM per process {detail} MiB")  # fmt: skip
        print(f"load average        before {load_before}; after {load_after} (1, 5, 15 min)")
        ok = seen.missing == 0 and counts == {"delivered": len(files)}
        ok = ok and seen.received_twice == 0 and seen.delivered_twice == 0
        if args.orthanc:
            ok = orthanc_check(cluster, len(files)) and ok
        print("RESULT", "OK: all delivered, none lost" if ok else "FAILED")
        return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=500, help="instances in all")
    parser.add_argument("--senders", type=int, default=4, help="concurrent storescu processes")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--redis", action="store_true", help="a private redis-server as broker")
    parser.add_argument(
        "--postgres", action="store_true", help="a fresh PostgreSQL database as job store"
    )
    parser.add_argument("--orthanc", action="store_true", help="deliver to a real Orthanc")
    parser.add_argument("--arch", default="squeezenet1_1", help="model architecture")
    parser.add_argument("--stride", type=int, default=8, help="occlusion stride (default 8)")
    parser.add_argument("--torch-threads", type=int, default=1, help="per worker process")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds to wait for all")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
