"""Prepare ``.gpu/data/`` for a GPU machine: the shared chest X-rays downscaled, and the NEMA CR.

The device tool carries at most 64 MiB of ignored files, and the shared images are 83 MB; the
models read 224-320 px, so a copy shrunk to at most 256 px (Lanczos, JPEG quality 90, same
relative paths) with the unchanged manifest (same sha256, so fold runs and cards match the shared
data) is what travels (``carry: [".gpu"]``). The NEMA sample CR that ``cv`` scores goes with it.
This is the copy ``squeezenet1_1-c`` was trained on (docs/training.md, "How it was made").

    .venv/bin/python scripts/gpu_data.py [--shared ../shared] [--out .gpu/data] [--size 256]
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

from PIL import Image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, default=Path(".gpu/data"))
    parser.add_argument("--size", type=int, default=256, help="longest side in pixels")
    args = parser.parse_args()
    src, dst = args.shared / "data" / "cxr", args.out / "cxr"
    with (src / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    made = 0
    for row in rows:
        target = dst / row["path"]
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src / row["path"]) as image:
            gray = image.convert("L")
            gray.thumbnail((args.size, args.size), Image.Resampling.LANCZOS)
            gray.save(target, quality=90)
        made += 1
    shutil.copy(src / "manifest.csv", dst / "manifest.csv")
    (args.out / "dicom").mkdir(parents=True, exist_ok=True)
    shutil.copy(args.shared / "data" / "dicom" / "RG1_UNCR.dcm", args.out / "dicom")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{len(rows)} images ({made} new) in {dst}, {size / 2**20:.1f} MiB in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
