"""Random augmentation of gray batches: the paper's transforms, and some that erase source cues.

Minaee et al. multiply the COVID-19 images by flipping, small rotations and small distortions. Here
that is one batched random affine transform (rotation, scale, shear, translation) plus an optional
horizontal flip and a small brightness / contrast / gamma jitter, applied to gray ``[N, 1, S, S]``
tensors in [0, 1] *before* :func:`models.preprocessing.normalise`, so augmented and plain images go
through the same normalisation as serving. Parameters are drawn from a seeded CPU generator, so a
run is reproducible on the CPU and on CUDA alike.

The public collections differ in how their images were made: publication figures are small,
blurred and JPEG-compressed, NIH films are clean 8-bit exports, and each collection has its own
borders, markers and burnt-in text. A network can tell the collection (and hence, here, mostly the
label) from those cues alone. The further transforms randomise them, so they stop predicting the
label: a random **border crop** (0 to N % at each edge, resized back; folded into the affine
transform), **border erasing** (rectangles touching the edges, where markers and text sit, filled
with a random gray), a **resolution change** (shrink by a random factor and enlarge back),
**Gaussian blur**, **JPEG re-compression** at a random quality (PIL, on the CPU, per image) and
**Gaussian noise**. Each is off by default (:class:`training.config.AugmentSpec`), and a disabled
transform draws no random numbers, so the paper's recipe gives the same images as before.
"""

from __future__ import annotations

import io
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from training.config import AugmentSpec


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _affine_matrices(spec: AugmentSpec, n: int, gen: torch.Generator) -> torch.Tensor:
    """``[n, 2, 3]`` matrices mapping output to input coordinates for ``F.affine_grid``."""
    angle = torch.deg2rad(_uniform(gen, n, -spec.rotate_deg, spec.rotate_deg))
    shear = torch.deg2rad(_uniform(gen, n, -spec.shear_deg, spec.shear_deg))
    scale = _uniform(gen, n, spec.scale[0], spec.scale[1])
    tx = _uniform(gen, n, -spec.translate, spec.translate) * 2.0
    ty = _uniform(gen, n, -spec.translate, spec.translate) * 2.0
    flip = (
        torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if spec.hflip else torch.ones(n)
    )
    cos, sin = torch.cos(angle), torch.sin(angle)
    # rotation @ shear(x) @ flip, divided by the zoom (grid coordinates sample the input).
    a = (cos * flip) / scale
    b = (cos * torch.tan(shear) - sin) / scale
    c = (sin * flip) / scale
    d = (sin * torch.tan(shear) + cos) / scale
    return torch.stack(
        [torch.stack([a, b, tx], dim=1), torch.stack([c, d, ty], dim=1)], dim=1
    ).float()


def border_crop_matrices(crops: torch.Tensor) -> torch.Tensor:
    """``[n, 2, 3]`` affine matrices that crop ``crops`` ``[n, 4]`` and resize back to the side.

    ``crops`` holds the fractions removed at the left, right, top and bottom edges. In the
    normalised coordinates of ``F.affine_grid`` (``align_corners=False``: -1 and 1 are the outer
    pixel edges) the kept part spans ``[-1 + 2 l, 1 - 2 r]``, so output ``u`` samples
    ``u (1 - l - r) + (l - r)``, and likewise for y.
    """
    left, right, top, bottom = crops.unbind(dim=1)
    zero = torch.zeros_like(left)
    return torch.stack(
        [
            torch.stack([1.0 - left - right, zero, left - right], dim=1),
            torch.stack([zero, 1.0 - top - bottom, top - bottom], dim=1),
        ],
        dim=1,
    ).float()


def _compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """``outer ∘ inner`` of ``[n, 2, 3]`` affine maps (``inner`` applied first)."""
    lin = outer[:, :, :2] @ inner[:, :, :2]
    shift = outer[:, :, :2] @ inner[:, :, 2:] + outer[:, :, 2:]
    return torch.cat([lin, shift], dim=2)


class BorderRects(NamedTuple):
    """One erasing rectangle per image: rows ``[y0, y1)``, columns ``[x0, x1)``, fill ``gray``."""

    y0: torch.Tensor
    y1: torch.Tensor
    x0: torch.Tensor
    x1: torch.Tensor
    gray: torch.Tensor

    def select(self, idx: torch.Tensor) -> BorderRects:
        """The rectangles of the images ``idx``."""
        return BorderRects(*(t[idx] for t in self))


def border_rectangles(
    spec: AugmentSpec, n: int, height: int, width: int, gen: torch.Generator
) -> list[BorderRects]:
    """``spec.border_erase`` rectangles for each of ``n`` images, each touching an image edge.

    The edge is drawn uniformly (top, bottom, left, right); the depth into the image is up to
    ``border_erase_size`` of the side, the length along the edge up to twice that (text lines
    and rulers are long and thin), the position along the edge uniform.
    """
    out = []
    for _ in range(spec.border_erase):
        edge = torch.randint(0, 4, (n,), generator=gen)
        depth_frac = spec.border_erase_size * torch.rand(n, generator=gen)
        length_frac = torch.clamp(2.0 * spec.border_erase_size * torch.rand(n, generator=gen), 0, 1)
        pos = torch.rand(n, generator=gen)
        gray = torch.rand(n, generator=gen)
        horizontal = edge < 2  # along the top or bottom edge
        side_across = torch.where(horizontal, height, width)
        side_along = torch.where(horizontal, width, height)
        depth = torch.clamp(torch.ceil(depth_frac * side_across).long(), min=1)
        length = torch.clamp(torch.ceil(length_frac * side_along).long(), min=1)
        start = torch.floor(pos * (side_along - length + 1).float()).long()
        near = edge % 2 == 0  # top or left: the rectangle starts at 0
        across0 = torch.where(near, torch.zeros_like(depth), side_across - depth)
        across1 = across0 + depth
        y0 = torch.where(horizontal, across0, start)
        y1 = torch.where(horizontal, across1, start + length)
        x0 = torch.where(horizontal, start, across0)
        x1 = torch.where(horizontal, start + length, across1)
        out.append(BorderRects(y0, y1, x0, x1, gray))
    return out


def erase_borders(x: torch.Tensor, rects: list[BorderRects]) -> torch.Tensor:
    """Fill the rectangles (already indexed to the images of ``x``) with their gray."""
    _, _, height, width = x.shape
    rows = torch.arange(height, device=x.device).view(1, 1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, 1, width)
    view = (-1, 1, 1, 1)
    for y0, y1, x0, x1, gray in rects:
        inside = (
            (rows >= y0.to(x.device).view(view))
            & (rows < y1.to(x.device).view(view))
            & (cols >= x0.to(x.device).view(view))
            & (cols < x1.to(x.device).view(view))
        )
        x = torch.where(inside, gray.to(x.device, x.dtype).view(view), x)
    return x


def _change_resolution(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Shrink each image by its factor (antialiased) and enlarge it back (bilinear)."""
    _, _, height, width = x.shape
    out = x.clone()
    for i, factor in enumerate(factors.tolist()):
        small = (max(2, round(height * factor)), max(2, round(width * factor)))
        if small == (height, width):
            continue
        down = F.interpolate(
            x[i : i + 1], size=small, mode="bilinear", align_corners=False, antialias=True
        )
        out[i : i + 1] = F.interpolate(
            down, size=(height, width), mode="bilinear", align_corners=False
        )
    return out


def gaussian_blur(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``x`` ``[N, 1, H, W]`` with its own sigma (pixels; 0: unchanged).

    Separable depthwise convolution with reflected borders, so a blurred border does not darken.
    """
    n, _, height, width = x.shape
    radius = math.ceil(3.0 * float(sigmas.max())) if n else 0
    radius = min(radius, height - 1, width - 1)
    if radius <= 0:
        return x
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    safe = sigmas.float().clamp(min=1e-6).view(-1, 1)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / safe) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    kernel = kernel.to(x.device, x.dtype)
    batch = x.reshape(1, n, height, width)
    batch = F.pad(batch, (0, 0, radius, radius), mode="reflect")
    batch = F.conv2d(batch, kernel.view(n, 1, -1, 1), groups=n)
    batch = F.pad(batch, (radius, radius, 0, 0), mode="reflect")
    batch = F.conv2d(batch, kernel.view(n, 1, 1, -1), groups=n)
    return batch.reshape(n, 1, height, width)


def jpeg_recompress(image: torch.Tensor, quality: int) -> torch.Tensor:
    """One gray image ``[1, H, W]`` in [0, 1] through 8-bit JPEG at ``quality`` (PIL, CPU)."""
    from PIL import Image

    arr = (image[0].detach().float().cpu().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    buffer = io.BytesIO()
    Image.fromarray(arr.numpy(), mode="L").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        back = np.asarray(decoded.convert("L"), dtype=np.float32) / np.float32(255.0)
    return torch.from_numpy(back)[None].to(image.device, image.dtype)


def augment_batch(
    gray: torch.Tensor, spec: AugmentSpec, gen: torch.Generator, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Randomly transform the images of ``gray`` ``[N, 1, S, S]`` that ``mask`` selects (all: None).

    Order: border crop and affine transform (one resampling), gamma / contrast / brightness,
    border erasing, resolution change, blur, JPEG, noise; so erased rectangles are blurred and
    compressed like the rest of the image and carry no sharp edge of their own. Areas moved in
    from outside the image are black, as the film border is. Parameters are drawn for all ``N``
    images (selected or not), so a batch's draws do not depend on the mask.
    """
    if gray.dim() != 4 or gray.shape[1] != 1:
        raise ValueError(f"expected gray images [N, 1, S, S], got {tuple(gray.shape)}")
    n, _, height, width = gray.shape
    theta = _affine_matrices(spec, n, gen)
    bright = _uniform(gen, n, -spec.brightness, spec.brightness)
    contrast = _uniform(gen, n, 1.0 - spec.contrast, 1.0 + spec.contrast)
    gamma = torch.exp(_uniform(gen, n, -spec.gamma, spec.gamma))
    # The source-cue transforms draw only when enabled: the paper's recipe stays bit-identical.
    if spec.border_crop > 0:
        crops = spec.border_crop * torch.rand(n, 4, generator=gen)
        theta = _compose(border_crop_matrices(crops), theta)
    rects = border_rectangles(spec, n, height, width, gen) if spec.border_erase else []
    factors = (
        torch.exp(_uniform(gen, n, math.log(spec.downscale), 0.0)) if spec.downscale < 1 else None
    )
    sigmas = _uniform(gen, n, 0.0, spec.blur_sigma) if spec.blur_sigma > 0 else None
    jpeg: tuple[torch.Tensor, torch.Tensor] | None = None
    if spec.jpeg_quality:
        jpeg_on = torch.rand(n, generator=gen) < spec.jpeg_p
        jpeg = (jpeg_on, torch.randint(spec.jpeg_quality, 96, (n,), generator=gen))
    noise: torch.Tensor | None = None
    if spec.noise_std > 0:
        noise = _uniform(gen, n, 0.0, spec.noise_std).view(-1, 1, 1, 1) * torch.randn(
            gray.shape, generator=gen
        )

    if mask is None:
        mask = torch.ones(n, dtype=torch.bool)
    mask = mask.cpu()
    if not bool(mask.any()):
        return gray
    idx = torch.nonzero(mask).squeeze(1)
    device = gray.device
    sel = gray[idx.to(device)].float()
    grid = F.affine_grid(theta[idx].to(device), list(sel.shape), align_corners=False)
    out = F.grid_sample(sel, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    view = (-1, 1, 1, 1)
    out = out.clamp(0.0, 1.0) ** gamma[idx].to(device).view(view)
    mean = out.mean(dim=(2, 3), keepdim=True)
    out = (out - mean) * contrast[idx].to(device).view(view) + mean
    out = (out + bright[idx].to(device).view(view)).clamp(0.0, 1.0)
    if rects:
        out = erase_borders(out, [r.select(idx) for r in rects])
    if factors is not None:
        out = _change_resolution(out, factors[idx])
    if sigmas is not None:
        out = gaussian_blur(out, sigmas[idx])
    if jpeg is not None:
        for j, i in enumerate(idx.tolist()):
            if bool(jpeg[0][i]):
                out[j] = jpeg_recompress(out[j], int(jpeg[1][i]))
    if noise is not None:
        out = out + noise[idx].to(device)
    out = out.clamp(0.0, 1.0)
    result = gray.clone().float()
    result[idx.to(device)] = out
    return result


# The small networks' recipe (view check, lung segmenter): each script draws its own rotation,
# scale and shift ranges; the matrix they make and the photometric jitter after it are shared.


def rotation_scale_matrices(
    angle: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor
) -> torch.Tensor:
    """``[n, 2, 3]`` matrices for ``F.affine_grid``: rotate by ``angle`` (radians), scale x and y
    by ``sx`` / ``sy`` (negative: flipped), shift by ``tx`` / ``ty`` (in [-1, 1] units)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(angle.shape[0], 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sx, -sin * sy
    theta[:, 1, 0], theta[:, 1, 1] = sin * sx, cos * sy
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    return theta


def photometric_jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per image of ``x`` ``[N, 1, S, S]`` in [0, 1]: gamma, contrast, brightness, a 3x3 blur
    (30 % of images) and Gaussian noise, drawn in that order from ``gen``; clamped to [0, 1]."""
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return _uniform(gen, n, lo, hi)

    gamma = torch.exp(uniform(-0.5, 0.5)).view(n, 1, 1, 1)
    x = x.clamp(1e-4, 1.0) ** gamma
    x = (x - 0.5) * uniform(0.7, 1.3).view(n, 1, 1, 1) + 0.5 + uniform(-0.1, 0.1).view(n, 1, 1, 1)
    blur = torch.rand(n, generator=gen) < 0.3
    if blur.any():
        kernel = torch.tensor([1.0, 2.0, 1.0]) / 4.0
        k2 = (kernel[:, None] * kernel[None, :]).view(1, 1, 3, 3)
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), k2)
    x = x + torch.randn(x.shape, generator=gen) * uniform(0.0, 0.03).view(n, 1, 1, 1)
    return x.clamp(0.0, 1.0)
