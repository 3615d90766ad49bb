"""Train the view check (:mod:`models.viewcheck`) and measure it on images it never saw.

Data: the 98 non-frontal images of ``shared/data/views`` (45 laterals; 37 axial and 16 coronal CT
images, class ``other``) and the frontal films of ``shared/data/cxr`` (class ``frontal``).

Held out:
- frontal films: the manifest's ``val`` split chooses nothing but is reported, its ``test`` split
  (patient-disjoint) is reported; training sees the ``train`` split only;
- views: grouped k-fold by patient (:func:`view_folds`: patients ordered by a hash of their id
  within each class and dealt round-robin into ``--folds`` folds, so a patient's images are all
  in one fold). One network per fold is trained on the other folds; every view image is thus
  predicted once by a network that never saw it or its patient (pooled out-of-fold figures).

The shipped network is the fold-0 network: its held-out images (fold 0) are listed in the card,
so a test can check the shipped weights on images they were not trained on.

Training: each image cached once on the network's grid (:func:`models.viewcheck.to_grid`),
batches drawn with equal weight per class (the views are few: they are oversampled) and
augmented per batch: a random affine (rotation, scale, aspect, shift, horizontal flip), gamma,
contrast, brightness, blur and noise, then standardised as inference does. Loss: cross-entropy
with label smoothing. A fixed number of steps; no checkpoint is chosen on held-out images.
Held-out images go through the inference path (:class:`models.viewcheck.ViewCheck` on the
image at its own size).

Run (2 CPU cores, about 1 minute per fold)::

    .venv/bin/python -m training.viewcheck_train
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models.viewcheck import (
    CLASSES,
    FOLDER,
    FRONTAL,
    FRONTAL_THRESHOLD,
    LATERAL,
    OTHER,
    SIZE,
    WIDTHS,
    ViewCheck,
    ViewNet,
    standardise,
    to_grid,
)
from training.augment import photometric_jitter, rotation_scale_matrices
from training.bundled import save_bundled
from training.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared/data"

VIEW_CLASS = {"lateral": LATERAL, "ct_axial": OTHER, "ct_coronal": OTHER}
"""The views manifest's ``view`` column -> class."""


@dataclass(frozen=True)
class Sample:
    """One image: file, class, what it is (``view`` column or frontal source), patient, where it
    is held out (``train``/``val``/``test`` for frontal films, the fold number for views)."""

    path: Path
    label: str
    kind: str
    patient: str
    part: str

    def unit_image(self) -> np.ndarray:
        """The image as a 2-D float32 [0, 1] array (8-bit grayscale file)."""
        with Image.open(self.path) as im:
            return np.asarray(im.convert("L"), dtype=np.float32) / np.float32(255.0)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def view_folds(patients: dict[str, str], folds: int) -> dict[str, int]:
    """Fold of each patient (``patient -> class``): within each class, patients ordered by a hash
    of their id and dealt round-robin, so every fold holds each class and a patient one fold."""
    out: dict[str, int] = {}
    for label in sorted(set(patients.values())):
        members = sorted((p for p, c in patients.items() if c == label), key=_hash)
        out.update({p: i % folds for i, p in enumerate(members)})
    return out


def read_samples(data: Path, folds: int) -> list[Sample]:
    """The views (part: fold number) and the frontal films (part: manifest split)."""
    views = data / "views"
    with (views / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    patients = {r["patient_id"]: VIEW_CLASS[r["view"]] for r in rows}
    fold = view_folds(patients, folds)
    samples = [
        Sample(
            views / r["path"],
            VIEW_CLASS[r["view"]],
            r["view"],
            r["patient_id"],
            str(fold[r["patient_id"]]),
        )
        for r in rows
    ]
    manifest = read_manifest(data / "cxr" / "manifest.csv")
    samples += [
        Sample(r.path, FRONTAL, r.source, r.split_group or r.relpath, r.split)
        for r in manifest.rows
    ]
    return samples


def grids(samples: Sequence[Sample], size: int) -> torch.Tensor:
    """Images ``[N, 1, size, size]`` in [0, 1], as inference makes them."""
    return torch.stack([to_grid(s.unit_image(), size) for s in samples])


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random geometric and photometric variant of each image of a batch, standardised."""
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    angle = uniform(-15.0, 15.0) * math.pi / 180.0
    scale = torch.exp(uniform(math.log(0.8), math.log(1.25)))
    aspect = torch.exp(uniform(math.log(0.8), math.log(1.25)))
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    sx, sy = scale * aspect * flip, scale / aspect
    theta = rotation_scale_matrices(angle, sx, sy, uniform(-0.12, 0.12), uniform(-0.12, 0.12))
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return standardise(photometric_jitter(x, gen))


def learning_rate(progress: float, peak: float, warmup: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup`` of the run, then cosine decay to zero."""
    if progress < warmup:
        return peak * (0.1 + 0.9 * progress / warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def fit(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    batch: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    log: bool = True,
) -> ViewNet:
    """A network trained on ``images`` / ``labels`` (class indices) for ``steps`` batches.

    Each batch draws every class with equal probability (then an image of it uniformly), so the
    few views weigh as much as the many frontal films.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    counts = torch.bincount(labels, minlength=len(CLASSES)).float()
    weights = (1.0 / counts.clamp_min(1.0))[labels]
    net = ViewNet(WIDTHS, len(CLASSES))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    start = time.monotonic()
    net.train()
    total = 0.0
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step / steps, lr)
        idx = torch.multinomial(weights, batch, replacement=True, generator=gen)
        loss = F.cross_entropy(net(augment(images[idx], gen)), labels[idx], label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach())
        if log and (step + 1) % 100 == 0:
            print(
                f"  step {step + 1}/{steps}: loss {total / 100:.4f} "
                f"({time.monotonic() - start:.0f} s)",
                flush=True,
            )
            total = 0.0
    net.eval()
    return net


def predict(check: ViewCheck, samples: Sequence[Sample]) -> list[dict[str, float]]:
    """Class probabilities of each sample through the inference path (image at its own size)."""
    return [check(s.unit_image()).probabilities for s in samples]


def tally(
    samples: Sequence[Sample], probs: Sequence[dict[str, float]], threshold: float
) -> dict[str, dict[str, Any]]:
    """Per group (class, and views by kind, frontal films by source): n, how many were called
    right (``correct``: the right class; ``rejected`` for frontal films: not called frontal)."""
    groups: dict[str, list[tuple[Sample, str]]] = {}
    for s, p in zip(samples, probs, strict=True):
        called = FRONTAL if p[FRONTAL] >= threshold else max((LATERAL, OTHER), key=p.__getitem__)
        for key in (s.label, f"{s.label}/{s.kind}"):
            groups.setdefault(key, []).append((s, called))
    out: dict[str, dict[str, Any]] = {}
    for key, members in sorted(groups.items()):
        n = len(members)
        right = sum(1 for s, c in members if c == s.label)
        entry: dict[str, Any] = {"n": n, "correct": right, "rate": round(right / n, 4)}
        if members[0][0].label == FRONTAL:
            entry["rejected"] = n - right
        else:  # recognised as not frontal (either other class) is what keeps it from the model
            entry["not_frontal"] = sum(1 for _, c in members if c != FRONTAL)
        out[key] = entry
    return out


def _relative(path: Path, data: Path) -> str:
    return str(path.relative_to(data)) if path.is_relative_to(data) else str(path)


def main(argv: list[str] | None = None) -> int:
    """Train one network per fold, measure each on what it did not see, ship fold 0's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with views/ and cxr/")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-folds", type=int, default=None, help="train the first N only")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="1: faster than 2 on a busy machine")
    parser.add_argument("--threshold", type=float, default=FRONTAL_THRESHOLD)
    parser.add_argument("--version", default="viewcheck-1")
    parser.add_argument("--out", type=Path, default=FOLDER)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    data = args.data.resolve()
    samples = read_samples(data, args.folds)
    start = time.monotonic()
    images = grids(samples, SIZE)
    labels = torch.tensor([CLASSES.index(s.label) for s in samples])
    print(f"{len(samples)} images cached in {time.monotonic() - start:.0f} s", flush=True)
    frontal_val = [s for s in samples if s.label == FRONTAL and s.part == "val"]
    frontal_test = [s for s in samples if s.label == FRONTAL and s.part == "test"]
    oof: dict[int, dict[str, float]] = {}
    per_fold: list[dict[str, Any]] = []
    shipped_net: ViewNet | None = None
    base_card: dict[str, Any] = {
        "version": args.version,
        "classes": list(CLASSES),
        "architecture": "viewnet",
        "input_size": SIZE,
        "widths": list(WIDTHS),
        "frontal_threshold": args.threshold,
    }
    for k in range(args.only_folds or args.folds):
        train_idx = [
            i
            for i, s in enumerate(samples)
            if (s.label == FRONTAL and s.part == "train")
            or (s.label != FRONTAL and s.part != str(k))
        ]
        held = [i for i, s in enumerate(samples) if s.label != FRONTAL and s.part == str(k)]
        t0 = time.monotonic()
        print(f"fold {k}: {len(train_idx)} training images, {len(held)} views held out")
        net = fit(
            images[train_idx],
            labels[train_idx],
            steps=args.steps,
            batch=args.batch,
            lr=args.lr,
            seed=args.seed + k,
        )
        check = ViewCheck(net, base_card)
        held_probs = predict(check, [samples[i] for i in held])
        oof.update(dict(zip(held, held_probs, strict=True)))
        test_probs = predict(check, frontal_test)
        val_probs = predict(check, frontal_val)
        fold_result = {
            "fold": k,
            "views_held_out": tally([samples[i] for i in held], held_probs, args.threshold),
            "frontal_val": tally(frontal_val, val_probs, args.threshold)[FRONTAL],
            "frontal_test": tally(frontal_test, test_probs, args.threshold),
            "minutes": round((time.monotonic() - t0) / 60.0, 2),
            "min_p_frontal_test": round(min(p[FRONTAL] for p in test_probs), 4),
        }
        print(json.dumps(fold_result, indent=1), flush=True)
        per_fold.append(fold_result)
        if k == 0:
            shipped_net, shipped_test = net, fold_result["frontal_test"]
            shipped_held = [samples[i] for i in held]
            shipped_held_probs = held_probs
    assert shipped_net is not None
    oof_samples = [samples[i] for i in sorted(oof)]
    pooled = tally(oof_samples, [oof[i] for i in sorted(oof)], args.threshold)
    print("pooled out-of-fold views:", json.dumps(pooled, indent=1))
    card = {
        **base_card,
        "parameters": sum(p.numel() for p in shipped_net.parameters()),
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "training_command": "python -m training.viewcheck_train "
        f"--folds {args.folds} --steps {args.steps} --seed {args.seed} "
        f"--threshold {args.threshold} --version {args.version}",
        "steps": args.steps,
        "batch": args.batch,
        "threads": args.threads,
        "training_data": {
            "views": "shared/data/views (lateral -> lateral; ct_axial, ct_coronal -> other); "
            f"grouped {args.folds}-fold by patient (training.viewcheck_train.view_folds); "
            "this network is fold 0's: trained on folds 1..",
            "frontal": "shared/data/cxr/manifest.csv split train (held out: val, test)",
        },
        "held_out": {
            "shipped_fold_0": {
                "views": tally(shipped_held, shipped_held_probs, args.threshold),
                "frontal_test": shipped_test,
            },
            "pooled_out_of_fold_views": pooled,
            "frontal_test_per_fold": [
                {"fold": r["fold"], **r["frontal_test"][FRONTAL]} for r in per_fold
            ],
            "frontal_val_per_fold": [{"fold": r["fold"], **r["frontal_val"]} for r in per_fold],
        },
        "held_out_images": sorted({_relative(s.path, data) for s in shipped_held}),
    }
    save_bundled(shipped_net, card, args.out)
    print(f"wrote {args.out} (in {(time.monotonic() - start) / 60.0:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
