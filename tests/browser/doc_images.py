"""Make the console pictures of docs/operations.md from the browser test's screenshots.

Run after ``tests/integration/test_console_browser.py``::

    .venv/bin/python tests/browser/doc_images.py

Reads ``test-artifacts/console/`` and writes small PNGs (256 colours) to ``docs/images/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-artifacts" / "console"
OUT = REPO / "docs" / "images"
WIDTH = 1100
GAP = 12


def small(image: Image.Image, width: int = WIDTH) -> Image.Image:
    """Scaled to ``width`` and reduced to 256 colours."""
    image = image.convert("RGB")
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    return image.quantize(256, method=Image.Quantize.MEDIANCUT)


def stack(paths: list[Path]) -> Image.Image:
    """The pictures one below the other, on the console's background colour."""
    parts = [Image.open(p).convert("RGB") for p in paths]
    width = max(p.width for p in parts)
    height = sum(p.height for p in parts) + GAP * (len(parts) + 1)
    canvas = Image.new("RGB", (width + 2 * GAP, height), (244, 246, 249))
    y = GAP
    for part in parts:
        canvas.paste(part, (GAP, y))
        y += part.height + GAP
    return canvas


def main() -> int:
    """Write the pictures; exit 1 when a screenshot is missing."""
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        pictures = {
            "console-dashboard.png": Image.open(SHOTS / "dashboard.png"),
            "console-job.png": Image.open(SHOTS / "job-delivered.png").crop((0, 0, 1280, 1200)),
            "console-job-failed.png": stack(
                [SHOTS / f"job-failed-{part}.png" for part in ("summary", "deliveries")]
            ),
            "console-job-reanalysed.png": stack(
                [SHOTS / f"job-reanalysed-{p}.png" for p in ("summary", "deliveries", "timeline")]
            ),
        }
    except FileNotFoundError as exc:
        print(f"missing screenshot: {exc.filename} (run the browser test first)", file=sys.stderr)
        return 1
    for name, image in pictures.items():
        path = OUT / name
        small(image).save(path, optimize=True)
        print(f"{path.relative_to(REPO)}: {path.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
