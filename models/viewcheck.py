"""A view and modality check from the pixels: frontal chest radiograph, lateral, or other.

Why: the header gate (:mod:`worker.gate`) trusts View Position, Modality and Body Part Examined,
but real PACS traffic carries laterals without View Position (common on CR) and CT images or
localisers wrapped as CR. The classifier, trained on frontal films only, calls such images
"COVID-19: Present" as readily as a frontal film. This small network looks at the image itself,
before the classifier, and says which of :data:`CLASSES` it is.

Input (:func:`network_input`, shared with training so the two cannot drift): the 2-D float [0, 1]
MONOCHROME2 image every other path takes, averaged down by an integer factor and resized to
:data:`SIZE` x :data:`SIZE` (aspect ratio not kept, as the classifier's input), then standardised
to zero mean and unit variance per image. Cheap on purpose: a 2500 x 2000 film costs a few
milliseconds, not the 40 ms of a full-resolution antialiased resize.

Decision (:meth:`ViewCheck.__call__`): ``frontal`` when P(frontal) reaches the card's
``frontal_threshold`` (0.5, fixed before training: nothing was tuned on held-out images), else
the likelier of the other two classes. Held-out figures: :data:`CARD_FILE` and
``docs/training.md``, "View check".

The weights (float16 state dict, :data:`WEIGHTS_FILE`) are checked against the sha256 in the card
on the first load; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.bundled import CARD_NAME, WEIGHTS_NAME, load_checked, load_once, read_card

CLASSES: tuple[str, ...] = ("frontal", "lateral", "other")
"""What the network tells apart: a frontal chest radiograph (the only view analysed), a lateral
chest radiograph, and anything else (a CT slice or localiser, a non-chest image)."""

FRONTAL, LATERAL, OTHER = CLASSES

SIZE = 64
"""Side of the square grid the network sees (pixels)."""

WIDTHS: tuple[int, ...] = (16, 32, 64, 128)
"""Channels of each stage; every stage but the first starts with a 2x2 max-pool."""

FRONTAL_THRESHOLD = 0.5
"""Default P(frontal) from which an image counts as frontal (the card may set another)."""

FOLDER = Path(__file__).resolve().parent / "view_check"
"""Where the shipped weights and their card live."""

WEIGHTS_FILE = FOLDER / WEIGHTS_NAME
CARD_FILE = FOLDER / CARD_NAME


def _conv(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    """A convolution (no bias), batch norm and ReLU."""
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class ViewNet(nn.Module):
    """A plain CNN: a 5x5 stride-2 stem, then per stage two 3x3 convolutions with batch norm and
    ReLU (every stage but the first after a 2x2 max-pool), global average pooling, dropout and a
    linear layer to one logit per class. About 290 k parameters with :data:`WIDTHS` (0.6 MB as
    float16) and 15 M multiply-adds per 64 x 64 image: cheap to serve and to train on a CPU."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS, classes: int = len(CLASSES)) -> None:
        super().__init__()
        if not widths or min(widths) < 1 or classes < 2:
            raise ValueError(f"widths must be positive and classes >= 2, got {widths}, {classes}")
        layers: list[nn.Module] = _conv(1, widths[0], kernel=5, stride=2)
        c_in = widths[0]
        for i, c_out in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            for c in (c_in, c_out):
                layers += _conv(c, c_out)
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, H, W]`` -> logits ``[N, classes]``."""
        x = self.features(x).mean(dim=(-2, -1))
        out: torch.Tensor = self.head(self.dropout(x))
        return out


def to_grid(image: np.ndarray, size: int = SIZE) -> torch.Tensor:
    """``image`` (2-D float [0, 1]) averaged down and resized to ``[1, size, size]`` in [0, 1].

    First an integer-factor block average (so that the shorter side stays at least ``2 * size``),
    then an antialiased bilinear resize of the small remainder. The part of the input that
    training caches and augments before :func:`standardise`.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    factor = min(image.shape) // (2 * size)
    if factor >= 2:
        t = F.avg_pool2d(t, factor, factor)
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return torch.nan_to_num(t[0], nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Each image of ``x`` (``[..., H, W]``) to zero mean and unit variance (flat: zeros)."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True)
    return (x - mean) / std.clamp_min(1e-3)


def network_input(image: np.ndarray, size: int = SIZE) -> torch.Tensor:
    """The network's input ``[1, size, size]`` for a 2-D float [0, 1] image (module docstring)."""
    return standardise(to_grid(image, size))


@dataclass(frozen=True)
class ViewResult:
    """What the check says about one image: the class and every class's probability."""

    view: str
    probabilities: dict[str, float]

    @property
    def frontal(self) -> bool:
        """True when the image is taken for a frontal chest radiograph."""
        return self.view == FRONTAL


def decide(probabilities: dict[str, float], frontal_threshold: float) -> str:
    """``frontal`` when its probability reaches the threshold, else the likelier other class."""
    if probabilities[FRONTAL] >= frontal_threshold:
        return FRONTAL
    return max((c for c in probabilities if c != FRONTAL), key=lambda c: probabilities[c])


@dataclass(frozen=True)
class ViewCheck:
    """A loaded network and its card (version, classes, what it was trained on, how it did)."""

    net: ViewNet
    card: dict[str, Any]

    @property
    def size(self) -> int:
        """Side of the network's input grid."""
        return int(self.card.get("input_size", SIZE))

    @property
    def version(self) -> str:
        """The card's version (recorded in the result objects' algorithm parameters)."""
        return str(self.card.get("version", "unversioned"))

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in the order of the network's outputs."""
        return tuple(self.card.get("classes", CLASSES))

    @property
    def frontal_threshold(self) -> float:
        """P(frontal) from which an image counts as frontal."""
        return float(self.card.get("frontal_threshold", FRONTAL_THRESHOLD))

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax ``[N, classes]`` of network inputs ``[N, 1, size, size]``."""
        with torch.inference_mode():
            return torch.softmax(self.net(images), dim=1)

    def __call__(self, image: np.ndarray) -> ViewResult:
        """The view of ``image`` (2-D float [0, 1], MONOCHROME2) with every class's probability."""
        p = self.probabilities(network_input(image, self.size)[None])[0].tolist()
        probs = {name: round(float(v), 6) for name, v in zip(self.classes, p, strict=True)}
        return ViewResult(decide(probs, self.frontal_threshold), probs)


def build(card: dict[str, Any]) -> ViewNet:
    """An untrained network shaped as ``card`` says (defaults: :data:`WIDTHS`, :data:`CLASSES`)."""
    widths = tuple(int(w) for w in card.get("widths", WIDTHS))
    return ViewNet(widths, len(card.get("classes", CLASSES)))


def load_view_check(folder: Path = FOLDER) -> ViewCheck:
    """The view check in ``folder`` (``weights.pt`` + ``card.json``), its sha256 checked.

    Raises ``ValueError`` when the weights do not match the card's ``weights_sha256`` (a
    truncated or swapped file must not silently let laterals through).
    """
    card = read_card(folder)
    if tuple(card.get("classes", CLASSES)) != CLASSES:
        raise ValueError(f"{folder}: classes {card.get('classes')} are not {list(CLASSES)}")
    return ViewCheck(load_checked(folder, card, build(card)), card)


shipped = load_once(load_view_check)
"""The repository's view check, loaded once per process (thread-safe)."""


def check_view(image: np.ndarray) -> ViewResult:
    """The view of ``image`` (2-D float32 [0, 1], MONOCHROME2) by the shipped network."""
    return shipped()(image)
