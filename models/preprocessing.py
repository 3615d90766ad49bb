"""One path from a grayscale image to the model's input, shared by training and serving.

Input is a 2-D float32 array in [0, 1] with MONOCHROME2 meaning (0 = black), whether it came from
a manifest JPEG (:func:`load_image_file`) or a DICOM instance
(:func:`models.dicom_pixels.dicom_to_array`).
As in the paper, the image is resized to ``input_size`` x ``input_size`` (aspect ratio not kept),
repeated to 3 channels and normalised with the ImageNet mean and standard deviation (or whatever the
model card says).

Optional steps (off by default, so a card without them gives the inputs it always gave), in this
order, all at the image's own resolution before the resize (:func:`prepare_gray`):

1. lung fields are found on the whole image (:func:`models.lungs.lung_fields` by the spec's
   ``lung_finder``: the learned segmenter, or the classical method older cards were trained with);
2. ``lung_crop``: the image is cropped to the lung fields' bounding box grown by ``crop_margin``
   of its size on each side;
3. ``equalise``: ``"hist"`` (histogram equalisation; with ``lung_mask`` its histogram is taken
   inside the mask only, so borders and labels do not shape it) or ``"clahe"`` (contrast-limited
   adaptive histogram equalisation, :func:`clahe`);
4. ``lung_mask``: everything outside the lung mask dilated by ``mask_margin`` of the image's
   shorter side becomes mid-gray 0.5 (the occluder's fill, so "nothing here" looks the same to
   the model in training, masking and occlusion).

Training caches the output of :func:`prepare_gray` (``training.dataset``), serving calls
:func:`to_model_input`, which is ``normalise(prepare_gray(image))``: the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.lungs import (
    DEFAULT_LUNG_FINDER,
    LEGACY_LUNG_FINDER,
    LUNG_FINDERS,
    dilate_mask,
    lung_fields,
)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

EQUALISE_METHODS: tuple[str, ...] = ("none", "hist", "clahe")
"""Values of :attr:`PreprocessSpec.equalise`."""

OPTIONAL_MAX_SIDE = 512
"""Longest side (pixels) at which the optional steps run; the manifest JPEGs' longest side."""

CLAHE_TILES = 8
"""CLAHE tiles per side (the image is cut into 8 x 8 contextual regions, as is usual)."""

CLAHE_CLIP = 2.5
"""CLAHE clip limit as a multiple of a tile's mean bin count (OpenCV's ``clipLimit`` meaning)."""


def _finder_default(data: Mapping[str, Any]) -> str:
    """The lung finder of a spec dict that names none (see :meth:`PreprocessSpec.from_dict`)."""
    if data.get("lung_crop") or data.get("lung_mask"):
        return LEGACY_LUNG_FINDER
    return DEFAULT_LUNG_FINDER


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes a model input; stored in the model card so serving matches training."""

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    lung_crop: bool = False
    """Crop to the lung fields' bounding box (plus ``crop_margin``) before resizing."""
    lung_mask: bool = False
    """Set everything outside the (dilated) lung mask to mid-gray 0.5."""
    equalise: str = "none"
    """``none``, ``hist`` (histogram equalisation) or ``clahe``; after cropping."""
    crop_margin: float = 0.08
    """Margin added on each side of the lung box, as a fraction of its height / width."""
    mask_margin: float = 0.04
    """Dilation of the lung mask, as a fraction of the image's shorter side."""
    lung_finder: str = DEFAULT_LUNG_FINDER
    """What finds the lung fields for the crop and mask (:data:`models.lungs.LUNG_FINDERS`). A
    dict without it (a card written before the learned segmenter) means
    :data:`models.lungs.LEGACY_LUNG_FINDER`, the finder that model was trained with."""

    def __post_init__(self) -> None:
        if self.input_size < 8:
            raise ValueError(f"input_size must be at least 8, got {self.input_size}")
        if self.equalise not in EQUALISE_METHODS:
            raise ValueError(
                f"equalise must be one of {', '.join(EQUALISE_METHODS)}, got {self.equalise!r}"
            )
        if self.lung_finder not in LUNG_FINDERS:
            raise ValueError(
                f"lung_finder must be one of {', '.join(LUNG_FINDERS)}, got {self.lung_finder!r}"
            )
        for name in ("crop_margin", "mask_margin"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 0.5:
                raise ValueError(f"{name} must be in [0, 0.5], got {value}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "lung_crop", bool(self.lung_crop))
        object.__setattr__(self, "lung_mask", bool(self.lung_mask))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std must have 3 values (one per RGB channel)")
        if any(v <= 0 for v in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (lists, not tuples)."""
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessSpec:
        """Inverse of :meth:`to_dict`.

        ``input_size``, ``mean`` and ``std`` are required; the optional steps default to off, so
        dicts written before they existed (old model cards) load with the behaviour they had;
        for the same reason a missing ``lung_finder`` is :data:`models.lungs.LEGACY_LUNG_FINDER`
        when the dict crops or masks by the lungs (and the default otherwise, so that a plain dict
        gives ``PreprocessSpec()``).
        Other keys are ignored, so a whole model card dict can be passed.
        """
        default = cls()
        return cls(
            input_size=int(data["input_size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            lung_crop=bool(data.get("lung_crop", default.lung_crop)),
            lung_mask=bool(data.get("lung_mask", default.lung_mask)),
            equalise=str(data.get("equalise", default.equalise)),
            crop_margin=float(data.get("crop_margin", default.crop_margin)),
            mask_margin=float(data.get("mask_margin", default.mask_margin)),
            lung_finder=str(data.get("lung_finder", _finder_default(data))),
        )

    @property
    def uses_lungs(self) -> bool:
        """Whether the lung fields are needed (crop or mask)."""
        return self.lung_crop or self.lung_mask

    @property
    def is_plain(self) -> bool:
        """Whether this is the paper's preprocessing (resize only, no optional step)."""
        return not self.uses_lungs and self.equalise == "none"

    def gray_value(self) -> torch.Tensor:
        """Per-channel normalised value of mid-gray (0.5), shape [3, 1, 1] (occlusion fill)."""
        return self.normalise_value(0.5)

    def normalise_value(self, value: float) -> torch.Tensor:
        """Per-channel normalised value of a uniform gray level ``value``, shape [3, 1, 1]."""
        mean = torch.tensor(self.mean, dtype=torch.float32)
        std = torch.tensor(self.std, dtype=torch.float32)
        return ((value - mean) / std).view(3, 1, 1)


DEFAULT_SPEC = PreprocessSpec()


def _as_unit_array(image: np.ndarray) -> np.ndarray:
    """Validate a 2-D [0, 1] image and return it as contiguous float32."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    arr = np.ascontiguousarray(image, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("image holds NaN or infinite values")
    if arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
        raise ValueError(
            f"image values must lie in [0, 1] (got {arr.min():g}..{arr.max():g}); "
            "scale it first (dicom_to_array and load_image_file do)"
        )
    return arr


def resize_image(image: np.ndarray, size: int) -> torch.Tensor:
    """Resize a 2-D [0, 1] image to ``size`` x ``size``: bilinear with antialiasing, float32.

    Returns a tensor of shape [1, size, size] still in [0, 1] (training augments this one).
    """
    return _resize(_as_unit_array(image), size)


def _resize(arr: np.ndarray, size: int) -> torch.Tensor:
    """:func:`resize_image` of an already validated contiguous float32 array."""
    t = torch.from_numpy(arr)[None, None]
    if arr.shape != (size, size):
        t = F.interpolate(
            t, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    return t[0].clamp_(0.0, 1.0)


def normalise(gray: torch.Tensor, spec: PreprocessSpec = DEFAULT_SPEC) -> torch.Tensor:
    """[1, S, S] or [N, 1, S, S] gray in [0, 1] -> 3 channels normalised by the spec."""
    mean = torch.tensor(spec.mean, dtype=gray.dtype, device=gray.device)
    std = torch.tensor(spec.std, dtype=gray.dtype, device=gray.device)
    if gray.dim() == 3:
        return (gray.expand(3, -1, -1) - mean.view(3, 1, 1)) / std.view(3, 1, 1)
    if gray.dim() == 4:
        return (gray.expand(-1, 3, -1, -1) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    raise ValueError(f"expected [1, S, S] or [N, 1, S, S], got {tuple(gray.shape)}")


def _levels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(8-bit level index, continuous level position) of a [0, 1] image.

    Histograms are taken over 256 levels (the manifest JPEGs are 8-bit); the position keeps the
    finer steps of a 12- or 16-bit DICOM, and the lookup tables are interpolated between levels,
    so pixels within a level of each other map within a small step of each other.
    """
    pos = np.clip(image, 0.0, 1.0) * np.float32(255.0)
    return np.rint(pos).astype(np.intp), pos


def _apply_lut(lut: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``lut`` ([..., 256]) at continuous level positions ``pos``, linear between levels."""
    lo = np.minimum(pos.astype(np.intp), 254)
    frac = (pos - lo).astype(np.float32)
    return lut[..., lo] * (1 - frac) + lut[..., lo + 1] * frac


def equalise_hist(image: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """Histogram equalisation of a 2-D [0, 1] image, float32 [0, 1].

    The histogram (256 levels) is taken over ``region`` (a boolean mask) when given and not
    empty, else over the whole image; the darkest level present maps to 0, the brightest to 1.
    """
    q, pos = _levels(image)
    sample = q[region] if region is not None and region.any() else q
    cdf = np.cumsum(np.bincount(sample.ravel(), minlength=256)[:256]).astype(np.float64)
    first = cdf[np.flatnonzero(cdf)[0]] if cdf[-1] > 0 else 0.0
    span = cdf[-1] - first
    if span <= 0:
        return np.clip(image, 0.0, 1.0).astype(np.float32)
    lut = np.clip((cdf - first) / span, 0.0, 1.0).astype(np.float32)
    return np.clip(_apply_lut(lut, pos), 0.0, 1.0).astype(np.float32)


def clahe(image: np.ndarray, tiles: int = CLAHE_TILES, clip: float = CLAHE_CLIP) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (Zuiderveld 1994) of a 2-D [0, 1] image.

    The image is cut into ``tiles`` x ``tiles`` regions; each region's 256-level histogram is
    clipped at ``clip`` times its mean bin count (the excess spread evenly over all bins), which
    bounds how much noise in flat areas is amplified, and turned into a lookup table. Every pixel
    takes the bilinear blend of the tables of the four nearest region centres, so there are no
    seams. Pure numpy, deterministic; returns float32 in [0, 1].
    """
    h, w = image.shape
    ty, tx = max(1, min(tiles, h)), max(1, min(tiles, w))
    q, pos = _levels(image)
    row_tile = np.arange(h) * ty // h
    col_tile = np.arange(w) * tx // w
    tile_id = row_tile[:, None] * tx + col_tile[None, :]
    hist = np.bincount((tile_id * 256 + q).ravel(), minlength=ty * tx * 256).astype(np.float64)
    hist = hist.reshape(ty * tx, 256)
    counts = hist.sum(axis=1, keepdims=True)
    limit = np.maximum(clip * counts / 256.0, 1.0)
    excess = np.maximum(hist - limit, 0.0).sum(axis=1, keepdims=True)
    hist = np.minimum(hist, limit) + excess / 256.0
    luts = (np.cumsum(hist, axis=1) / np.maximum(counts, 1.0)).astype(np.float32)
    luts = np.clip(luts, 0.0, 1.0).reshape(ty, tx, 256)

    def _axis(n: int, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        centre = np.clip((np.arange(n) + 0.5) * t / n - 0.5, 0.0, t - 1.0)
        i0 = np.minimum(np.floor(centre).astype(np.intp), max(t - 2, 0))
        i1 = np.minimum(i0 + 1, t - 1)
        return i0, i1, (centre - i0).astype(np.float32)

    y0, y1, wy = _axis(h, ty)
    x0, x1, wx = _axis(w, tx)
    wy, wx = wy[:, None], wx[None, :]
    lo = np.minimum(pos.astype(np.intp), 254)
    frac = (pos - lo).astype(np.float32)

    flat_luts = luts.reshape(-1)

    def _at(iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
        """Table of region (iy, ix) per pixel, at the pixel's level (gathered, not [h, w, 256])."""
        index = (iy[:, None] * tx + ix[None, :]) * 256 + lo
        return flat_luts[index] * (1 - frac) + flat_luts[index + 1] * frac

    out = (1 - wy) * ((1 - wx) * _at(y0, x0) + wx * _at(y0, x1)) + wy * (
        (1 - wx) * _at(y1, x0) + wx * _at(y1, x1)
    )
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _shrink(arr: np.ndarray, max_side: int) -> np.ndarray:
    """``arr`` resized (bilinear, antialiased, aspect kept) so its longer side is ``max_side``."""
    h, w = arr.shape
    if max(h, w) <= max_side:
        return arr
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    t = F.interpolate(
        torch.from_numpy(arr)[None, None],
        size=size,
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    return np.ascontiguousarray(t[0, 0].clamp_(0.0, 1.0).numpy())


def _optional_steps(arr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Lung crop, equalisation and lung mask (those the spec asks for).

    They run on the image shrunk to :data:`OPTIONAL_MAX_SIDE` at most: the manifest's JPEGs
    (training) are at most that size already, so a 2,000-pixel DICOM is equalised at the scale
    the model was trained on, and the steps cost the same for both.
    """
    arr = _shrink(arr, OPTIONAL_MAX_SIDE)
    keep: np.ndarray | None = None
    if spec.uses_lungs:
        fields = lung_fields(arr, spec.lung_finder)
        if spec.lung_mask:
            keep = dilate_mask(fields.mask, spec.mask_margin)
        if spec.lung_crop:
            top, bottom, left, right = fields.box_with_margin(spec.crop_margin)
            arr = arr[top:bottom, left:right]
            if keep is not None:
                keep = keep[top:bottom, left:right]
    if spec.equalise == "hist":
        arr = equalise_hist(arr, keep)
    elif spec.equalise == "clahe":
        arr = clahe(arr)
    if keep is not None:
        arr = np.where(keep, arr, np.float32(0.5))
    return np.ascontiguousarray(arr, dtype=np.float32)


def prepare_gray(image: np.ndarray, spec: PreprocessSpec = DEFAULT_SPEC) -> torch.Tensor:
    """A 2-D float32 [0, 1] image -> the gray model input [1, S, S] in [0, 1], before normalising.

    Applies the spec's optional steps (module docstring) and resizes. With the default spec this
    is exactly :func:`resize_image`. Training caches this and augments it; serving normalises it.
    """
    arr = _as_unit_array(image)
    if not spec.is_plain:
        arr = _optional_steps(arr, spec)
    return _resize(arr, spec.input_size)


def model_input_box(
    image: np.ndarray, spec: PreprocessSpec = DEFAULT_SPEC
) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the part of ``image`` the model sees (bottom/right exclusive).

    The whole image unless ``spec.lung_crop``; a heatmap over the model input belongs in this box.
    The box is found as :func:`prepare_gray` finds it (on the shrunk image) and scaled back.
    """
    h, w = image.shape
    if not spec.lung_crop:
        return 0, int(h), 0, int(w)
    small = _shrink(_as_unit_array(image), OPTIONAL_MAX_SIDE)
    fields = lung_fields(small, spec.lung_finder)
    top, bottom, left, right = fields.box_with_margin(spec.crop_margin)
    sy, sx = h / small.shape[0], w / small.shape[1]
    return (
        max(0, round(top * sy)),
        min(int(h), round(bottom * sy)),
        max(0, round(left * sx)),
        min(int(w), round(right * sx)),
    )


def to_model_input(image: np.ndarray, spec: PreprocessSpec = DEFAULT_SPEC) -> torch.Tensor:
    """A 2-D float32 [0, 1] MONOCHROME2 image -> the model's input tensor [3, S, S]."""
    return normalise(prepare_gray(image, spec), spec).contiguous()


def load_image_file(path: str | Path) -> np.ndarray:
    """A JPEG/PNG image of a manifest as a 2-D float32 array in [0, 1] (MONOCHROME2 meaning).

    8-bit images are divided by 255, 16-bit ones by 65535; colour images are converted to luma
    (ITU-R 601, PIL's ``L``); the EXIF orientation is applied.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        opened.load()
        img: Image.Image = opened
        img = ImageOps.exif_transpose(img) or img
        if img.mode in {"I;16", "I;16B", "I;16L", "I;16N"}:
            return (np.asarray(img, dtype=np.float32) / 65535.0).astype(np.float32)
        if img.mode == "I":
            arr = np.asarray(img, dtype=np.float64)
            top = 65535.0 if arr.max() > 255 else 255.0
            return np.clip(arr / top, 0.0, 1.0).astype(np.float32)
        if img.mode == "F":
            arr = np.asarray(img, dtype=np.float32)
            lo, hi = float(arr.min()), float(arr.max())
            return ((arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)).astype(np.float32)
        if img.mode in {"LA", "RGBA", "PA"} or (img.mode == "P" and "transparency" in img.info):
            # Flatten transparency on black, as the manifest images were prepared.
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            img = Image.alpha_composite(background, rgba)
        gray = img.convert("L")
        return np.asarray(gray, dtype=np.float32) / np.float32(255.0)
