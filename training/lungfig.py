"""Look at and measure a lung-field finder on a manifest.

:func:`lung_grid` draws the mask outline of :func:`models.lungs.lung_fields` (the learned
segmenter, or ``--finder heuristic``) over a sample of
images (``per_group`` per source and class) into one PNG, so that a person can see whether the
masks sit on the lungs; :func:`lung_stats` runs the localiser over a whole manifest and counts
fallbacks per source and class, and the time per image (the numbers in ``docs/training.md``).

``python -m training.lungfig MANIFEST.csv OUT.png [--stats] [--only METHOD] [--finder NAME]``
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from models.lungs import DEFAULT_LUNG_FINDER, LUNG_FINDERS, LungFields, lung_fields
from models.preprocessing import load_image_file
from training.manifest import LABELS, ManifestRow, read_manifest

PANEL = 170
"""Side of one picture in the grid (pixels); the image is letterboxed into it."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "learned": (40, 220, 40),
    "threshold": (40, 220, 40),
    "mirrored": (255, 200, 0),
    "prior": (255, 40, 40),
}
"""Outline colour per method: green lungs found (by the network, or both by the classical method),
yellow one mirrored, red prior fallback."""


def sample_rows(
    rows: Sequence[ManifestRow], per_group: int = 3, seed: int = 0
) -> list[ManifestRow]:
    """``per_group`` rows of every (source, class), drawn with ``seed``, in a stable order."""
    groups: dict[tuple[str, int], list[ManifestRow]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r.relpath):
        groups[(row.source, row.label)].append(row)
    rng = np.random.default_rng(seed)
    picked: list[ManifestRow] = []
    for key in sorted(groups):
        members = groups[key]
        idx = rng.choice(len(members), size=min(per_group, len(members)), replace=False)
        picked.extend(members[int(i)] for i in sorted(idx))
    return picked


TRUTH_COLOUR = (255, 0, 255)
"""Outline colour of a human mask (magenta), drawn under the finder's."""


def _outline(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The one-pixel outline of ``mask`` resized to ``size`` (width, height)."""
    small = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    resized = np.asarray(small.resize(size, Image.Resampling.NEAREST)) > 127
    return resized & ~ndimage.binary_erosion(resized, iterations=1, border_value=0)


def _panel(
    image: np.ndarray, fields: LungFields, caption: str, truth: np.ndarray | None = None
) -> Image.Image:
    """One letterboxed RGB picture with the mask outline (and a human one) and a caption."""
    h, w = image.shape
    scale = PANEL / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    gray = Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L").resize(
        (nw, nh), Image.Resampling.BILINEAR
    )
    rgb = np.repeat(np.asarray(gray)[..., None], 3, axis=2).copy()
    if truth is not None:
        rgb[_outline(truth, (nw, nh))] = TRUTH_COLOUR
    rgb[_outline(fields.mask, (nw, nh))] = COLOURS.get(fields.method, (0, 160, 255))
    top, bottom, left, right = fields.box_with_margin(0.08)
    canvas = Image.new("RGB", (PANEL, PANEL + 12), (0, 0, 0))
    ox, oy = (PANEL - nw) // 2, (PANEL - nh) // 2
    canvas.paste(Image.fromarray(rgb), (ox, oy))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle(
        (ox + left * scale, oy + top * scale, ox + right * scale - 1, oy + bottom * scale - 1),
        outline=(0, 160, 255),
    )
    draw.text((2, PANEL), caption[:30], fill=(255, 255, 255))
    return canvas


def _palette(sheet: Image.Image) -> Image.Image:
    """``sheet`` as a palette image: 64 gray levels plus the outline colours, kept exact.

    A palette PNG of the grid is a third of the RGB one, and the few outline colours must not be
    merged into grays by a generic quantiser.
    """
    rgb = np.asarray(sheet)
    extra = [*COLOURS.values(), (0, 160, 255), (255, 255, 255), TRUTH_COLOUR]
    index = (rgb[..., 0].astype(np.int32) * 64 // 256).astype(np.uint8)
    gray = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    for i, colour in enumerate(extra):
        hit = np.all(rgb == np.asarray(colour, dtype=np.uint8), axis=-1) & ~gray
        index[hit] = 64 + i
    palette = [v for level in range(64) for v in (level * 255 // 63,) * 3]
    palette += [v for colour in extra for v in colour]
    out = Image.fromarray(index, mode="P")
    out.putpalette(palette)
    return out


def _sheet(panels: Sequence[Image.Image], out: str | Path, columns: int, quantise: bool) -> Path:
    """Paste ``panels`` row by row into one PNG at ``out`` (palette PNG when ``quantise``)."""
    n_rows = max(1, -(-len(panels) // columns))
    sheet = Image.new("RGB", (columns * PANEL, n_rows * (PANEL + 12)), (0, 0, 0))
    for i, panel in enumerate(panels):
        sheet.paste(panel, ((i % columns) * PANEL, (i // columns) * (PANEL + 12)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    (_palette(sheet) if quantise else sheet).save(out, optimize=True)
    return out


def lung_grid(
    rows: Sequence[ManifestRow],
    out: str | Path,
    columns: int = 6,
    quantise: bool = True,
    finder: str = DEFAULT_LUNG_FINDER,
) -> Path:
    """Draw the lung fields of ``rows`` into a PNG grid at ``out`` (palette PNG, small)."""
    panels = []
    for row in rows:
        image = load_image_file(row.path)
        fields = lung_fields(image, finder)
        caption = f"{row.source[:9]} {LABELS[row.label][:5]} {fields.method[:5]}"
        panels.append(_panel(image, fields, caption))
    return _sheet(panels, out, columns, quantise)


def truth_grid(
    films: Sequence[tuple[np.ndarray, np.ndarray, str]],
    rows: Sequence[ManifestRow],
    out: str | Path,
    find: Callable[[np.ndarray], LungFields] = lung_fields,
    columns: int = 6,
) -> Path:
    """Films with a human mask (image, mask, caption) and then manifest ``rows``, one PNG.

    The human outline is magenta, ``find``'s green (red: its prior fallback); the first panels
    say how well the finder agrees with people, the rest how it does on every source.
    """
    panels = [_panel(img, find(img), cap, truth) for img, truth, cap in films]
    for row in rows:
        image = load_image_file(row.path)
        fields = find(image)
        caption = f"{row.source[:9]} {LABELS[row.label][:5]} {fields.method[:5]}"
        panels.append(_panel(image, fields, caption))
    return _sheet(panels, out, columns, quantise=True)


def lung_stats(rows: Sequence[ManifestRow], finder: str = DEFAULT_LUNG_FINDER) -> dict[str, Any]:
    """Fallback and mirror rates per source, class and both over ``rows``; time per image.

    The time covers :func:`models.lungs.lung_fields` only (not decoding the JPEG).
    """
    total: Counter[str] = Counter()
    methods: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: Counter[str] = Counter()
    seconds: list[float] = []
    for row in rows:
        image = load_image_file(row.path)
        t0 = time.perf_counter()
        fields = lung_fields(image, finder)
        seconds.append(time.perf_counter() - t0)
        label = LABELS[row.label]
        for key in (f"source/{row.source}", f"class/{label}", f"{row.source}/{label}", "all"):
            total[key] += 1
            methods[key][fields.method] += 1
        if fields.reason:
            reasons[f"{fields.method}: {fields.reason}"] += 1
    groups = {
        key: {
            "n": total[key],
            "fallback": methods[key]["prior"] / total[key],
            "mirrored": methods[key]["mirrored"] / total[key],
        }
        for key in sorted(total)
    }
    t = np.asarray(seconds)
    return {
        "groups": groups,
        "reasons": dict(reasons.most_common()),
        "ms_per_image": {
            "mean": float(t.mean() * 1e3),
            "median": float(np.median(t) * 1e3),
            "p95": float(np.percentile(t, 95) * 1e3),
            "max": float(t.max() * 1e3),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: draw the grid, optionally print the statistics as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-group", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stats", action="store_true", help="measure over the whole manifest")
    parser.add_argument(
        "--only",
        choices=("prior", "mirrored", "threshold", "learned"),
        help="draw only images where the finder used this method (up to 48)",
    )
    parser.add_argument("--finder", choices=LUNG_FINDERS, default=DEFAULT_LUNG_FINDER)
    parser.add_argument("--source", help="draw only images of this source")
    args = parser.parse_args(argv)
    manifest = read_manifest(args.manifest)
    rows: list[ManifestRow] = [r for r in manifest.rows if args.source in (None, r.source)]
    if args.only:
        chosen = [
            r for r in rows if lung_fields(load_image_file(r.path), args.finder).method == args.only
        ]
        rng = np.random.default_rng(args.seed)
        idx = rng.choice(len(chosen), size=min(48, len(chosen)), replace=False)
        rows = [chosen[int(i)] for i in sorted(idx)]
    else:
        rows = sample_rows(rows, args.per_group, args.seed)
    lung_grid(rows, args.out, finder=args.finder)
    if args.stats:
        print(json.dumps(lung_stats(manifest.rows, args.finder), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
