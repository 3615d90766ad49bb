"""One path from a grayscale image to the model's input, shared by training and serving.

Input is a 2-D float32 array in [0, 1] with MONOCHROME2 meaning (0 = black), whether it came from
a manifest JPEG (:func:`load_image_file`) or a DICOM instance
(:func:`models.dicom_pixels.dicom_to_array`).
As in the paper, the image is resized to ``input_size`` x ``input_size`` (aspect ratio not kept),
repeated to 3 channels and normalised with the ImageNet mean and standard deviation (or whatever the
model card says).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes a model input; stored in the model card so serving matches training."""

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.input_size < 8:
            raise ValueError(f"input_size must be at least 8, got {self.input_size}")
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
        """Inverse of :meth:`to_dict`."""
        return cls(
            input_size=int(data["input_size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
        )

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
    arr = _as_unit_array(image)
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


def to_model_input(image: np.ndarray, spec: PreprocessSpec = DEFAULT_SPEC) -> torch.Tensor:
    """A 2-D float32 [0, 1] MONOCHROME2 image -> the model's input tensor [3, S, S]."""
    return normalise(resize_image(image, spec.input_size), spec).contiguous()


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
