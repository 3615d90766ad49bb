"""Train the lung segmenter (:mod:`models.lungseg`) on JSRT + V7 Labs masks and measure it.

The films and their held-out split are :mod:`training.lungseg_data`'s. Training sees only the
training films, for a fixed number of epochs (no checkpoint is chosen on the held-out films, so
their figures are estimates, not maxima). Each film is cached once on the network's grid
(:func:`models.lungseg.to_grid`) and augmented per batch: a random affine (rotation, scale,
aspect, shift), a horizontal flip, gamma, contrast and brightness, blur and noise, then
standardised as inference does. Loss: binary cross-entropy + soft Dice.

At the end the held-out films are segmented through the inference path
(:class:`models.lungseg.Segmenter`, mask at each film's own resolution) and compared with the
human masks, as is the classical finder (:func:`models.lungs.find_lung_fields`) on the same films.
The weights (float16 state dict) and a card (data, split, figures, sha256) go to ``--out``.

Run (2 CPU cores: about 20 minutes)::

    pip download --no-deps torchxrayvision -d /tmp/txv
    .venv/bin/python -m training.lungseg_train --v7 /tmp/txv/torchxrayvision-*.whl
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.lungs import find_lung_fields, learned_fields
from models.lungseg import (
    DEPTH,
    FOLDER,
    SIZE,
    WIDTH,
    Segmenter,
    UNet,
    load_segmenter,
    standardise,
    to_grid,
)
from training.augment import photometric_jitter, rotation_scale_matrices
from training.bundled import save_bundled
from training.lungfig import sample_rows, truth_grid
from training.lungseg_data import JSRT, Film, find_v7_archive, read_jsrt, read_v7
from training.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]


def dice(ours: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    both = float(np.logical_and(ours, truth).sum())
    total = float(ours.sum()) + float(truth.sum())
    return 2.0 * both / total if total else 1.0


def grids(films: Sequence[Film], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[N, 1, size, size]`` in [0, 1] and soft masks (area-resized) of ``films``."""
    images = torch.stack([to_grid(f.unit_image(), size) for f in films])
    masks = torch.stack(
        [
            F.interpolate(
                torch.from_numpy(f.mask.astype(np.float32))[None, None],
                size=(size, size),
                mode="area",
            )[0]
            for f in films
        ]
    )
    return images, masks


def augment(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random geometric and photometric variant of each image (and its mask) of a batch."""
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    angle = uniform(-12.0, 12.0) * math.pi / 180.0
    scale = uniform(0.8, 1.2)
    aspect = uniform(0.9, 1.1)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    sx, sy = scale * aspect * flip, scale / aspect
    theta = rotation_scale_matrices(angle, sx, sy, uniform(-0.1, 0.1), uniform(-0.1, 0.1))
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return standardise(photometric_jitter(x, gen)), y


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy + (1 - soft Dice), Dice per image then averaged."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(1, 2, 3))
    total = prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    soft_dice = (2 * inter + 1.0) / (total + 1.0)
    return bce + (1.0 - soft_dice).mean()


def learning_rate(progress: float, peak: float, warmup: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup`` of the run, then cosine decay to zero."""
    if progress < warmup:
        return peak * (0.1 + 0.9 * progress / warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def fit(
    films: Sequence[Film],
    *,
    epochs: int,
    minutes: float | None = None,
    batch: int = 16,
    lr: float = 3e-3,
    size: int = SIZE,
    width: int = WIDTH,
    depth: int = DEPTH,
    seed: int = 0,
    log: bool = True,
) -> tuple[UNet, int]:
    """A network trained on ``films`` (AdamW); the network and the epochs it ran.

    The learning rate follows :func:`learning_rate` over ``epochs``, or, with ``minutes``, over
    that much wall-clock time (the run stops when it is spent, after at most ``epochs``): on a
    shared 2-core machine the speed varies severalfold, and a time budget keeps the schedule
    whole whatever the speed.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images, masks = grids(films, size)
    net = UNet(width, depth)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    per_epoch = math.ceil(len(films) / batch)
    start = time.monotonic()

    def progress(step: int) -> float:
        if minutes is not None:
            return (time.monotonic() - start) / (60.0 * minutes)
        return step / (epochs * per_epoch)

    step, done = 0, 0
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(films), generator=gen)
        total = 0.0
        for i in range(0, len(films), batch):
            for group in opt.param_groups:
                group["lr"] = learning_rate(min(1.0, progress(step)), lr)
            idx = order[i : i + batch]
            x, y = augment(images[idx], masks[idx], gen)
            loss = loss_fn(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total += float(loss.detach()) * len(idx)
        done = epoch + 1
        if log:
            print(
                f"epoch {done}/{epochs}: loss {total / len(films):.4f} "
                f"({time.monotonic() - start:.0f} s)",
                flush=True,
            )
        if progress(step) >= 1.0:
            break
    net.eval()
    return net, done


def _stats(values: Sequence[float]) -> dict[str, float | int]:
    """n, mean, 5th percentile, median and minimum of Dice values."""
    arr = np.asarray(values, dtype=np.float64)
    return {
        "n": int(arr.size),
        "mean": round(float(arr.mean()), 4),
        "p5": round(float(np.percentile(arr, 5)), 4),
        "median": round(float(np.median(arr)), 4),
        "min": round(float(arr.min()), 4),
    }


def measure(segmenter: Segmenter, films: Sequence[Film]) -> dict[str, Any]:
    """Dice of the segmenter and of the classical finder on ``films``, per source and pooled.

    ``per_film`` lists (key, source, segmenter Dice, classical Dice) for the worst-case review.
    """
    ours: dict[str, list[float]] = {}
    classic: dict[str, list[float]] = {}
    per_film = []
    for film in films:
        image = film.unit_image()
        d_ours = dice(segmenter(image), film.mask)
        d_classic = dice(find_lung_fields(image).mask, film.mask)
        per_film.append((film.key, film.source, round(d_ours, 4), round(d_classic, 4)))
        keys = ["jsrt"] if film.source == JSRT else ["v7", f"v7/{film.source}"]
        for key in keys:
            ours.setdefault(key, []).append(d_ours)
            classic.setdefault(key, []).append(d_classic)
    return {
        "segmenter": {k: _stats(v) for k, v in sorted(ours.items())},
        "classical": {k: _stats(v) for k, v in sorted(classic.items())},
        "per_film": per_film,
    }


def main(argv: list[str] | None = None) -> int:
    """Read the films, train, measure on the held-out films, write weights and card."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jsrt", type=Path, default=REPO.parent / "shared/data/jsrt")
    parser.add_argument(
        "--manifest", type=Path, default=REPO.parent / "shared/data/cxr/manifest.csv"
    )
    parser.add_argument(
        "--v7", type=Path, default=None, help="torchxrayvision wheel or the V7 masks' zip"
    )
    parser.add_argument("--epochs", type=int, default=30, help="at most this many")
    parser.add_argument(
        "--minutes", type=float, default=None, help="learning-rate schedule over this much time"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=FOLDER)
    parser.add_argument(
        "--measure-only",
        action="store_true",
        help="do not train: measure the segmenter in --out on the held-out films",
    )
    parser.add_argument("--figure", type=Path, help="also draw held-out films and every source")
    args = parser.parse_args(argv)

    archive = args.v7 or find_v7_archive()
    if archive is None:
        parser.error(
            "no V7 masks: pass --v7 (pip download --no-deps torchxrayvision -d DIR) "
            "or install torchxrayvision"
        )
    torch.set_num_threads(args.threads)
    films = read_jsrt(args.jsrt) + read_v7(archive, args.manifest)
    train = [f for f in films if not f.held_out]
    held = [f for f in films if f.held_out]
    print(f"{len(train)} training films, {len(held)} held out", flush=True)
    if args.measure_only:
        segmenter = load_segmenter(args.out)
        result = measure(segmenter, held)
    else:
        segmenter, result = _train(args, films, train, held)
    print(json.dumps({k: result[k] for k in ("segmenter", "classical")}, indent=1))
    worst = sorted(result["per_film"], key=lambda r: r[2])[:8]
    print("worst held-out films (key, source, segmenter, classical):")
    for row in worst:
        print("  ", *row)
    if args.figure:
        figure(segmenter, held, result["per_film"], args.manifest, args.figure)
        print(f"wrote {args.figure}")
    return 0


def figure(
    segmenter: Segmenter,
    held: Sequence[Film],
    per_film: Sequence[tuple[str, str, float, float]],
    manifest: Path,
    out: Path,
) -> Path:
    """Held-out films with both outlines (the worst of each set among them), then manifest
    films of every source and class (2 each, seeded): :func:`training.lungfig.truth_grid`."""
    score = {key: d for key, _, d, _ in per_film}
    chosen: list[Film] = []
    for group in ("jsrt", "ieee8023", "mhh_hannover"):
        films = sorted((f for f in held if f.source == group), key=lambda f: f.key)
        worst = sorted(films, key=lambda f: score[f.key])[:1]
        others = [f for f in films if f not in worst][:: max(1, len(films) // 3)]
        chosen += worst + others[: 2 if group != "mhh_hannover" else 1]
    panels = [
        (f.unit_image(), f.mask, f"{f.source[:9]} held Dice {score[f.key]:.2f}") for f in chosen
    ]
    rows = sample_rows(read_manifest(manifest).rows, per_group=2, seed=0)
    return truth_grid(panels, rows, out, lambda image: learned_fields(segmenter(image)))


def _train(
    args: argparse.Namespace, films: Sequence[Film], train: Sequence[Film], held: Sequence[Film]
) -> tuple[Segmenter, dict[str, Any]]:
    """Train, measure on ``held``, save weights and card; the segmenter and its measurement."""
    start = time.monotonic()
    net, epochs = fit(
        train,
        epochs=args.epochs,
        minutes=args.minutes,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
    )
    minutes = (time.monotonic() - start) / 60.0
    card: dict[str, Any] = {
        "architecture": "unet",
        "input_size": SIZE,
        "width": WIDTH,
        "depth": DEPTH,
        "parameters": sum(p.numel() for p in net.parameters()),
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "training_command": "python -m training.lungseg_train "
        + " ".join(
            f"--{k} {v}"
            for k, v in (("epochs", args.epochs), ("minutes", args.minutes), ("seed", args.seed))
            if v is not None
        ),
        "training_minutes": round(minutes, 1),
        "epochs": epochs,
        "threads": args.threads,
        "training_data": {
            "jsrt": "shared/data/jsrt (SCR lung masks); held out: a hash of the case name "
            "below 0.2 (training.lungseg_data.jsrt_held_out), one film per patient",
            "v7": "V7 Labs lung masks of COVID-19 films (torchxrayvision wheel) matched to "
            "shared/data/cxr/manifest.csv; held out: the manifest's test split "
            "(patient-disjoint by split_group)",
            "counts": {
                f"{'held_out' if h else 'train'}/{s}": sum(
                    1 for f in films if f.source == s and f.held_out == h
                )
                for s in sorted({f.source for f in films})
                for h in (False, True)
            },
        },
    }
    segmenter = Segmenter(net, card)
    result = measure(segmenter, held)
    card["dice_held_out"] = result["segmenter"]
    card["dice_held_out_classical"] = result["classical"]
    save_bundled(net, card, args.out)
    print(f"wrote {args.out} (training {minutes:.1f} min)")
    return segmenter, result


if __name__ == "__main__":
    raise SystemExit(main())
