"""Benchmark of the view check (:mod:`models.viewcheck`): milliseconds per image on one thread.

What the worker pays per image before the classifier: the input (block average, resize,
standardise) and the network, from the 2-D float [0, 1] image ``dicom_to_array`` gives. Sizes:
a 512 px JPEG of ``shared/data/cxr`` and typical detector sizes (CR 2500 x 2000, DX 3000 x 3000).

Run (CPU, 1 thread)::

    .venv/bin/python benchmarks/bench_viewcheck.py

Timings are the minimum and the median over repeats (the machine is shared; the minimum is the
least disturbed run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.viewcheck import load_view_check, network_input  # noqa: E402

SIZES = ((512, 512), (2500, 2000), (3000, 3000))


def time_ms(fn: object, repeats: int) -> tuple[float, float]:
    """Minimum and median milliseconds of ``fn()`` over ``repeats`` runs (after one warm-up)."""
    assert callable(fn)
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return min(times), statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Print ms/image of the input step, the network and the whole check per image size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    check = load_view_check()
    rng = np.random.default_rng(0)
    print(f"view check {check.version}, {args.threads} thread(s), torch {torch.__version__}")
    print("| image | input (min / median ms) | network | whole check |")
    print("| --- | --- | --- | --- |")
    for rows, cols in SIZES:
        image = rng.random((rows, cols), dtype=np.float32)
        x = network_input(image, check.size)[None]
        inp = time_ms(lambda: network_input(image, check.size), args.repeats)  # noqa: B023
        net = time_ms(lambda: check.probabilities(x), args.repeats)  # noqa: B023
        whole = time_ms(lambda: check(image), args.repeats)  # noqa: B023
        cells = " | ".join(f"{lo:.1f} / {med:.1f}" for lo, med in (inp, net, whole))
        print(f"| {rows} x {cols} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
