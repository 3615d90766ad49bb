"""Films with human lung masks, to train and measure the lung segmenter (:mod:`models.lungseg`).

Two collections, each split into films the segmenter learns from and films it is measured on:

- **JSRT** (``shared/data/jsrt``: 247 films with the SCR lung masks, 512 x 512). One film per
  patient, so the held-out films are chosen by film: a fixed share (:data:`JSRT_HELD_OUT`) picked by
  a hash of the case name, so the choice is the same on every machine and needs no seed.
- **V7 Labs** lung masks of COVID-19 films (``semantic_masks_v7labs_lungs.zip`` inside the
  ``torchxrayvision`` wheel on PyPI; :func:`find_v7_archive`), matched to the manifest's images by
  the file name of ``orig_path`` (as ``benchmarks/lung_fields_v7.py`` does). The manifest's
  ``split`` is patient-disjoint by ``split_group``, so the films of its ``test`` split are the
  held-out ones: disjoint by patient from the training films, and never seen by a segmenter that
  later crops the classifier's training images. A mask is drawn on the original image; the
  manifest holds a shrunk export, so the mask is resized to the image (nearest neighbour). For the
  Hannover films the masks are square (2000 x 2000) while the images are not: they were drawn on a
  stretched copy and line up once resized (checked by eye).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

V7_MASKS = "semantic_masks_v7labs_lungs"
"""Folder (and zip) name of the V7 Labs lung masks inside the ``torchxrayvision`` wheel."""

JSRT_HELD_OUT = 0.2
"""Share of the JSRT films held out for measuring."""

JSRT = "jsrt"
"""Source name of the JSRT films."""


@dataclass(frozen=True)
class Film:
    """One film with its human lung mask (both lungs as one mask)."""

    key: str
    """The JSRT case or the manifest path."""
    source: str
    """``jsrt`` or the manifest's source."""
    held_out: bool
    """True for the films the segmenter is measured on and never trained on."""
    image: np.ndarray
    """8-bit grayscale pixels (uint8, 2-D)."""
    mask: np.ndarray
    """Boolean lung mask, same shape as ``image``."""

    def unit_image(self) -> np.ndarray:
        """The image as float32 in [0, 1], as every other path takes it."""
        return self.image.astype(np.float32) / np.float32(255.0)


def jsrt_held_out(case: str, share: float = JSRT_HELD_OUT) -> bool:
    """Whether JSRT film ``case`` is held out (a hash of its name, below ``share``)."""
    value = int.from_bytes(hashlib.sha256(case.encode("utf-8")).digest()[:8], "big")
    return value / 2.0**64 < share


def _gray(data: Path | bytes) -> Image.Image:
    """An image file (path or encoded bytes) as 8-bit grayscale."""
    with Image.open(data if isinstance(data, Path) else io.BytesIO(data)) as opened:
        return opened.convert("L")


def read_jsrt(folder: Path) -> list[Film]:
    """The JSRT films of ``folder/manifest.csv`` with left | right lung masks."""
    films = []
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            image = np.asarray(_gray(folder / row["image"]))
            mask = np.asarray(_gray(folder / row["mask_left_lung"])) > 127
            mask = mask | (np.asarray(_gray(folder / row["mask_right_lung"])) > 127)
            if mask.shape != image.shape:
                raise ValueError(f"{row['case']}: mask {mask.shape} != image {image.shape}")
            films.append(Film(row["case"], JSRT, jsrt_held_out(row["case"]), image, mask))
    return films


def find_v7_archive() -> Path | None:
    """The V7 masks' zip of an installed ``torchxrayvision`` (None when it is not installed).

    Found without importing the package (its import pulls in much more than the zip).
    """
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / f"{V7_MASKS}.zip"
        if candidate.is_file():
            return candidate
    return None


def read_v7_masks(archive: Path) -> dict[str, bytes]:
    """File stem (lower case) -> encoded mask, from the ``torchxrayvision`` wheel or the zip."""
    with zipfile.ZipFile(archive) as outer:
        inner_name = next((n for n in outer.namelist() if n.endswith(V7_MASKS + ".zip")), None)
        data = outer.read(inner_name) if inner_name else None
    zf = zipfile.ZipFile(io.BytesIO(data)) if data is not None else zipfile.ZipFile(archive)
    with zf:
        return {
            PurePosixPath(n).stem.lower(): zf.read(n)
            for n in zf.namelist()
            if PurePosixPath(n).parent.name == V7_MASKS and not n.endswith("/")
        }


def v7_key(row: dict[str, str]) -> str:
    """The mask name a manifest row's image has (file stem of ``orig_path``, else of ``path``)."""
    name = row.get("orig_path") or row["path"]
    return PurePosixPath(name).stem.lower()


def read_v7(archive: Path, manifest: Path, held_out_split: str = "test") -> list[Film]:
    """The manifest's films that have a V7 mask; those of ``held_out_split`` are held out."""
    masks = read_v7_masks(archive)
    films = []
    with manifest.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            encoded = masks.get(v7_key(row))
            if encoded is None:
                continue
            image = np.asarray(_gray(manifest.parent / row["path"]))
            truth = _gray(encoded)
            size = (image.shape[1], image.shape[0])
            if truth.size != size:
                truth = truth.resize(size, Image.Resampling.NEAREST)
            films.append(
                Film(
                    row["path"],
                    row.get("source", ""),
                    row["split"] == held_out_split,
                    image,
                    np.asarray(truth) > 127,
                )
            )
    return films
