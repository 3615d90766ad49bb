"""Random augmentation of gray image batches, as the paper's COVID-19 class augmentation.

Minaee et al. multiply the COVID-19 images by flipping, small rotations and small distortions. Here
that is one batched random affine transform (rotation, scale, shear, translation) plus an optional
horizontal flip and a small brightness / contrast / gamma jitter, applied to gray ``[N, 1, S, S]``
tensors in [0, 1] *before* :func:`models.preprocessing.normalise`, so augmented and plain images go
through the same normalisation as serving. Parameters are drawn from a seeded CPU generator, so a
run is reproducible on the CPU and on CUDA alike.
"""

from __future__ import annotations

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


def augment_batch(
    gray: torch.Tensor, spec: AugmentSpec, gen: torch.Generator, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Randomly transform the images of ``gray`` ``[N, 1, S, S]`` that ``mask`` selects (all: None).

    Areas moved in from outside the image are black, as the film border is.
    """
    if gray.dim() != 4 or gray.shape[1] != 1:
        raise ValueError(f"expected gray images [N, 1, S, S], got {tuple(gray.shape)}")
    n = gray.shape[0]
    theta = _affine_matrices(spec, n, gen)
    bright = _uniform(gen, n, -spec.brightness, spec.brightness)
    contrast = _uniform(gen, n, 1.0 - spec.contrast, 1.0 + spec.contrast)
    gamma = torch.exp(_uniform(gen, n, -spec.gamma, spec.gamma))
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
    result = gray.clone().float()
    result[idx.to(device)] = out
    return result
