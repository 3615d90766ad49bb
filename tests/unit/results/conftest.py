"""Small synthetic sources and an algorithm card for the result-builder unit tests."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.harness.factories import wrap_pixels
from worker.results import AlgorithmInfo

SHAPE = (96, 80)


@pytest.fixture
def source() -> Dataset:
    """A 12-bit MONOCHROME1 CR without ImagerPixelSpacing, like the NEMA chest CR."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=SHAPE, dtype=np.uint16)
    ds = wrap_pixels(pixels, photometric="MONOCHROME1", bits_stored=12, imager_pixel_spacing=None)
    ds.PatientOrientation = ["L", "F"]
    ds.StudyDescription = "CHEST PA"
    return ds


@pytest.fixture
def algorithm() -> AlgorithmInfo:
    return AlgorithmInfo(
        name="Deep-COVID",
        version="2026.11.1",
        device_uid=generate_uid(),
        model_name="squeezenet1_1",
        parameters={"threshold": 0.42, "occlusion_window": 32},
    )


@pytest.fixture
def heatmap() -> np.ndarray:
    """A map with one hot region and some negative evidence, on the source grid."""
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    hot = np.exp(-((yy - 30.0) ** 2 + (xx - 50.0) ** 2) / 200.0)
    return (0.3 * hot - 0.05).astype(np.float32)


@pytest.fixture
def display_image() -> np.ndarray:
    return np.linspace(0.0, 1.0, SHAPE[0] * SHAPE[1], dtype=np.float32).reshape(SHAPE)
