"""Cost of the study-level result (not a test): one study's build, and the watcher's poll.

On a temporary SQLite job store with a random model registry: (1) ``issue_study_result`` for a
study of ``--images`` spooled frontal films (read the headers, build the study SR and the KOS,
write them, put them in the outbox, hand the outcome to ``worker.notify``; no RIS configured),
median of ``--runs`` studies; (2) one poll of the watcher (``Studies.settled``) over a store
holding ``--studies`` answered studies of 2 images each, all changed within the watcher's
lookback (24 h: the worst case, a day's studies), median of 20 polls. The time from a
study's last change to its result being queued is ``study_settle_s`` + up to one poll interval
(a quarter of the settle time, 0.5 to 5 s) + (1). Usage (figures in docs/operations.md)::

    .venv/bin/python benchmarks/bench_study_result.py --runs 20 --images 2 --studies 1000
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402
from sqlalchemy import update  # noqa: E402

from common.settings import Settings  # noqa: E402
from common.states import JobState  # noqa: E402
from store import JobStore  # noqa: E402
from store.migrate import upgrade  # noqa: E402
from store.schema import Job  # noqa: E402
from store.studies import Studies  # noqa: E402
from tests.harness.factories import random_registry, spool_dataset, wrap_pixels  # noqa: E402
from worker.study.watcher import issue_study_result  # noqa: E402


def make_study(store: JobStore, spool: Path, images: int, version: str, size: int = 1024) -> str:
    """A settled study of ``images`` analysed ``size`` x ``size`` CR films; its UID."""
    study = generate_uid()
    for n in range(images):
        ds = wrap_pixels(np.zeros((size, size), dtype=np.uint16), study_instance_uid=study)
        job = spool_dataset(store, ds, spool / f"{ds.SOPInstanceUID}.dcm")
        store.set_state(
            job,
            JobState.DELIVERED,
            "bench",
            modality="CR",
            rows=size,
            columns=size,
            finding="present" if n == 0 else "absent",
            probability=0.8 if n == 0 else 0.2,
            threshold=0.5,
            model_version=version,
        )
    with store.session() as s:
        old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        s.execute(update(Job).where(Job.study_instance_uid == study).values(updated_at=old))
    return study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--studies", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        registry = random_registry(tmp / "registry")
        settings = Settings(data_dir=tmp / "data", model_registry_dir=registry)
        settings.storage.ensure_dirs()
        upgrade(settings.storage.db_url)
        store = JobStore(settings.storage.db_url)
        version = "v0001"
        build = []
        for _ in range(args.runs + 1):
            study = make_study(store, settings.storage.spool, args.images, version)
            last = Studies(store).jobs(study)[-1].updated_at
            start = time.perf_counter()
            assert issue_study_result(store, settings, study, last) is not None
            build.append((time.perf_counter() - start) * 1000)
        build = build[1:]  # the first loads the model card (and torch)
        for _ in range(max(args.studies - args.runs - 1, 0)):
            study = make_study(store, settings.storage.spool, 2, version, size=64)
            issue_study_result(store, settings, study, Studies(store).jobs(study)[-1].updated_at)
        polls = []
        for _ in range(20):
            start = time.perf_counter()
            Studies(store).settled(settle_s=settings.worker.study_settle_s)
            polls.append((time.perf_counter() - start) * 1000)
        print(
            f"study result of {args.images} image(s): median {statistics.median(build):.1f} ms "
            f"(min {min(build):.1f}, max {max(build):.1f}; {args.runs} studies)"
        )
        print(
            f"watcher poll over {max(args.studies, args.runs + 1)} answered studies: median "
            f"{statistics.median(polls):.1f} ms (min {min(polls):.1f}, max {max(polls):.1f})"
        )


if __name__ == "__main__":
    main()
