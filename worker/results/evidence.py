"""The regions of strongest positive evidence in a heatmap, as contours on the source grid.

One definition feeds every object a reader looks at: the SR's TID 1410 image regions (the
SCOORD a viewer draws and labels with the finding), the overlay SC's outlines and fill, and the
presentation state's graphic annotations. So the SR, the SC and the GSPS always show the same
regions.

The occlusion map is a coarse grid resampled to the image, with step edges at the window
borders; it is smoothed first (a Gaussian a fraction of the image size wide), so the overlay
has no grid steps and the contours are smooth. Only positive evidence counts (occluding the
region lowered the probability); a region is where the smoothed evidence is at least
:data:`EVIDENCE_LEVEL` of its peak. Contours are traced with ``contourpy`` (matplotlib's
contour engine) at sub-pixel precision, holes are filled, and the largest
:data:`MAX_REGIONS` regions above :data:`MIN_AREA_FRACTION` of the image are kept.

Coordinates follow DICOM SCOORD (PS3.3 C.18.6.1.2): ``(column, row)`` with ``(0, 0)`` the
top-left corner of the top-left pixel, so a pixel centre is at ``(c + 0.5, r + 0.5)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from contourpy import LineType, contour_generator
from scipy import ndimage

EVIDENCE_LEVEL = 0.6
"""A region is where the smoothed positive evidence reaches this fraction of its peak.

On the shipped model's maps of the test radiographs, 0.5 outlined a third of the NEMA CR
(most of the positive evidence is broad); 0.6 keeps the salient part (a fifth, a tenth)."""
MAX_REGIONS = 3
"""At most this many regions (the largest) are reported and drawn."""
MIN_AREA_FRACTION = 0.002
"""Regions smaller than this fraction of the image are noise, not evidence."""
SMOOTHING_FRACTION = 1.0 / 48.0
"""Gaussian sigma as a fraction of the image's shorter side (removes the occlusion grid steps)."""
MAX_POINTS = 96
"""Contours are thinned to at most this many vertices (enough for a smooth outline)."""
_MARGIN = 3
"""Pixels kept around a region's bounding box when it is traced: 2 for the dilation, 1 of zeros
for the contour to close on. The region's work is done on that box, not on the whole image
(filling holes and dilating the whole film per region made this the slowest step of building
the results), with the same outcome."""


@dataclass(frozen=True)
class EvidenceRegion:
    """One closed contour: ``points`` is (N, 2) ``(column, row)``, first point == last."""

    points: np.ndarray
    area_fraction: float
    """Share of the image inside the contour."""
    peak: float
    """Highest normalised evidence in the region (1.0 for the strongest region)."""


def smooth_evidence(heatmap: np.ndarray) -> np.ndarray:
    """Positive evidence, smoothed and scaled to [0, 1] (all zero when there is none)."""
    heat = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, None)
    if heat.size == 0 or float(heat.max()) <= 0.0:
        return np.zeros(heat.shape, dtype=np.float32)
    sigma = max(1.0, min(heat.shape) * SMOOTHING_FRACTION)
    smooth = ndimage.gaussian_filter(heat, sigma=sigma, mode="nearest")
    peak = float(smooth.max())
    if peak <= 0.0:
        return np.zeros(heat.shape, dtype=np.float32)
    return np.clip(smooth / peak, 0.0, 1.0).astype(np.float32)


def _thin(points: np.ndarray) -> np.ndarray:
    """At most :data:`MAX_POINTS` vertices, evenly spaced along the contour, still closed."""
    ring = points[:-1]
    if len(ring) > MAX_POINTS - 1:
        steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
        along = np.concatenate([[0.0], np.cumsum(steps)[:-1]])  # arc length at each vertex
        targets = np.linspace(0.0, float(steps.sum()), MAX_POINTS - 1, endpoint=False)
        index = np.unique(np.searchsorted(along, targets, side="right") - 1)
        ring = ring[index]
    return np.vstack([ring, ring[:1]])


def _outline(z: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]) -> np.ndarray | None:
    """The longest closed contour of ``z`` at the evidence level, in SCOORD coordinates.

    ``z`` is the part of an image of ``shape`` (rows, columns) whose top-left pixel is at
    ``origin`` (row, column); the contour is returned in the image's coordinates."""
    padded = np.pad(z, 1)  # zero border: every contour closes inside the image
    lines = contour_generator(z=padded, line_type=LineType.Separate).lines(EVIDENCE_LEVEL)
    arrays = [np.asarray(line, dtype=np.float64) for line in lines]
    closed = [line for line in arrays if len(line) >= 4 and np.allclose(line[0], line[-1])]
    if not closed:
        return None
    outline = max(closed, key=len) - 1.0 + 0.5  # undo the padding; pixel centres at +0.5
    rows, columns = shape
    outline[:, 0] = np.clip(outline[:, 0] + origin[1], 0.0, columns)
    outline[:, 1] = np.clip(outline[:, 1] + origin[0], 0.0, rows)
    return _thin(outline)


def _box(found: tuple[slice, slice], shape: tuple[int, int]) -> tuple[slice, slice]:
    """A bounding box grown by :data:`_MARGIN` on every side, within the image."""
    rows, columns = found
    return (
        slice(max(0, rows.start - _MARGIN), min(shape[0], rows.stop + _MARGIN)),
        slice(max(0, columns.start - _MARGIN), min(shape[1], columns.stop + _MARGIN)),
    )


def evidence_regions(heatmap: np.ndarray) -> list[EvidenceRegion]:
    """The largest regions of strong positive evidence, largest first (may be empty)."""
    evidence = smooth_evidence(heatmap)
    mask = evidence >= EVIDENCE_LEVEL
    labels, count = ndimage.label(mask)
    if count == 0:
        return []
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    order = np.argsort(sizes)[::-1]
    boxes = ndimage.find_objects(labels)
    shape = (int(evidence.shape[0]), int(evidence.shape[1]))
    regions: list[EvidenceRegion] = []
    for index in order[:MAX_REGIONS]:
        box = _box(boxes[index], shape)
        component = labels[box] == index + 1
        filled = ndimage.binary_fill_holes(component)
        fraction = float(filled.sum()) / evidence.size
        if fraction < MIN_AREA_FRACTION:
            break
        # This component only, holes lifted above the level: its contour is the outer edge.
        near = ndimage.binary_dilation(component, iterations=2)
        z = np.where(near, evidence[box], 0.0)
        z[filled & ~component] = 1.0
        points = _outline(z, (box[0].start, box[1].start), shape)
        if points is None:
            continue
        regions.append(
            EvidenceRegion(
                points=points,
                area_fraction=fraction,
                peak=float(evidence[box][component].max()),
            )
        )
    return regions


def image_outline(shape: tuple[int, int]) -> np.ndarray:
    """The image's border as a closed ``(column, row)`` polyline: the corners and the middle of
    each edge, 9 points (the SR's image-level region).

    Not the 5 points of a bare rectangle: OHIF 3.13 takes a 5-point POLYLINE Image Region for a
    measurement its rectangle tool made, marks the SR as one to "load" into its measurement
    tracking and asks the reader, when the SR is opened, whether to track measurements; a
    machine result is not a reader's measurement to edit (``docs/result-objects.md``).
    """
    rows, columns = shape
    corners = [(0.0, 0.0), (columns, 0.0), (columns, rows), (0.0, rows)]
    points = []
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1], strict=True):
        points += [(x0, y0), ((x0 + x1) / 2, (y0 + y1) / 2)]
    return np.array([*points, corners[0]], dtype=np.float64)
