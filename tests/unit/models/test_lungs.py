"""The lung-field localiser: its interface (shape, dtype, determinism, bounding box), its fallback
to the geometric prior on images that are not chest films, and plausible masks on real ones."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from models.lungs import LungFields, dilate_mask, find_lung_fields, prior_mask
from models.preprocessing import load_image_file
from tests.harness.factories import CXR_DIR

# Clean frontal films of three sources and both classes, where both lungs are visible.
REAL = (
    "images/non_covid/nih_chestxray8__non_covid__00000165_001.jpg",
    "images/covid/ieee8023__covid__02b76460.jpg",
    "images/covid/mhh_hannover__covid__0cea09eb.jpg",
)


@pytest.fixture(scope="module")
def real_images() -> dict[str, np.ndarray]:
    return {rel: load_image_file(CXR_DIR / rel) for rel in REAL}


@pytest.mark.parametrize("shape", [(512, 512), (421, 512), (512, 300), (37, 53), (1, 1)])
def test_mask_has_the_image_shape_and_is_boolean(shape: tuple[int, int]) -> None:
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    fields = find_lung_fields(image)
    assert isinstance(fields, LungFields)
    assert fields.mask.shape == shape and fields.mask.dtype == np.bool_
    assert fields.method in {"threshold", "mirrored", "prior"}
    assert fields.fallback == (fields.method == "prior")


def test_real_mask_has_the_image_shape(real_images: dict[str, np.ndarray]) -> None:
    for rel, image in real_images.items():
        fields = find_lung_fields(image)
        assert fields.mask.shape == image.shape and fields.mask.dtype == np.bool_, rel


def test_deterministic(real_images: dict[str, np.ndarray]) -> None:
    image = real_images[REAL[0]]
    first = find_lung_fields(image)
    second = find_lung_fields(image.copy())
    assert np.array_equal(first.mask, second.mask)
    assert (first.method, first.fallback, first.reason) == (
        second.method,
        second.fallback,
        second.reason,
    )


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_blank_image_falls_back_to_the_prior(value: float) -> None:
    image = np.full((400, 500), value, np.float32)
    fields = find_lung_fields(image)
    assert fields.fallback and fields.method == "prior" and fields.reason
    assert np.array_equal(fields.mask, prior_mask(image.shape))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_noise_falls_back_to_the_prior(seed: int) -> None:
    image = np.random.default_rng(seed).random((512, 512), dtype=np.float32)
    fields = find_lung_fields(image)
    assert fields.fallback and fields.method == "prior"
    assert np.array_equal(fields.mask, prior_mask(image.shape))


def test_real_films_get_two_plausible_lungs(real_images: dict[str, np.ndarray]) -> None:
    for rel, image in real_images.items():
        fields = find_lung_fields(image)
        assert not fields.fallback and fields.method == "threshold", (rel, fields.reason)
        mask = fields.mask
        assert 0.12 <= mask.mean() <= 0.5, rel
        labels, count = ndimage.label(mask)
        assert count == 2, rel
        h, w = mask.shape
        centres = sorted(ndimage.center_of_mass(mask, labels, [1, 2]), key=lambda c: c[1])
        (ly, lx), (ry, rx) = centres
        assert lx < w / 2 < rx, rel  # one lung on each side
        assert 0.2 * h < ly < 0.75 * h and 0.2 * h < ry < 0.75 * h, rel
        sizes = np.bincount(labels.ravel())[1:]
        assert sizes.min() / sizes.max() > 0.35, rel
        prior = prior_mask(mask.shape)
        assert (mask & prior).sum() / (mask | prior).sum() > 0.3, rel


def test_bbox_and_margin() -> None:
    mask = np.zeros((100, 200), dtype=bool)
    mask[10:30, 50:90] = True
    mask[40:60, 120:150] = True
    fields = LungFields(mask=mask, method="threshold")
    assert fields.bbox() == (10, 60, 50, 150)
    assert fields.box_with_margin(0.0) == (10, 60, 50, 150)
    assert fields.box_with_margin(0.1) == (5, 65, 40, 160)
    assert fields.box_with_margin(0.5) == (0, 85, 0, 200)  # clipped to the image
    with pytest.raises(ValueError, match="margin"):
        fields.box_with_margin(-0.1)
    empty = LungFields(mask=np.zeros((7, 9), dtype=bool), method="prior", fallback=True)
    assert empty.bbox() == (0, 7, 0, 9)


def test_real_bbox_encloses_the_mask(real_images: dict[str, np.ndarray]) -> None:
    fields = find_lung_fields(real_images[REAL[0]])
    top, bottom, left, right = fields.bbox()
    rows = np.flatnonzero(fields.mask.any(axis=1))
    cols = np.flatnonzero(fields.mask.any(axis=0))
    assert (top, bottom, left, right) == (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1)
    assert fields.mask[top:bottom, left:right].sum() == fields.mask.sum()


def test_prior_is_two_symmetric_ellipses() -> None:
    prior = prior_mask((200, 160))
    assert prior.dtype == np.bool_ and prior.shape == (200, 160)
    assert ndimage.label(prior)[1] == 2
    assert np.array_equal(prior, prior[:, ::-1])
    assert 0.2 < prior.mean() < 0.4


def test_dilate_mask_grows_and_keeps_the_mask() -> None:
    mask = np.zeros((300, 400), dtype=bool)
    mask[100:200, 100:150] = True
    grown = dilate_mask(mask, 0.05)
    assert grown.shape == mask.shape and grown.dtype == np.bool_
    assert np.all(grown[mask])
    assert grown.sum() > mask.sum()
    assert grown[95:205, 90:160].all() and not grown[:70].any()  # 5 % of 300 = 15 px
    assert np.array_equal(dilate_mask(mask, 0.0), mask)


def test_refuses_non_2d() -> None:
    with pytest.raises(ValueError, match="2-D"):
        find_lung_fields(np.zeros((8, 8, 3), np.float32))
