"""How often the domain check flags images, in and out of the model's domain.

Scores images through the serving path (:class:`models.inference.Predictor` of a registry
version, default engine) and prints, as Markdown, the share flagged "outside the model's
validated domain" for:

1. the manifest's val split (where the threshold was set: about 1 % by construction) and test split;
2. the real chest DICOMs of ``shared/data/dicom`` (through the service's pixel path,
   :func:`models.dicom_pixels.dicom_to_array`);
3. real non-chest images among pydicom's bundled test files (CT, MR, US, NM; see
   :func:`pydicom_non_chest` for what is left out), as a viewer displays them;
4. the test split's chest images flipped left-right, rotated 90°, inverted, and cropped to
   their central 50 % (half the width and half the height, resized back as any image is);
5. synthetic images (uniform noise, flat gray) as a sanity check.

Run::

    .venv/bin/python benchmarks/domain_rates.py --out runs/domain-rates.md

It takes a few minutes on two CPU threads (about 2,000 forward passes of the model).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.dicom_pixels import dicom_to_array  # noqa: E402
from models.inference import Predictor, Scores  # noqa: E402
from models.preprocessing import load_image_file  # noqa: E402
from training.manifest import read_manifest  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
LEFT_OUT_MODALITIES = {"OT", "SEG", "RTDOSE", "RTSTRUCT", "RTPLAN", "SR", "PR"}
"""pydicom test files that are not acquired pictures of anatomy."""


@dataclass
class Row:
    """One line of the report: a set of images and how many the check flagged."""

    name: str
    n: int
    flagged: int
    note: str = ""

    @property
    def rate(self) -> float:
        """Share flagged."""
        return self.flagged / self.n if self.n else float("nan")


def score(predictor: Predictor, images: Sequence[np.ndarray], batch: int = 32) -> Scores:
    """Scores of 2-D [0, 1] images in batches (keeps memory small)."""
    parts = [predictor.score(list(images[i : i + batch])) for i in range(0, len(images), batch)]
    return Scores(
        probabilities=np.concatenate([p.probabilities for p in parts]),
        domain_scores=np.concatenate([p.domain_scores for p in parts]),
        in_domain=np.concatenate([p.in_domain for p in parts]),
        domain_threshold=parts[0].domain_threshold,
    )


def row(name: str, scores: Scores, note: str = "") -> Row:
    """A report line from scores."""
    return Row(name, int(scores.in_domain.size), int((~scores.in_domain).sum()), note)


def displayed(ds: object) -> np.ndarray:
    """A pydicom test image as a viewer shows it: 2-D [0, 1], MONOCHROME2 meaning.

    With a VOI window or LUT, the service's own pixel path (:func:`dicom_to_array`); without
    one, the Modality LUT output scaled from its minimum to its maximum (what viewers do for
    CT, MR and NM images that state no window: the service's path scales over the full stored
    bit range instead, which leaves such an image flat gray). Colour: luma. Multi-frame: the
    middle frame.
    """
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_modality_lut

    assert isinstance(ds, Dataset)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        rgb = ds.pixel_array[frames // 2] if frames > 1 else ds.pixel_array  # RGB in pydicom 3
        values = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    elif "WindowCenter" in ds or "VOILUTSequence" in ds:
        return dicom_to_array(ds, frame=frames // 2)
    else:
        pixels = ds.pixel_array[frames // 2] if frames > 1 else ds.pixel_array
        values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            values = -values
    lo, hi = float(values.min()), float(values.max())
    return ((values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)).astype(np.float32)


def _thumbnail(image: np.ndarray) -> np.ndarray:
    """A 32 x 32 area-averaged copy, to compare pictures across sizes and encodings."""
    return torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(image)[None], 32)[0].numpy()


def _same_picture(a: np.ndarray, b: np.ndarray) -> bool:
    """Two thumbnails of one picture in different encodings (correlation above 0.95)."""
    if a.std() == 0 or b.std() == 0:
        return bool(np.allclose(a, b, atol=0.02))
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) > 0.95


def pydicom_non_chest() -> list[tuple[str, str, np.ndarray]]:
    """(file, modality, image) of the decodable non-chest acquisitions bundled with pydicom.

    Left out: the NEMA chest CR (``RG1_*``, the same film as ``shared/data/dicom``), objects
    that are not pictures of anatomy (segmentations, dose grids, ...) and Secondary Captures
    without an acquisition modality (``OT``: pydicom's colour bars and synthetic patterns).
    The same picture in several encodings counts once.
    """
    import pydicom
    import pydicom.data

    folder = Path(pydicom.data.__file__).parent / "test_files"
    found: list[tuple[str, str, np.ndarray]] = []
    seen: set[str] = set()
    thumbs: list[np.ndarray] = []
    for path in sorted(folder.glob("*.dcm")):
        if path.name.startswith("RG1"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path)
                modality = str(ds.get("Modality", "") or "OT")
                if "PixelData" not in ds or modality in LEFT_OUT_MODALITIES:
                    continue
                image = np.clip(displayed(ds), 0.0, 1.0)
        except Exception:  # not decodable here: not part of the measurement
            continue
        if image.ndim != 2 or min(image.shape) < 16:
            continue
        thumb = _thumbnail(image)
        uid = str(ds.get("SOPInstanceUID", ""))
        if uid in seen or any(_same_picture(thumb, other) for other in thumbs):
            continue
        seen.add(uid)
        thumbs.append(thumb)
        found.append((path.name, modality, image))
    return found


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "flipped left-right": lambda im: im[:, ::-1],
    "rotated 90°": lambda im: np.rot90(im),
    "inverted": lambda im: 1.0 - im,
    "cropped to the central 50 %": lambda im: im[
        im.shape[0] // 4 : im.shape[0] // 4 + im.shape[0] // 2,
        im.shape[1] // 4 : im.shape[1] // 4 + im.shape[1] // 2,
    ],
}


def main(argv: list[str] | None = None) -> int:
    """Measure and print (and with ``--out`` write) the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=REPO / "models" / "registry")
    parser.add_argument("--version", default=None, help="default: the active version")
    parser.add_argument("--manifest", type=Path, default=SHARED / "cxr" / "manifest.csv")
    parser.add_argument("--dicom-dir", type=Path, default=SHARED / "dicom")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = parser.parse_args(argv)

    predictor = Predictor.from_registry(
        args.registry, args.version, device="cpu", engine=args.engine, threads=args.threads
    )
    if predictor.domain is None:
        print(f"version {predictor.version} has no domain check", file=sys.stderr)
        return 1
    manifest = read_manifest(args.manifest)
    rows: list[Row] = []
    test_images: list[np.ndarray] = []
    for split in ("val", "test"):
        images = [load_image_file(r.path) for r in manifest.split(split)]
        rows.append(row(f"{split} split (chest X-rays)", score(predictor, images)))
        if split == "test":
            test_images = images
    import pydicom

    dicoms = sorted(args.dicom_dir.glob("*.dcm"))
    dicom_scores = score(predictor, [dicom_to_array(pydicom.dcmread(p)) for p in dicoms])
    rows.append(
        row(
            "real chest DICOMs (shared/data/dicom)",
            dicom_scores,
            ", ".join(
                f"{p.name} {s:.1f}" for p, s in zip(dicoms, dicom_scores.domain_scores, strict=True)
            ),
        )
    )
    others = pydicom_non_chest()
    other_scores = score(predictor, [im for _, _, im in others])
    rows.append(
        row(
            "non-chest images (pydicom test files)",
            other_scores,
            "; ".join(
                f"{name} ({modality}) {s:.1f}{' flagged' if not ok else ''}"
                for (name, modality, _), s, ok in zip(
                    others, other_scores.domain_scores, other_scores.in_domain, strict=True
                )
            ),
        )
    )
    for name, transform in TRANSFORMS.items():
        changed = [np.ascontiguousarray(transform(im)) for im in test_images]
        rows.append(row(f"test split {name}", score(predictor, changed)))
    rng = np.random.default_rng(0)
    synthetic = [rng.random((512, 512), dtype=np.float32) for _ in range(8)]
    synthetic += [np.full((512, 512), v, dtype=np.float32) for v in (0.0, 0.25, 0.5, 0.75, 1.0)]
    rows.append(row("synthetic: 8 uniform noise, 5 flat gray", score(predictor, synthetic)))

    card = predictor.card
    assert card.domain_check is not None
    lines = [
        f"Domain check of {card.version} ({card.architecture}, engine {predictor.engine}): "
        f"threshold {card.domain_check.threshold:.3f} on the Mahalanobis distance of "
        f"{card.domain_check.feature_dim}-d features ({card.domain_check.components} components).",
        "",
        "| images | n | flagged | share flagged |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {r.name} | {r.n} | {r.flagged} | {r.rate:.1%} |" for r in rows]
    lines.append("")
    lines += [f"- {r.name}: {r.note}" for r in rows if r.note]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
