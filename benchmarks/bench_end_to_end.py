"""Time from ``storescu`` to Orthanc until the SR, SC and PM are stored there (not a test).

Starts a real Orthanc (auto-routing to the node), our node and one worker on the embedded
defaults, sends one chest CR at a time (a fresh study each time) and reports the median of
``--runs`` round trips per architecture, and where the time goes. Each round trip is cut into
consecutive stages on one clock (the wall clock of the job's timeline and of the two moments
measured here: sending, and seeing the results in Orthanc), so the stages never overlap and
their shares add up to 100 %: intake (storescu to Orthanc, Orthanc forwards, the node spools and
records), queue wait, reading and gating, model inference, occlusion heatmap, building the
result objects, and delivery plus Orthanc's indexing. The job becomes ``delivered`` only after
the C-FIND confirmation, which overlaps the end of the round trip; it is reported apart.

Speed does not depend on the weights, so each architecture runs with randomly initialised
weights in a temporary registry. Afterwards the idle worker's CPU use is measured for
``--idle-s`` seconds (its main process and pool, from ``/proc``): what the embedded broker's
polling costs while nothing arrives. ``--compare-with DIR`` first runs the same with the
services of another checkout (``git worktree add DIR <commit>``), for a before/after on one
machine in one run. Usage::

    .venv/bin/python benchmarks/bench_end_to_end.py --arch efficientnet_lite0 squeezenet1_1

The embedded broker's queue wait, before and after its wake-ups (``docs/operations.md``, "Queue
wait"); on 2026-12-06, 2 shared cores at a load average of 10-14: mean 688 -> 94 ms (median
622 -> 65 ms), idle worker 0.37 -> 0.38 % of one core over 60 s::

    git worktree add /tmp/before f8d9ab3  # the commit before the wake-ups
    DEEPCOVID_OCCLUSION_STRIDE=32 .venv/bin/python benchmarks/bench_end_to_end.py \
        --arch squeezenet1_1 --runs 10 --compare-with /tmp/before
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pydicom import dcmread  # noqa: E402

from store import JobStore  # noqa: E402
from store.jobstore import EventView  # noqa: E402
from tests.harness.factories import load_cxr, random_registry, wrap_pixels  # noqa: E402
from tests.harness.net import free_port, wait_for  # noqa: E402
from tests.harness.orthanc import Orthanc  # noqa: E402
from tests.harness.services import ServiceProcess  # noqa: E402

RESULT_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.34",
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.30",
}
IMAGE = "images/covid/figure1__covid__COVID-00001.jpg"


STAGES = ("intake", "queue", "read+gate", "inference", "heatmap", "build", "delivery+indexing")


def _utc(at: dt.datetime) -> dt.datetime:
    """A job timestamp as aware UTC (SQLite returns the store's UTC times without a zone)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


def stage_times(events: list[EventView], sent_at: float, seen_at: float) -> dict[str, float]:
    """Seconds of each of :data:`STAGES` in one round trip, consecutive on the wall clock.

    ``sent_at``/``seen_at`` are ``time.time()`` before ``storescu`` and when the results were
    first seen in Orthanc. Inference and heatmap are the worker's own timings inside
    analysing -> analysed; read+gate is the rest of that span. The stages add up to
    ``seen_at - sent_at`` exactly (each is a difference of consecutive moments), so no share
    can be negative or exceed the whole unless the clocks disagree, which is then visible.
    """
    at: dict[str, float] = {}
    for e in events:
        at.setdefault(e.state, _utc(e.at).timestamp())
    analysed = next(e for e in events if e.state == "analysed")
    inference = float(re.search(r"inference ([\d.]+) s", analysed.message or "").group(1))  # type: ignore[union-attr]
    heatmap = float(re.search(r"heatmap ([\d.]+) s", analysed.message or "").group(1))  # type: ignore[union-attr]
    return {
        "intake": at["received"] - sent_at,
        "queue": at["analysing"] - at["received"],
        "read+gate": at["analysed"] - at["analysing"] - inference - heatmap,
        "inference": inference,
        "heatmap": heatmap,
        "build": at["results_built"] - at["analysed"],
        "delivery+indexing": seen_at - at["results_built"],
    }


def stage_report(runs: list[dict[str, float]]) -> list[str]:
    """Lines of the stage table: the mean of each stage and its share of the mean round trip
    (means add up, medians do not), shares summing to 100 %."""
    n = len(runs)
    means = {stage: sum(r[stage] for r in runs) / n for stage in STAGES}
    total = sum(means.values())
    lines = [f"  stages, mean of {n} round trips ({total:.2f} s; consecutive, they add up):"]
    for stage, mean in means.items():
        share = 100 * mean / total if total > 0 else 0.0
        lines.append(f"    {stage:<18} {mean:6.2f} s  ({share:5.1f} %)")
    return lines


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its descendants."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        times[child] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(times.get(p, 0.0) for p in tree)


def idle_cpu_percent(pid: int, seconds: float) -> float:
    """Percent of one core that process tree ``pid`` uses over ``seconds`` of waiting."""
    before = tree_cpu_s(pid)
    time.sleep(seconds)
    return 100 * (tree_cpu_s(pid) - before) / seconds


def run(arch: str, runs: int, work: Path, repo: Path, idle_s: float) -> dict[str, float]:
    """One architecture's round trips with the services of checkout ``repo``; returns the
    mean queue wait and the idle worker's CPU percent (``nan`` when not measured)."""
    env = {
        **os.environ,
        "DEEPCOVID_DATA_DIR": str(work / "data"),
        "DEEPCOVID_PORT": str(free_port()),
        "DEEPCOVID_BIND_ADDRESS": "127.0.0.1",
        "DEEPCOVID_MODEL_REGISTRY_DIR": str(random_registry(work / "registry", arch)),
        "DEEPCOVID_MIN_FREE_SPACE_MB": "1",
        "DEEPCOVID_MONITORING_PORT": "0",
    }
    orthanc = Orthanc(work / "orthanc", node_aet="DEEPCOVID", node_port=int(env["DEEPCOVID_PORT"]))
    env["DEEPCOVID_DESTINATION"] = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
    orthanc.start()
    services = [
        ServiceProcess([name], env, work / f"{name}.log", cwd=repo).start()
        for name in ("node", "worker")
    ]
    try:
        echo = ["echoscu", "-aec", "DEEPCOVID", "127.0.0.1", env["DEEPCOVID_PORT"]]
        wait_for(lambda: subprocess.run(echo, capture_output=True).returncode == 0, timeout=120)
        store = JobStore(f"sqlite:///{work / 'data' / 'jobs.sqlite'}")
        pixels = load_cxr(IMAGE)
        times: list[float] = []
        stages: list[dict[str, float]] = []
        confirm: list[float] = []
        for i in range(runs + 1):  # the first run warms up the worker (model load) and is dropped
            path = work / f"cr{i}.dcm"
            wrap_pixels(pixels).save_as(path, enforce_file_format=True)
            study = str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)
            sent_at = time.time()
            t0 = time.perf_counter()
            subprocess.run(
                ["storescu", "-aec", "ORTHANC", "127.0.0.1", str(orthanc.dicom_port), str(path)],
                check=True,
                capture_output=True,
            )
            wait_for(
                lambda study=study: set(orthanc.study_sop_classes(study)) >= RESULT_CLASSES,
                timeout=600,
                interval=0.1,
                what="results in Orthanc",
            )
            elapsed = time.perf_counter() - t0
            seen_at = time.time()
            if i == 0:
                continue
            times.append(elapsed)
            job = store.list(limit=1)[0]
            wait_for(lambda job=job: store.get(job.id).state == "delivered", timeout=120)  # type: ignore[union-attr]
            events = store.events(job.id)
            stages.append(stage_times(events, sent_at, seen_at))
            delivered = next(e for e in events if e.state == "delivered")
            confirm.append(_utc(delivered.at).timestamp() - seen_at)
        median = statistics.median(times)
        where = "" if repo == REPO else f" (services of {repo})"
        print(f"\n{arch}{where}: storescu -> SR+SC+PM in Orthanc, median of {runs}: {median:.2f} s")
        print(f"  min {min(times):.2f} s, max {max(times):.2f} s")
        print("\n".join(stage_report(stages)))
        print(
            f"  afterwards (overlaps the end, not counted): the job is marked delivered "
            f"{statistics.median(confirm):+.2f} s after the results were seen (C-FIND "
            "confirmation; negative when our 0.1 s poll saw them late)"
        )
        queue = [s["queue"] for s in stages]
        print(
            f"  queue wait: median {1000 * statistics.median(queue):.0f} ms, "
            f"max {1000 * max(queue):.0f} ms"
        )
        idle = float("nan")
        if idle_s > 0:
            worker = services[1].proc
            assert worker is not None
            time.sleep(2.0)  # the last job's confirmation is done
            idle = idle_cpu_percent(worker.pid, idle_s)
            print(f"  idle worker: {idle:.2f} % of one core over {idle_s:.0f} s")
        return {"queue": statistics.mean(queue), "idle": idle}
    finally:
        for svc in services:
            svc.stop()
        orthanc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["efficientnet_lite0", "squeezenet1_1"])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--idle-s", type=float, default=60.0, help="0: not measured")
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="DIR",
        help="another checkout whose services run first (before), then this one's (after)",
    )
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.1f} (1 min average)")
    for arch in args.arch:
        results = {}
        for repo in ([args.compare_with.resolve()] if args.compare_with else []) + [REPO]:
            with tempfile.TemporaryDirectory() as tmp:
                results[repo] = run(arch, args.runs, Path(tmp), repo, args.idle_s)
        if args.compare_with:
            old, new = results[args.compare_with.resolve()], results[REPO]
            print(
                f"\n{arch}: mean queue wait {1000 * old['queue']:.0f} -> "
                f"{1000 * new['queue']:.0f} ms ({old['queue'] / new['queue']:.1f}x shorter); "
                f"idle worker {old['idle']:.2f} -> {new['idle']:.2f} % of one core"
            )
    print(f"load after: {os.getloadavg()[0]:.1f} (1 min average)")


if __name__ == "__main__":
    main()
