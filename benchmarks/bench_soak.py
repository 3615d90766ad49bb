"""Soak: a steady stream of instances for an hour, watching for slow growth (not a test).

Starts our node and ``--workers`` worker processes like ``bench_load.py`` (embedded broker by
default, ``--redis`` for a private redis-server, ``--orthanc`` to deliver to a real Orthanc) and
sends one chest CR (a real radiograph of the manifest's test split, fresh UIDs) every
``1 / --rate`` seconds, one ``storescu`` association each, for ``--duration`` seconds. Every
``--interval`` seconds it samples:

- the resident memory (VmRSS) and open file descriptors (``/proc/PID/fd``) of the node and of
  each worker's Celery main process and its pool children (summed over the children, whose
  PIDs change when Celery replaces one);
- the job store's size on disk (SQLite file with its WAL), the embedded broker's, the spool's
  and the results folder's.

After the last send it waits until every job is final, checks that every sent instance has a
job, that all are ``delivered``, that none was received or delivered twice (and, with Orthanc,
that each result object arrived exactly once), and writes ``soak.csv`` and ``soak.png`` (one
panel per quantity) into ``--out``. It prints, per quantity, the value at the end of the warm-up
(``--warmup``, 10 minutes) and at the end, and the least-squares slope after the warm-up, so
"no growth after the first 10 minutes" can be read off. The spool, results and job store grow
with every instance by design (nothing is purged unless ``retention_days`` says so): for them
the figure to watch is the bytes per instance received, which must stay flat.

Usage::

    .venv/bin/python benchmarks/bench_soak.py --rate 0.25 --stride 16 --out /tmp/soak
    .venv/bin/python benchmarks/bench_soak.py --duration 600 --rate 0.2 --redis --orthanc
    .venv/bin/python benchmarks/bench_soak.py --replot /tmp/soak/soak.csv   # redraw only
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_load import (  # noqa: E402
    _status_kb,
    fleet,
    orthanc_check,
    outcome,
    percentile,
    process_tree,
    split_images,
)
from pydicom.uid import generate_uid  # noqa: E402

from store import FINAL_STATES, JobStore  # noqa: E402
from tests.harness.factories import load_cxr, random_registry, wrap_pixels  # noqa: E402


# --- what is sampled -----------------------------------------------------------------------
def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid`` (0 if it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (or of ``path`` itself)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def sqlite_bytes(db: Path) -> int:
    """A SQLite database's size with its WAL and shared-memory files."""
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())


class Sampler:
    """One row of figures per call: RSS and FDs per process group, sizes on disk, job counts."""

    def __init__(self, roots: dict[str, int], data: Path, store: JobStore) -> None:
        self.roots = roots
        self.data = data
        self.store = store
        self.rows: list[dict[str, float]] = []

    def columns(self) -> list[str]:
        cols = ["t_s", "sent", "jobs", "final", "delivered"]
        for name in self.roots:
            parts = ["main"] if name == "node" else ["main", "pool"]
            for part in parts:
                cols += [f"{name}_{part}_rss_mib", f"{name}_{part}_fds"]
        cols += ["store_mib", "broker_mib", "spool_mib", "results_mib"]
        return cols

    def sample(self, t_s: float, sent: int) -> dict[str, float]:
        row: dict[str, float] = {"t_s": round(t_s, 1), "sent": sent}
        counts = self.store.counts()
        row["jobs"] = sum(counts.values())
        row["final"] = sum(n for s, n in counts.items() if s in FINAL_STATES)
        row["delivered"] = counts.get("delivered", 0)
        for name, root in self.roots.items():
            pids = process_tree(root)
            # The node with anything it started; a worker's Celery main process, its pool.
            groups = {"main": pids} if name == "node" else {"main": [root], "pool": pids[1:]}
            for part, members in groups.items():
                rss = sum(_status_kb(p, "VmRSS") for p in members) / 1024
                row[f"{name}_{part}_rss_mib"] = round(rss, 1)
                row[f"{name}_{part}_fds"] = sum(fd_count(p) for p in members)
        mib = 1024 * 1024
        row["store_mib"] = round(sqlite_bytes(self.data / "jobs.sqlite") / mib, 3)
        row["broker_mib"] = round(sqlite_bytes(self.data / "broker.sqlite") / mib, 3)
        row["spool_mib"] = round(tree_bytes(self.data / "spool") / mib, 2)
        row["results_mib"] = round(tree_bytes(self.data / "results") / mib, 2)
        self.rows.append(row)
        return row


def slope_per_hour(rows: list[dict[str, float]], key: str, after_s: float) -> float:
    """Least-squares slope of ``key`` against time, per hour, over the rows after ``after_s``."""
    pts = [(r["t_s"], r[key]) for r in rows if r["t_s"] >= after_s]
    if len(pts) < 2:
        return 0.0
    mx = sum(t for t, _ in pts) / len(pts)
    my = sum(v for _, v in pts) / len(pts)
    var = sum((t - mx) ** 2 for t, _ in pts)
    if var == 0:
        return 0.0
    return sum((t - mx) * (v - my) for t, v in pts) / var * 3600


def write_csv(path: Path, cols: list[str], rows: list[dict[str, float]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, float]]]:
    """The columns and rows of a CSV this bench wrote."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [{k: float(v) for k, v in row.items()} for row in reader]
        return list(reader.fieldnames or []), rows


def plot(
    path: Path, cols: list[str], rows: list[dict[str, float]], title: str, warmup_s: float
) -> None:
    """One panel per quantity against minutes: RSS (small processes, pool children), open
    FDs, job store and broker, spool and results, bytes on disk per job, jobs not yet final."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["t_s"] / 60 for r in rows]
    rss = [c for c in cols if c.endswith("_rss_mib")]
    series: dict[str, list[float]] = {c: [r[c] for r in rows] for c in cols}
    # The job store and spool hold every job received; results, every job delivered.
    for col, per in (("store", "jobs"), ("spool", "jobs"), ("results", "delivered")):
        series[f"{col} per job"] = [
            r[f"{col}_mib"] * 1024 / r[per] if r[per] else float("nan") for r in rows
        ]
    series["not final"] = [r["jobs"] - r["final"] for r in rows]
    panels = [
        ("resident memory, node and Celery main (MiB)", [c for c in rss if "_pool_" not in c]),
        ("resident memory, pool children (MiB)", [c for c in rss if "_pool_" in c]),
        ("open file descriptors", [c for c in cols if c.endswith("_fds")]),
        ("jobs received, not yet final", ["not final"]),
        ("job store and broker on disk (MiB)", ["store_mib", "broker_mib"]),
        ("spool and results on disk (MiB)", ["spool_mib", "results_mib"]),
        ("on disk per job (KiB)", ["store per job", "spool per job", "results per job"]),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(14, 6), dpi=64, sharex=True)
    flat = [ax for line in axes for ax in line]
    for ax, (label, names) in zip(flat, panels, strict=False):
        for name in names:
            short = name.removesuffix("_rss_mib").removesuffix("_fds").removesuffix("_mib")
            ax.plot(minutes, series[name], marker=".", markersize=3, label=short)
        ax.axvline(warmup_s / 60, color="grey", linestyle=":", linewidth=1)
        ax.set_title(label, fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    flat[-1].axis("off")
    flat[-1].text(
        0.0,
        0.5,
        "dotted line: end of the warm-up;\ngrowth counts after it",
        fontsize=9,
        transform=flat[-1].transAxes,
    )
    for ax in axes[1]:
        ax.set_xlabel("minutes")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --- the run -------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    out = Path(args.out) if args.out else work
    out.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}; output: {out}", flush=True)
    registry = random_registry(work / "registry", args.arch)
    images = [load_cxr(p) for p in split_images()]
    data = work / "data"
    with fleet(args, work, registry) as (cluster, roots):
        store = JobStore(f"sqlite:///{data / 'jobs.sqlite'}")
        sampler = Sampler(roots, data, store)
        cols = sampler.columns()
        csv_path, png_path = out / "soak.csv", out / "soak.png"
        title = (
            f"soak: {args.rate:g} instances/s for {args.duration / 60:.0f} min, "
            f"{args.workers} workers, {'Redis' if args.redis else 'embedded broker'}, "
            f"{'Orthanc' if args.orthanc else 'results folder'}, stride {args.stride}"
        )

        sent: dict[str, int] = {}  # SOP Instance UID -> storescu exit code
        send_dir = work / "send"
        send_dir.mkdir()
        t0 = time.monotonic()
        sampler.sample(0.0, 0)
        next_sample = args.interval
        i = 0
        while True:
            now = time.monotonic() - t0
            if now >= args.duration:
                break
            if now >= next_sample:
                row = sampler.sample(now, len(sent))
                write_csv(csv_path, cols, sampler.rows)
                print(
                    f"  {now / 60:5.1f} min  sent {len(sent)}  final {row['final']:.0f}  "
                    f"node {row['node_main_rss_mib']:.0f} MiB / {row['node_main_fds']:.0f} fds",
                    flush=True,
                )
                next_sample += args.interval
            due = i / args.rate
            if now < due:
                time.sleep(min(due - now, 1.0))
                continue
            uid = generate_uid()
            path = send_dir / f"{i:06d}.dcm"
            wrap_pixels(images[i % len(images)], sop_instance_uid=uid).save_as(
                path, enforce_file_format=True
            )
            cmd = ["storescu", "-aet", "MODALITY", "-aec", "DEEPCOVID", "127.0.0.1"]
            res = subprocess.run([*cmd, str(cluster.port), str(path)], capture_output=True)
            sent[uid] = res.returncode
            path.unlink()
            i += 1
        send_s = time.monotonic() - t0
        print(f"sent {len(sent)} instances in {send_s:.0f} s; waiting for the rest", flush=True)

        deadline = time.monotonic() + args.drain_timeout
        while True:
            jobs = {j.sop_instance_uid: j for j in store.list(limit=1_000_000)}
            if all(u in jobs and jobs[u].state in FINAL_STATES for u in sent):
                break
            if time.monotonic() > deadline:
                print("timed out waiting for the last jobs", flush=True)
                break
            if time.monotonic() - t0 >= next_sample:
                sampler.sample(time.monotonic() - t0, len(sent))
                next_sample += args.interval
            time.sleep(2)
        end = sampler.sample(time.monotonic() - t0, len(sent))
        write_csv(csv_path, cols, sampler.rows)
        plot(png_path, cols, sampler.rows, title, args.warmup)

        # --- outcome --------------------------------------------------------------------
        refused = sum(1 for code in sent.values() if code != 0)
        seen = outcome(store, sent)
        states = Counter(job.state for job in seen.jobs.values())
        lat = seen.latencies

        print("\n== soak ==")
        print(f"setup               {title}")
        print(f"sent                {len(sent)} instances in {send_s:.0f} s "
              f"({len(sent) / send_s:.3f}/s); storescu failures {refused}")  # fmt: skip
        print(f"final states        {dict(states)}; without a job {seen.missing}")
        print(f"received twice      {seen.received_twice}; "
              f"delivered twice {seen.delivered_twice}")  # fmt: skip
        if lat:
            print(f"receipt->delivered  p50 {percentile(lat, 0.5):.1f} s, "
                  f"p95 {percentile(lat, 0.95):.1f} s, max {max(lat):.1f} s")  # fmt: skip
        rows = sampler.rows
        at_warmup = min(rows, key=lambda r: abs(r["t_s"] - args.warmup))
        print(f"{'quantity':<22} {'at warm-up':>11} {'at end':>10} {'slope/h after':>14}")
        for col in cols[5:]:
            print(f"{col:<22} {at_warmup[col]:>11.1f} {end[col]:>10.1f} "
                  f"{slope_per_hour(rows, col, args.warmup):>+14.2f}")  # fmt: skip
        for col, of in (("store_mib", "jobs"), ("spool_mib", "jobs"), ("results_mib", "delivered")):
            per = [r[col] / r[of] * 1024 for r in rows if r[of]]
            if per:
                after = [r[col] / r[of] * 1024 for r in rows if r[of] and r["t_s"] >= args.warmup]
                print(f"{col} per job (KiB)   first {per[0]:.0f}, at warm-up "
                      f"{after[0] if after else 0:.0f}, last {per[-1]:.0f}")  # fmt: skip
        ok = not seen.missing and refused == 0 and states == Counter({"delivered": len(sent)})
        ok = ok and seen.received_twice == 0 and seen.delivered_twice == 0
        if args.orthanc:
            ok = orthanc_check(cluster, len(sent)) and ok
        print(f"wrote {csv_path} and {png_path}")
        print("RESULT", "OK: all delivered, none lost, none twice" if ok else "FAILED")
        return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3600, help="seconds of sending")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.25,
        help="instances per second (default 0.25: about half the two workers' throughput "
        "measured by bench_load.py at stride 16 on the 2-core development machine)",
    )
    parser.add_argument("--interval", type=float, default=60, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=600, help="seconds before growth counts")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--redis", action="store_true", help="a private redis-server as broker")
    parser.add_argument("--orthanc", action="store_true", help="deliver to a real Orthanc")
    parser.add_argument("--arch", default="squeezenet1_1", help="model architecture")
    parser.add_argument("--stride", type=int, default=8, help="occlusion stride (default 8)")
    parser.add_argument("--torch-threads", type=int, default=1, help="per worker process")
    parser.add_argument("--drain-timeout", type=float, default=1800, help="seconds to wait")
    parser.add_argument("--out", help="folder for soak.csv and soak.png (default: work folder)")
    parser.add_argument("--replot", help="only redraw the plot from this soak.csv")
    parser.add_argument("--title", help="the plot's title with --replot")
    args = parser.parse_args()
    if args.replot:
        csv_path = Path(args.replot)
        png_path = Path(args.out) / "soak.png" if args.out else csv_path.with_suffix(".png")
        cols, rows = read_csv(csv_path)
        plot(png_path, cols, rows, args.title or f"soak ({csv_path})", args.warmup)
        print(f"wrote {png_path}")
        return 0
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
