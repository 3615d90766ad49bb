"""How well the lung-field localiser agrees with human lung masks (not a test).

:func:`models.lungs.find_lung_fields` is a classical method, checked so far only by eye
(``docs/model-reports/lung-fields.png``). This script measures it against the public lung masks
that V7 Labs drew for the COVID-19 image collection (``semantic_masks_v7labs_lungs.zip``, shipped
inside the ``torchxrayvision`` wheel on PyPI; the script does not install it). Masks are matched to
the manifest's images by the file name of ``orig_path``; a mask whose size differs from the image
is shrunk to the image when it has the original's size (the manifest holds
shrunk exports), else left out. It prints, as Markdown, per source and for all matched images:

- Dice between our mask and the human one, the share of our mask inside theirs (precision) and
  the share of theirs we cover (recall), as medians with the 10th percentile;
- the same for the geometric prior alone (:func:`models.lungs.prior_mask`), the floor a detector
  must beat;
- how many images the localiser answered with the prior (``fallback``).

Run::

    pip download --no-deps torchxrayvision -d /tmp/txv
    .venv/bin/python benchmarks/lung_fields_v7.py /tmp/txv/torchxrayvision-*.whl

The human masks are all of COVID-19 images (the collection's own), so this says nothing about
non-COVID images; see the picture for those.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import defaultdict
from pathlib import Path, PurePosixPath

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.lungs import find_lung_fields, prior_mask  # noqa: E402
from models.preprocessing import load_image_file  # noqa: E402
from training.lungseg_data import read_v7_masks  # noqa: E402
from training.manifest import read_manifest  # noqa: E402


def overlap(ours: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Dice, precision (ours inside truth) and recall (truth covered by ours)."""
    both = float(np.logical_and(ours, truth).sum())
    n_ours, n_truth = float(ours.sum()), float(truth.sum())
    dice = 2 * both / (n_ours + n_truth) if n_ours + n_truth else 1.0
    return dice, both / n_ours if n_ours else 0.0, both / n_truth if n_truth else 0.0


def summary(values: list[tuple[float, float, float]]) -> str:
    """'median (p10)' of Dice, precision and recall."""
    arr = np.asarray(values)
    med, p10 = np.median(arr, axis=0), np.percentile(arr, 10, axis=0)
    return " | ".join(f"{m:.2f} ({p:.2f})" for m, p in zip(med, p10, strict=True))


def main(argv: list[str] | None = None) -> int:
    """Match, measure, print."""
    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path, help="torchxrayvision wheel or the masks' zip")
    parser.add_argument(
        "--manifest", type=Path, default=REPO.parent / "shared/data/cxr/manifest.csv"
    )
    args = parser.parse_args(argv)

    masks = read_v7_masks(args.archive)
    with args.manifest.open(newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    origin = {r["path"]: r.get("orig_path", "") for r in table}
    orig_size = {r["path"]: (r.get("orig_width", ""), r.get("orig_height", "")) for r in table}
    ours: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    prior: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    fallbacks: dict[str, int] = defaultdict(int)
    skipped = 0
    for row in read_manifest(args.manifest).rows:
        orig = origin.get(row.relpath, "")
        key = PurePosixPath(orig).stem.lower() if orig else row.path.stem.lower()
        encoded = masks.get(key)
        if encoded is None:
            continue
        image = load_image_file(row.path)
        with Image.open(io.BytesIO(encoded)) as opened:
            truth_img = opened.convert("L")
        size = (image.shape[1], image.shape[0])
        if truth_img.size != size:
            # The manifest's copy may be a shrunk export of the original the mask was drawn on.
            if "x".join(map(str, truth_img.size)) != "x".join(orig_size.get(row.relpath, ())):
                skipped += 1
                continue
            truth_img = truth_img.resize(size, Image.Resampling.NEAREST)
        truth = np.asarray(truth_img) > 127
        found = find_lung_fields(image)
        for group in (row.source, "all"):
            ours[group].append(overlap(found.mask, truth))
            prior[group].append(overlap(prior_mask(truth.shape), truth))
            fallbacks[group] += int(found.fallback)

    print(
        f"{sum(len(v) for k, v in ours.items() if k != 'all')} images matched to a human mask; "
        f"{skipped} left out (mask size differs from the image)\n"
    )
    print(
        "| source | n | ours: Dice | precision | recall | prior: Dice | precision | recall "
        "| fallback |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for group in sorted(ours, key=lambda g: (g == "all", g)):
        n = len(ours[group])
        print(
            f"| {group} | {n} | {summary(ours[group])} | {summary(prior[group])} "
            f"| {fallbacks[group]} ({fallbacks[group] / n:.0%}) |"
        )
    print("\nmedian (10th percentile) over images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
