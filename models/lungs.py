"""Lung fields of a frontal chest radiograph: where a model that reads the lungs should look.

Interface used by preprocessing (lung-field cropping and masking of the model input) and by the
evaluation (shortcut probes, heatmap localisation). :func:`lung_fields` takes the same 2-D float32
[0, 1] MONOCHROME2 image every other path takes and returns a :class:`LungFields` whose boolean
mask has the same shape. Two finders answer it (:data:`LUNG_FINDERS`):

- ``learned`` (the default): the U-Net of :mod:`models.lungseg`, trained on JSRT and V7 Labs
  masks, whose weights ship in the repository;
- ``heuristic``: the classical method below (:func:`find_lung_fields`). It stays because model
  cards trained with a lung crop or mask before the network existed were trained on its masks
  (:data:`LEGACY_LUNG_FINDER`): their preprocessing must keep giving what they were trained on.

The classical method (no learned weights):

1. The image is quantised to 8 bits (so a JPEG and the same pixels via DICOM give the same mask)
   and shrunk to a :data:`WORK` x :data:`WORK` grid (aspect ratio not kept, as the model input).
2. Its grey levels are stretched between the 1st and 99th percentiles of the central region, so
   borders, labels and collimation do not set the contrast, and it is smoothed a little.
3. Lung fields are the dark regions *inside* the bright body. Each pixel's depth is how far it
   lies below the lower of the two brightest points left and right of it in its row (1-D hole
   filling, :func:`_row_depth`): the air outside the body reaches the image edge without climbing
   a wall and has depth ~0, a lung lies between the chest wall and the mediastinum. The depth is
   thresholded with hysteresis (Otsu level over the thorax region, grown down to
   :data:`_WEAK` of it), an opening cuts thin bridges, and the mediastinum (the brightest column
   near the middle) splits the two sides.
4. On each side the dark component that overlaps the geometric prior most, plus any sizeable one
   lying mostly inside the prior, is that lung; it is closed, its holes are filled (an opacity
   enclosed by aerated lung, e.g. COVID-19 consolidation, stays inside), opened, and its largest
   piece kept.
5. Each lung is checked for plausibility (area, size, position, contact with the image border,
   how much lies far outside the prior). A side that fails while the other passes is replaced by
   the mirror image of the good one about the mediastinum (``method="mirrored"``: a lung made
   white by consolidation or effusion must not lose its crop); when both fail, the mirror is
   implausible too, or the two lungs differ too much in area, the geometric prior is returned
   with ``fallback=True``.

Deterministic numpy / scipy operations on a 128-pixel grid: ~10-20 ms per image on one core.
Where it fails, per source and class, is in ``docs/training.md`` ("Lung fields").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from models.lungseg import MIN_AREA, segment_lungs

LUNG_FINDERS: tuple[str, ...] = ("learned", "heuristic")
"""What finds the lung fields: the shipped network or the classical method."""

DEFAULT_LUNG_FINDER = "learned"
"""The finder of new trainings, the probes and the localisation measure."""

LEGACY_LUNG_FINDER = "heuristic"
"""The finder of a model card that names none (written before the network existed)."""

MAX_AREA = 0.8
"""Above this share of the image, a segmenter's mask is taken to be no lung fields."""

WORK = 128
"""Side of the square grid the localiser works on (pixels)."""

_WEAK = 0.65
"""Hysteresis: a dark region is kept down to this fraction of the Otsu depth level."""

_MEDIASTINUM_CONTRAST = 0.08
"""How much brighter than the lungs the midline band must be (stretched [0, 1] grey scale)."""

_PRIOR_CX: tuple[float, float] = (0.31, 0.69)
_PRIOR_CY = 0.47
_PRIOR_RX = 0.17
_PRIOR_RY = 0.31


@dataclass(frozen=True)
class LungFields:
    """A lung-field mask and how it was found.

    ``mask`` is boolean with the image's shape; ``method`` names what produced it ("learned" for
    the network of :mod:`models.lungseg`; for the classical method "threshold" when both lungs
    were found, "mirrored" when one was found and mirrored to the other side; "prior" for the
    geometric prior); ``fallback`` is True when a detector's answer was
    implausible and the prior was used instead (the evaluation reports that rate per class and
    source). ``reason`` says why the detection was rejected (empty when it was not).
    """

    mask: np.ndarray
    method: str
    fallback: bool = False
    reason: str = ""

    def bbox(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) of the mask, bottom/right exclusive; whole image if empty."""
        rows = np.flatnonzero(self.mask.any(axis=1))
        cols = np.flatnonzero(self.mask.any(axis=0))
        if rows.size == 0 or cols.size == 0:
            h, w = self.mask.shape
            return 0, h, 0, w
        return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1

    def box_with_margin(self, margin: float) -> tuple[int, int, int, int]:
        """:meth:`bbox` grown by ``margin`` x its height/width on each side, within the image."""
        if margin < 0:
            raise ValueError(f"margin must not be negative, got {margin}")
        top, bottom, left, right = self.bbox()
        h, w = self.mask.shape
        dy = round(margin * (bottom - top))
        dx = round(margin * (right - left))
        return max(0, top - dy), min(h, bottom + dy), max(0, left - dx), min(w, right + dx)


def prior_mask(shape: tuple[int, int]) -> np.ndarray:
    """Two ellipses where the lung fields of a frontal chest film usually lie (bool, ``shape``)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy = (yy + 0.5) / h
    xx = (xx + 0.5) / w
    mask = np.zeros(shape, dtype=bool)
    for cx in _PRIOR_CX:
        mask |= ((xx - cx) / _PRIOR_RX) ** 2 + ((yy - _PRIOR_CY) / _PRIOR_RY) ** 2 <= 1.0
    return mask


@lru_cache(maxsize=16)
def _prior_side(n: int, side: int, grow: float = 1.0, grow_y: float | None = None) -> np.ndarray:
    """One prior ellipse (side 0 = image left, 1 = image right) on an n x n grid, radii x grow.

    ``grow_y`` (default ``grow``) scales the vertical radius on its own.

    Cached (the localiser asks for the same few every time); the result is read-only.
    """
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    yy = (yy + 0.5) / n
    xx = (xx + 0.5) / n
    rx, ry = _PRIOR_RX * grow, _PRIOR_RY * (grow if grow_y is None else grow_y)
    out = ((xx - _PRIOR_CX[side]) / rx) ** 2 + ((yy - _PRIOR_CY) / ry) ** 2 <= 1.0
    out.flags.writeable = False
    return out


@lru_cache(maxsize=16)
def _disk(radius: int) -> np.ndarray:
    """A digital disk of ``radius`` (structuring element; cached, read-only)."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    out = (yy**2 + xx**2) <= radius**2 + radius * 0.5
    out.flags.writeable = False
    return out


def _to_work(image: np.ndarray, n: int = WORK) -> np.ndarray:
    """8-bit quantised, box-filtered n x n version of ``image`` as float32 in [0, 1]."""
    q = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    small = Image.fromarray(q, mode="L").resize((n, n), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / np.float32(255.0)


def _row_depth(s: np.ndarray) -> np.ndarray:
    """How far each pixel lies below the brighter of the two walls that enclose it in its row.

    For every pixel, the brightest value to its left and to its right (running maxima from each
    end of the row) are the walls; the lower wall minus the pixel is its depth: 1-D hole filling.
    Air outside the body reaches the image edge without climbing a wall, so its depth is ~0,
    while a lung lies between the chest wall and the mediastinum. Hence the name "dark regions
    inside the bright body", and no global threshold that the background would spoil.
    """
    from_left = np.maximum.accumulate(s, axis=1)
    from_right = np.flip(np.maximum.accumulate(np.flip(s, axis=1), axis=1), axis=1)
    return np.minimum(from_left, from_right) - s


def _otsu(values: np.ndarray, bins: int = 64) -> float:
    """Otsu's threshold of ``values`` in [0, 1] (the level that best splits them in two)."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def _closing(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary closing by a disk, computed on the mask's bounding box only (it is small).

    A closing by a convex element never leaves the bounding box, so nothing is lost.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return mask.copy()
    pad = radius + 1
    r0, r1 = rows[0], rows[-1] + 1
    c0, c1 = cols[0], cols[-1] + 1
    part = np.pad(mask[r0:r1, c0:c1], pad)
    closed = ndimage.binary_erosion(
        ndimage.binary_dilation(part, structure=_disk(radius)),
        structure=_disk(radius),
        border_value=1,
    )[pad:-pad, pad:-pad]
    out = mask.copy()
    out[r0:r1, c0:c1] |= closed
    return out


def _opening(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary opening by a disk on the mask's bounding box: cuts thin spurs and bridges."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return mask.copy()
    r0, r1 = rows[0], rows[-1] + 1
    c0, c1 = cols[0], cols[-1] + 1
    out = np.zeros_like(mask)
    out[r0:r1, c0:c1] = ndimage.binary_opening(mask[r0:r1, c0:c1], structure=_disk(radius))
    return out


def _largest(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of ``mask`` (empty stays empty)."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask.copy()
    area = np.bincount(labels.ravel())
    area[0] = 0
    return labels == int(np.argmax(area))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every background region that does not reach the image edge filled."""
    labels, count = ndimage.label(~mask)
    if count == 0:
        return mask.copy()
    edge = np.zeros(count + 1, dtype=bool)
    for line in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        edge[line] = True
    edge[0] = True
    return mask | ~edge[labels]


def _midline(s: np.ndarray) -> int:
    """Column of the mediastinum: the brightest smoothed column in the middle of the thorax."""
    n = s.shape[0]
    profile = s[int(0.2 * n) : int(0.7 * n)].mean(axis=0)
    profile = ndimage.uniform_filter1d(profile, size=max(3, n // 16), mode="nearest")
    lo, hi = int(0.35 * n), int(0.65 * n)
    return lo + int(np.argmax(profile[lo:hi]))


def _check_side(lung: np.ndarray, side: int) -> str:
    """Why one lung mask on the work grid is implausible ('' when it is plausible)."""
    n = lung.shape[0]
    area = float(lung.mean())
    if area < 0.03:
        return "too small"
    if area > 0.30:
        return "too large"
    rows = np.flatnonzero(lung.any(axis=1))
    cols = np.flatnonzero(lung.any(axis=0))
    height = (rows[-1] - rows[0] + 1) / n
    width = (cols[-1] - cols[0] + 1) / n
    if height < 0.30 or width < 0.12:
        return "too short or narrow"
    if width > 0.55 or height > 0.90:
        return "too wide or tall"
    cy, cx = (float(v) / n for v in ndimage.center_of_mass(lung))
    if not 0.25 <= cy <= 0.72:
        return "centre too high or low"
    if (side == 0 and not 0.08 <= cx <= 0.50) or (side == 1 and not 0.50 <= cx <= 0.92):
        return "centre on the wrong side"
    border = lung[0].sum() + lung[-1].sum() + lung[:, 0].sum() + lung[:, -1].sum()
    if border > 0.25 * n:
        return "runs along the image border"
    outside = float((lung & ~_prior_side(n, side, grow=1.45)).sum()) / float(lung.sum())
    if outside > 0.35:
        return "mostly outside the thorax"
    return ""


def _detect(image: np.ndarray) -> tuple[np.ndarray | None, str, str]:
    """(mask on the work grid or None, method, reason) for ``image``."""
    n = WORK
    g = _to_work(image, n)
    c0, c1 = int(0.1 * n), int(0.9 * n)
    lo, hi = (float(v) for v in np.percentile(g[c0:c1, c0:c1], (1.0, 99.0)))
    if hi - lo < 0.05:
        return None, "prior", "no contrast"
    g = np.clip((g - lo) / (hi - lo), 0.0, 1.0)
    s = ndimage.gaussian_filter(g, 1.0, mode="nearest")

    window = _prior_side(n, 0, 1.6, 1.3) | _prior_side(n, 1, 1.6, 1.3)
    depth = _row_depth(s)
    # Hysteresis: regions deeper than _WEAK x the Otsu level that hold some deeper than it.
    level = max(0.04, _otsu(depth[window]))
    dark = ndimage.binary_opening((depth > _WEAK * level) & window, structure=_disk(2))
    mid = _midline(s)
    dark[:, max(0, mid - 1) : mid + 2] = False
    labels, count = ndimage.label(dark)
    strong = np.bincount(labels[depth > level].ravel(), minlength=count + 1) > 0
    strong[0] = False
    labels[~strong[labels]] = 0
    if not strong.any():
        return None, "prior", "nothing dark in the thorax"
    lungs: list[np.ndarray | None] = []
    reasons: list[str] = []
    for side in (0, 1):
        half = np.zeros((n, n), dtype=bool)
        if side == 0:
            half[:, :mid] = True
        else:
            half[:, mid + 1 :] = True
        # The component that overlaps this side's prior most, and every other sizeable one
        # that lies mostly inside it (a lung is often cut in pieces by ribs or an opacity).
        side_labels = np.where(half, labels, 0)
        overlap = np.bincount(side_labels[_prior_side(n, side)].ravel(), minlength=count + 1)
        inside = np.bincount(
            side_labels[_prior_side(n, side, grow=1.15)].ravel(), minlength=count + 1
        )
        area = np.bincount(side_labels.ravel(), minlength=count + 1)
        overlap[0] = inside[0] = area[0] = 0
        best = int(np.argmax(overlap))
        if overlap[best] == 0:
            lungs.append(None)
            reasons.append("no dark region")
            continue
        keep = (inside * 2 >= area) & (area >= 0.01 * n * n)
        keep[best] = True
        keep[0] = False
        lung = keep[side_labels]
        lung = _largest(_opening(_fill_holes(_closing(lung, 4)), 3))
        why = _check_side(lung, side)
        lungs.append(None if why else lung)
        reasons.append(why)

    left, right = lungs
    if left is None and right is None:
        return None, "prior", f"left: {reasons[0]}; right: {reasons[1]}"
    if left is not None and right is not None:
        a0, a1 = float(left.sum()), float(right.sum())
        if min(a0, a1) / max(a0, a1) < 0.35:
            return None, "prior", "lungs of very different size"
        return _check_mediastinum(s, left | right, mid, "threshold", "")
    good, bad_side = (left, 1) if left is not None else (right, 0)
    assert good is not None
    mirrored = np.zeros_like(good)
    cols = 2 * mid - np.arange(n)
    valid = (cols >= 0) & (cols < n)
    mirrored[:, np.arange(n)[valid]] = good[:, cols[valid]]
    why = _check_side(mirrored, bad_side)
    if why:
        return None, "prior", f"{reasons[bad_side]}; mirror: {why}"
    return _check_mediastinum(s, good | mirrored, mid, "mirrored", reasons[bad_side])


def _check_mediastinum(
    s: np.ndarray, lungs: np.ndarray, mid: int, method: str, reason: str
) -> tuple[np.ndarray | None, str, str]:
    """Keep a detection only if the mediastinum between the lungs is clearly brighter.

    On chest films the band around the midline, over the height of the lungs, is at least
    ~0.09 brighter than the lungs on the stretched scale (0.15 for 99 % of the manifest); on
    noise or flat images it is not (~0.03), and dark blobs there must not pass for lungs.
    """
    n = s.shape[0]
    rows = np.flatnonzero(lungs.any(axis=1))
    half = max(1, n // 32)
    band = s[rows[0] : rows[-1] + 1, max(0, mid - half) : mid + half + 1]
    if float(band.mean()) - float(s[lungs].mean()) < _MEDIASTINUM_CONTRAST:
        return None, "prior", "no bright mediastinum between the lungs"
    return lungs, method, reason


def _upsample(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a square work-grid mask to ``shape``."""
    n = mask.shape[0]
    h, w = shape
    rows = np.minimum(((np.arange(h) + 0.5) * n / h).astype(np.intp), n - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * n / w).astype(np.intp), n - 1)
    return mask[rows][:, cols]


def dilate_mask(mask: np.ndarray, fraction: float) -> np.ndarray:
    """``mask`` grown by ``fraction`` of the image's shorter side (for masking with a margin).

    Works on a grid of at most 256 pixels and resamples back, so it costs the same on a 512-pixel
    JPEG and a 3000-pixel DICOM.
    """
    if fraction <= 0:
        return mask.copy()
    h, w = mask.shape
    scale = min(1.0, 256.0 / max(h, w))
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    rows = np.minimum(((np.arange(sh) + 0.5) * h / sh).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(sw) + 0.5) * w / sw).astype(np.intp), w - 1)
    small = mask[rows[:, None], cols[None, :]]
    radius = fraction * min(sh, sw)
    grown = ndimage.distance_transform_edt(~small) <= radius
    back_r = np.minimum(((np.arange(h) + 0.5) * sh / h).astype(np.intp), sh - 1)
    back_c = np.minimum(((np.arange(w) + 0.5) * sw / w).astype(np.intp), sw - 1)
    return grown[back_r[:, None], back_c[None, :]] | mask


def find_lung_fields(image: np.ndarray) -> LungFields:
    """The lung fields of ``image`` (2-D float32 in [0, 1], MONOCHROME2).

    Never fails: an implausible detection gives the geometric prior with ``fallback=True``.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    shape = (int(image.shape[0]), int(image.shape[1]))
    arr = np.asarray(image, dtype=np.float32)
    if not np.isfinite(arr).all():
        arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
    work, method, reason = _detect(arr)
    if work is None:
        return LungFields(mask=prior_mask(shape), method="prior", fallback=True, reason=reason)
    return LungFields(mask=_upsample(work, shape), method=method, fallback=False, reason=reason)


def lung_fields(image: np.ndarray, finder: str = DEFAULT_LUNG_FINDER) -> LungFields:
    """The lung fields of ``image`` (2-D float32 in [0, 1], MONOCHROME2) by ``finder``.

    Never fails on an image: where the network finds no plausible lungs (less than
    :data:`models.lungseg.MIN_AREA` or more than :data:`MAX_AREA` of the image) it gives the
    geometric prior with ``fallback=True``, as the classical method does.
    """
    if finder == "heuristic":
        return find_lung_fields(image)
    if finder != "learned":
        raise ValueError(f"lung finder must be one of {', '.join(LUNG_FINDERS)}, got {finder!r}")
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    return learned_fields(segment_lungs(image))


def learned_fields(mask: np.ndarray) -> LungFields:
    """A segmenter's boolean ``mask`` as :class:`LungFields` (prior if its area is implausible)."""
    area = float(mask.mean()) if mask.size else 0.0
    if area < MIN_AREA or area > MAX_AREA:
        shape = (int(mask.shape[0]), int(mask.shape[1]))
        reason = f"segmenter's mask covers {area:.0%} of the image"
        return LungFields(mask=prior_mask(shape), method="prior", fallback=True, reason=reason)
    return LungFields(mask=mask, method="learned")
