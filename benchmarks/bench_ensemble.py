"""What an ensemble version costs the worker per image: inference and the occlusion heatmap.

Builds an ensemble of ``--members`` randomly initialised networks (speed does not depend on the
weights) in a temporary registry, and runs the worker's own ``analyse_image`` on one manifest
chest film with the setting ``heatmap_members`` at each value of ``--map-members`` (0: all),
``--repeats`` times each (interleaved), after one warm-up. The heatmap is the ensemble's
incremental occlusion map (the mean of the mapped members' maps), at the service's defaults
(N = 32, S = 8, gray fill).
Prints the minimum and the median seconds per stage, and the load average seen (the CPU here
is shared: compare minima taken in one run). Usage::

    .venv/bin/python benchmarks/bench_ensemble.py --arch efficientnet_lite0 --members 5 \\
        --map-members 1 5 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common.settings import Settings  # noqa: E402
from models.inference import Predictor  # noqa: E402
from tests.harness.factories import load_cxr, random_ensemble_registry  # noqa: E402
from worker.analysis import Analysis, analyse_image  # noqa: E402

IMAGE = "images/covid/figure1__covid__COVID-00001.jpg"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--map-members", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engine", default="auto", help="inference engine (auto: onnx on CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    image = load_cxr(IMAGE).astype(np.float32) / 255.0
    with tempfile.TemporaryDirectory() as tmp:
        root = random_ensemble_registry(
            Path(tmp) / "registry", args.arch, members=args.members, input_size=224
        )
        predictor = Predictor.from_registry(
            root, device="cpu", engine=args.engine, threads=args.threads
        )
        print(
            f"{args.arch}, ensemble of {args.members}, engine {predictor.engine}, "
            f"{args.threads} threads, image {image.shape}, N=32 S=8 gray"
        )
        settings = {
            count: Settings(
                data_dir=Path(tmp) / "data",
                model={"registry_dir": root, "heatmap_members": count},
            )
            for count in args.map_members
        }
        for count in args.map_members:
            analyse_image(image, predictor, settings[count])  # warm-up (fold caches, ONNX)
        # Interleaved (1, 5, 1, 5, ...): load from other jobs hits every count alike.
        runs: dict[int, list[Analysis]] = {count: [] for count in args.map_members}
        loads = []
        for _ in range(args.repeats):
            for count in args.map_members:
                runs[count].append(analyse_image(image, predictor, settings[count]))
                loads.append(os.getloadavg()[0])
        for done in runs.values():
            heat = [r.timings["heatmap_s"] for r in done]
            infer = [r.timings["inference_s"] for r in done]
            print(
                f"  map with {done[0].heatmap_members} member(s): heatmap "
                f"min {min(heat):.2f} s, median {statistics.median(heat):.2f} s; inference "
                f"({args.members} members) min {min(infer):.3f} s, median "
                f"{statistics.median(infer):.3f} s"
            )
        print(f"  load average (1 min) during the runs: {min(loads):.1f} - {max(loads):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
