"""The shipped lung segmenter: its weights load and match their sha256, it segments real films.

The Dice test uses JSRT films the segmenter was *not* trained on (its held-out films), so it
checks the shipped weights, not memory of the training set.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.files import sha256_file
from models.lungs import lung_fields, prior_mask
from models.lungseg import (
    CARD_FILE,
    WEIGHTS_FILE,
    UNet,
    clean_mask,
    load_segmenter,
    network_input,
    segment_lungs,
    shipped,
)
from tests.harness.factories import SHARED
from training.lungseg_data import Film, read_jsrt
from training.lungseg_train import dice

JSRT_DIR = SHARED / "data" / "jsrt"

DICE_FLOOR = 0.9
"""Every one of the sampled held-out JSRT films must reach this (the card's mean is higher)."""


@pytest.fixture(scope="module")
def held_out_jsrt() -> list[Film]:
    """Four held-out JSRT films (read-only from shared/)."""
    if not (JSRT_DIR / "manifest.csv").is_file():
        pytest.skip("shared/data/jsrt is not here")
    films = [f for f in read_jsrt(JSRT_DIR) if f.held_out]
    return films[:: max(1, len(films) // 4)][:4]


def test_shipped_weights_match_their_card_and_are_small() -> None:
    card = json.loads(CARD_FILE.read_text(encoding="utf-8"))
    assert sha256_file(WEIGHTS_FILE) == card["weights_sha256"]
    assert WEIGHTS_FILE.stat().st_size < 5 * 1024 * 1024
    seg = load_segmenter()
    assert seg.card == card
    assert sum(p.numel() for p in seg.net.parameters()) == card["parameters"]
    assert not seg.net.training  # batch norm in inference mode
    for figures in (card["dice_held_out"]["jsrt"], card["dice_held_out"]["v7"]):
        assert figures["n"] > 0 and 0.0 < figures["p5"] <= figures["mean"] <= 1.0


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "seg"
    shutil.copytree(WEIGHTS_FILE.parent, folder)
    data = bytearray((folder / WEIGHTS_FILE.name).read_bytes())
    data[-10] ^= 0xFF
    (folder / WEIGHTS_FILE.name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_segmenter(folder)


def test_mask_has_the_image_shape_and_is_boolean() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((203, 157)).astype(np.float32)
    mask = segment_lungs(image)
    assert mask.shape == image.shape and mask.dtype == np.bool_
    assert shipped() is shipped()  # loaded once


def test_held_out_jsrt_films_are_segmented_well(held_out_jsrt: list[Film]) -> None:
    assert len(held_out_jsrt) == 4
    for film in held_out_jsrt:
        image = film.unit_image()
        score = dice(segment_lungs(image), film.mask)
        assert score >= DICE_FLOOR, (film.key, score)
        fields = lung_fields(image)
        assert fields.method == "learned" and not fields.fallback
        assert np.array_equal(fields.mask, segment_lungs(image))
        top, bottom, left, right = fields.bbox()
        assert 0 <= top < bottom <= image.shape[0] and 0 <= left < right <= image.shape[1]


def test_jpeg_scale_and_dicom_scale_give_the_same_mask(held_out_jsrt: list[Film]) -> None:
    """The input is quantised to 8 bits: a 16-bit rendering of the same pixels gives one mask."""
    image = held_out_jsrt[0].unit_image()
    wide = (np.round(image * 255.0) * 257.0 / 65535.0).astype(np.float32)
    assert np.array_equal(segment_lungs(image), segment_lungs(wide))


def test_no_lungs_gives_the_prior_as_a_fallback() -> None:
    flat = np.full((120, 100), 0.5, np.float32)
    fields = lung_fields(flat)
    if fields.fallback:  # nothing to find on a flat image: the prior, said so
        assert fields.method == "prior" and fields.reason
        assert np.array_equal(fields.mask, prior_mask((120, 100)))
    else:  # a network may still answer; then it must be a plausible area
        assert 0.02 <= float(fields.mask.mean()) <= 0.8
    assert lung_fields(flat, "heuristic").fallback
    with pytest.raises(ValueError, match="lung finder"):
        lung_fields(flat, "oracle")


def test_unet_shapes_and_input() -> None:
    net = UNet(width=4, depth=2).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 1, 32, 32)
    x = network_input(np.linspace(0, 1, 50 * 40, dtype=np.float32).reshape(50, 40), size=32)
    assert x.shape == (1, 32, 32)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1.0) < 1e-3
    with pytest.raises(ValueError, match="2-D"):
        network_input(np.zeros((2, 3, 4), np.float32))


def test_clean_mask_keeps_two_lungs_and_fills_holes() -> None:
    mask = np.zeros((40, 40), bool)
    mask[5:35, 4:16] = True  # one lung with a hole (an opacity)
    mask[15:20, 8:12] = False
    mask[5:35, 24:36] = True  # the other lung
    mask[0:2, 0:2] = True  # a speck
    cleaned = clean_mask(mask)
    assert cleaned[17, 10] and not cleaned[0, 0]
    assert cleaned.sum() == 2 * 30 * 12
    assert not clean_mask(np.zeros((8, 8), bool)).any()
