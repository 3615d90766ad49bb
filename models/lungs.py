"""Lung fields of a frontal chest radiograph: where a model that reads the lungs should look.

Interface used by preprocessing (lung-field cropping and masking of the model input) and by the
evaluation (shortcut probes, heatmap localisation). ``find_lung_fields`` takes the same 2-D float32
[0, 1] MONOCHROME2 image every other path takes and returns a boolean mask of the same shape.

The current implementation is a geometric thorax prior: two ellipses placed where the lung fields
of a frontal PA/AP film lie. It never fails, which matters: a localiser that fails more often on
COVID-19 films would make its crop a new shortcut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LungFields:
    """A lung-field mask and how it was found.

    ``mask`` is boolean with the image's shape; ``method`` names what produced it ("prior" for the
    geometric prior); ``fallback`` is True when a detector's answer was implausible and the prior
    was used instead (the evaluation reports that rate per class and source).
    """

    mask: np.ndarray
    method: str
    fallback: bool = False

    def bbox(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) of the mask, bottom/right exclusive; whole image if empty."""
        rows = np.flatnonzero(self.mask.any(axis=1))
        cols = np.flatnonzero(self.mask.any(axis=0))
        if rows.size == 0 or cols.size == 0:
            h, w = self.mask.shape
            return 0, h, 0, w
        return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def prior_mask(shape: tuple[int, int]) -> np.ndarray:
    """Two ellipses where the lung fields of a frontal chest film usually lie (bool, ``shape``)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy = (yy + 0.5) / h
    xx = (xx + 0.5) / w
    mask = np.zeros(shape, dtype=bool)
    for cx in (0.31, 0.69):
        mask |= ((xx - cx) / 0.17) ** 2 + ((yy - 0.47) / 0.31) ** 2 <= 1.0
    return mask


def find_lung_fields(image: np.ndarray) -> LungFields:
    """The lung fields of ``image`` (2-D float32 in [0, 1], MONOCHROME2)."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    return LungFields(mask=prior_mask((int(image.shape[0]), int(image.shape[1]))), method="prior")
