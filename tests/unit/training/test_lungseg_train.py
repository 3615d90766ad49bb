"""Training the lung segmenter: the films, their held-out split, augmentation, a short fit."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.files import sha256_file
from models.lungseg import load_segmenter
from tests.harness.factories import SHARED
from training.bundled import save_bundled
from training.lungseg_data import (
    JSRT_HELD_OUT,
    V7_MASKS,
    Film,
    jsrt_held_out,
    read_jsrt,
    read_v7,
)
from training.lungseg_train import augment, dice, fit, grids, learning_rate, measure

JSRT_DIR = SHARED / "data" / "jsrt"


def _disc_film(key: str, n: int = 48, held_out: bool = False) -> Film:
    """A bright film with two dark 'lungs' (the mask) on it."""
    yy, xx = np.mgrid[0:n, 0:n]
    mask = ((xx - n * 0.3) ** 2 / (n * 0.15) ** 2 + (yy - n / 2) ** 2 / (n * 0.3) ** 2 <= 1) | (
        (xx - n * 0.7) ** 2 / (n * 0.15) ** 2 + (yy - n / 2) ** 2 / (n * 0.3) ** 2 <= 1
    )
    image = np.where(mask, 60, 200).astype(np.uint8)
    return Film(key, "jsrt", held_out, image, mask)


def test_dice() -> None:
    a = np.zeros((4, 4), bool)
    a[:2] = True
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert dice(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0


def test_jsrt_held_out_is_fixed_by_name_and_about_a_fifth() -> None:
    names = [f"JPCLN{i:03d}" for i in range(1, 155)] + [f"JPCNN{i:03d}" for i in range(1, 94)]
    chosen = [n for n in names if jsrt_held_out(n)]
    assert chosen == [n for n in names if jsrt_held_out(n)]  # no seed, same every time
    assert abs(len(chosen) / len(names) - JSRT_HELD_OUT) < 0.06
    assert not jsrt_held_out("JPCLN001", share=0.0) and jsrt_held_out("JPCLN001", share=1.0)


def test_read_jsrt_joins_both_lungs() -> None:
    if not (JSRT_DIR / "manifest.csv").is_file():
        pytest.skip("shared/data/jsrt is not here")
    films = read_jsrt(JSRT_DIR)
    assert len(films) == 247
    film = films[0]
    assert film.image.dtype == np.uint8 and film.mask.shape == film.image.shape
    assert 0.15 < float(film.mask.mean()) < 0.5
    # Left and right lungs lie in different halves of the film.
    assert film.mask[:, :256].any() and film.mask[:, 256:].any()


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_read_v7_matches_by_original_name_and_holds_out_test(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    rows = []
    for i, split in enumerate(("train", "test", "val")):
        Image.fromarray(np.full((30, 40), 100, np.uint8)).save(tmp_path / f"images/{i}.jpg")
        rows.append(
            {"path": f"images/{i}.jpg", "split": split, "source": "ieee8023",
             "orig_path": f"orig/Case_{i}.PNG"}
        )  # fmt: skip
    rows.append({"path": "images/x.jpg", "split": "train", "source": "nih", "orig_path": ""})
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    big = np.zeros((60, 80), np.uint8)
    big[:, :40] = 255  # left half is lung, drawn on a 2x larger original
    archive = tmp_path / "masks.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"{V7_MASKS}/case_{i}.png", _png(big))
    films = read_v7(archive, manifest)
    assert [f.key for f in films] == ["images/0.jpg", "images/1.jpg", "images/2.jpg"]
    assert [f.held_out for f in films] == [False, True, False]
    assert films[0].mask.shape == (30, 40) and films[0].mask[:, :20].all()
    assert not films[0].mask[:, 20:].any()


def test_augment_moves_image_and_mask_together() -> None:
    films = [_disc_film(str(i)) for i in range(6)]
    images, masks = grids(films, 32)
    assert images.shape == masks.shape == (6, 1, 32, 32)
    x, y = augment(images, masks, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (6, 1, 32, 32)
    assert abs(float(x.mean())) < 1e-3  # standardised as inference is
    for xi, yi in zip(x, y, strict=True):
        # Lungs are dark: after any geometric change they must still be where the mask is.
        inside, outside = xi[yi > 0.5], xi[yi < 0.1]
        assert float(inside.mean()) < float(outside.mean()) - 0.5


def test_a_short_fit_saves_weights_that_load_and_segment(tmp_path: Path) -> None:
    train = [_disc_film(str(i)) for i in range(8)]
    net, epochs = fit(train, epochs=2, batch=4, size=32, width=4, depth=2, log=False)
    assert epochs == 2
    card = save_bundled(net, {"input_size": 32, "width": 4, "depth": 2}, tmp_path)
    assert card["weights_sha256"] == sha256_file(tmp_path / "weights.pt")
    loaded = load_segmenter(tmp_path)
    film = _disc_film("held", held_out=True)
    mask = loaded(film.unit_image())
    assert mask.shape == film.mask.shape and mask.dtype == np.bool_
    result = measure(loaded, [film])
    assert result["segmenter"]["jsrt"]["n"] == 1
    assert set(result["classical"]) == {"jsrt"}
    # Half precision on disk: the loaded network answers as the trained one, within rounding.
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 1, 32, 32), np.float32))
    with torch.no_grad():
        assert torch.allclose(net(x), loaded.net(x), atol=0.05)


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    assert learning_rate(0.0, 1.0) == pytest.approx(0.1)
    assert learning_rate(0.05, 1.0) == pytest.approx(1.0)
    assert learning_rate(0.5, 1.0) < learning_rate(0.2, 1.0) < 1.0
    assert learning_rate(1.0, 1.0) == pytest.approx(0.0, abs=1e-9)


def test_a_time_budget_stops_the_run() -> None:
    train = [_disc_film(str(i)) for i in range(4)]
    _, epochs = fit(train, epochs=50, minutes=1e-6, batch=4, size=32, width=2, depth=1, log=False)
    assert epochs == 1
