"""A learned lung-field segmenter: a small U-Net whose weights ship in the repository.

:func:`segment_lungs` takes the 2-D float32 [0, 1] MONOCHROME2 image every other path takes and
returns a boolean mask of the same shape (both lungs, the patient's sides not told apart).
:func:`models.lungs.lung_fields` wraps it in the :class:`models.lungs.LungFields` the callers use.

Why a network: the classical finder (:func:`models.lungs.find_lung_fields`) misses the outer and
lower zones, exactly where COVID-19 opacities lie (Dice 0.79, recall 0.66 against the V7 Labs
masks of COVID-19 films). This one is trained on JSRT films with SCR masks and on COVID-19 films
with V7 Labs masks (``training/lungseg_train.py``; figures in :data:`CARD_FILE` and
``docs/training.md``, "Lung segmenter").

Input to the network (:func:`network_input`, shared with training so the two cannot drift): the
image quantised to 8 bits (a JPEG and the same pixels via DICOM give the same mask), resized to
:data:`SIZE` x :data:`SIZE` (aspect ratio not kept, as the classifier's input) and standardised
to zero mean and unit variance per image (JSRT films are low in contrast, publication figures
high). The logits are resized back to the image, thresholded at 0, and cleaned
(:func:`clean_mask`).

The weights (float16 state dict, :data:`WEIGHTS_FILE`) are checked against the sha256 in the
card on the first load; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from models.bundled import CARD_NAME, WEIGHTS_NAME, load_checked, load_once, read_card

SIZE = 128
"""Side of the square grid the network sees (pixels)."""

WIDTH = 12
"""Channels of the first level; each deeper level doubles them."""

DEPTH = 4
"""Number of down-sampling steps (the bottleneck is ``SIZE / 2**DEPTH`` pixels wide)."""

FOLDER = Path(__file__).resolve().parent / "lung_segmenter"
"""Where the shipped weights and their card live."""

WEIGHTS_FILE = FOLDER / WEIGHTS_NAME
CARD_FILE = FOLDER / CARD_NAME

MIN_AREA = 0.02
"""Below this share of the image, the segmenter is taken to have found no lungs."""

MIN_PIECE = 0.15
"""A connected piece is kept only if it is at least this share of the largest piece."""


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions, each with batch norm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A U-Net (Ronneberger et al., 2015) for one input channel and one output logit.

    ``width`` channels at full resolution, doubled at each of ``depth`` max-pool steps;
    bilinear up-sampling followed by a 1x1 convolution halves them again on the way up, and the
    skip connection is concatenated. ``width=12, depth=4``: about 1.0 M parameters (2 MB as
    float16).
    """

    def __init__(self, width: int = WIDTH, depth: int = DEPTH) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be positive, got {width}, {depth}")
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(1, chans[0])])
        self.down.extend(_block(chans[i], chans[i + 1]) for i in range(depth))
        self.reduce = nn.ModuleList(
            nn.Conv2d(chans[i + 1], chans[i], 1) for i in reversed(range(depth))
        )
        self.up = nn.ModuleList(_block(2 * chans[i], chans[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, H, W]`` (H, W divisible by ``2**depth``) -> logits ``[N, 1, H, W]``."""
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for reduce, block in zip(self.reduce, self.up, strict=True):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = block(torch.cat([skips.pop(), reduce(x)], dim=1))
        out: torch.Tensor = self.head(x)
        return out


def to_grid(image: np.ndarray, size: int = SIZE) -> torch.Tensor:
    """``image`` (2-D float [0, 1]) quantised to 8 bits and resized to ``[1, size, size]``.

    The part of the input that training caches and augments before :func:`standardise`.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    arr = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    q = np.round(np.clip(arr, 0.0, 1.0) * 255.0) / np.float32(255.0)
    t = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))[None, None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t[0].clamp_(0.0, 1.0)


def network_input(image: np.ndarray, size: int = SIZE) -> torch.Tensor:
    """The network's input ``[1, size, size]`` for a 2-D float [0, 1] image (module docstring)."""
    return standardise(to_grid(image, size))


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Each image of ``x`` (``[..., H, W]``) to zero mean and unit variance (flat: zeros)."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True)
    return (x - mean) / std.clamp_min(1e-3)


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """The two largest connected pieces of ``mask`` (smaller ones only if sizeable), holes filled.

    A lung is one connected region; specks elsewhere (a shoulder, a marker) are dropped, and an
    opacity enclosed by lung stays lung.
    """
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros_like(mask, dtype=bool)
    area = np.bincount(labels.ravel())
    area[0] = 0
    order = np.argsort(area)[::-1][:2]
    keep = np.zeros(count + 1, dtype=bool)
    keep[order] = area[order] >= MIN_PIECE * area[order[0]]
    keep[0] = False
    return np.asarray(ndimage.binary_fill_holes(keep[labels]), dtype=bool)


@dataclass(frozen=True)
class Segmenter:
    """A loaded network and its card (what it was trained on, how well it did)."""

    net: UNet
    card: dict[str, Any]

    @property
    def size(self) -> int:
        """Side of the network's input grid."""
        return int(self.card.get("input_size", SIZE))

    def logits(self, image: np.ndarray) -> torch.Tensor:
        """Logits ``[H, W]`` at the image's own size (bilinear from the network's grid)."""
        x = network_input(image, self.size)[None]
        with torch.inference_mode():
            out = self.net(x)
            out = F.interpolate(out, size=image.shape, mode="bilinear", align_corners=False)
        return out[0, 0]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Boolean lung mask of ``image`` (same shape), cleaned by :func:`clean_mask`."""
        return clean_mask(self.logits(image).numpy() > 0.0)


def build(card: dict[str, Any]) -> UNet:
    """An untrained network shaped as ``card`` says (defaults: :data:`WIDTH`, :data:`DEPTH`)."""
    return UNet(int(card.get("width", WIDTH)), int(card.get("depth", DEPTH)))


def load_segmenter(folder: Path = FOLDER) -> Segmenter:
    """The segmenter in ``folder`` (``weights.pt`` + ``card.json``), its sha256 checked.

    Raises ``ValueError`` when the weights do not match the card's ``weights_sha256`` (a
    truncated or swapped file must not silently give other masks).
    """
    card = read_card(folder)
    return Segmenter(load_checked(folder, card, build(card)), card)


shipped = load_once(load_segmenter)
"""The repository's segmenter, loaded once per process (thread-safe)."""


def segment_lungs(image: np.ndarray) -> np.ndarray:
    """Boolean lung mask of ``image`` (2-D float32 [0, 1], MONOCHROME2) by the shipped network."""
    return shipped()(image)
