"""Manifest reading, the epoch order (COVID x5, oversampling) and the augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.augment import augment_batch
from training.config import AugmentSpec, TrainConfig
from training.dataset import epoch_order
from training.manifest import read_manifest, write_manifest

NO_AUG = AugmentSpec(
    hflip=False,
    rotate_deg=0,
    scale=(1.0, 1.0),
    shear_deg=0,
    translate=0,
    brightness=0,
    contrast=0,
    gamma=0,
)


def _rows() -> list[dict[str, str]]:
    return [
        {"path": "a.jpg", "label": "covid", "split": "train", "finding": "COVID-19", "source": "x"},
        {"path": "b.jpg", "label": "non_covid", "split": "train", "finding": "No finding"},
        {"path": "c.jpg", "label": "non_covid", "split": "val", "finding": "Pneumonia"},
    ]


def test_read_manifest(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    write_manifest(path, _rows())
    manifest = read_manifest(path)
    assert len(manifest.rows) == 3 and len(manifest.sha256) == 64
    a, b, c = manifest.rows
    assert a.path == tmp_path / "a.jpg" and a.label == 1 and a.source == "x"
    assert (a.finding_group, b.finding_group, c.finding_group) == (
        "covid",
        "no_finding",
        "other_disease",
    )
    assert manifest.counts() == {
        "train": {"non_covid": 1, "covid": 1},
        "val": {"non_covid": 1, "covid": 0},
    }
    assert [r.relpath for r in manifest.split("val")] == ["c.jpg"]
    with pytest.raises(ValueError, match="no rows in split 'test'"):
        manifest.split("test")
    other = read_manifest(path, data_root=tmp_path / "imgs")
    assert other.rows[0].path == tmp_path / "imgs" / "a.jpg"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label": "maybe"}, "label 'maybe'"),
        ({"split": "hold/out"}, "split 'hold/out'"),
        ({"path": ""}, "empty path"),
    ],
)
def test_manifest_rejects_bad_rows(tmp_path: Path, change: dict[str, str], message: str) -> None:
    rows = _rows()
    rows[1].update(change)
    path = tmp_path / "m.csv"
    write_manifest(path, rows)
    with pytest.raises(ValueError, match=message):
        read_manifest(path)


def test_manifest_requires_columns(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("path,label\na.jpg,covid\n")
    with pytest.raises(ValueError, match="lacks column"):
        read_manifest(path)
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "missing.csv")


def test_epoch_order_covid_copies_and_mask() -> None:
    labels = np.array([1, 0, 0, 1, 0])
    order, mask = epoch_order(labels, epoch=1, seed=0, covid_copies=5)
    assert sorted(order.tolist()) == sorted([0] * 5 + [3] * 5 + [1, 2, 4])
    assert (mask == (labels[order] == 1)).all()
    again = epoch_order(labels, epoch=1, seed=0, covid_copies=5)
    assert (again[0] == order).all()
    assert not (epoch_order(labels, epoch=2, seed=0, covid_copies=5)[0] == order).all()
    _, all_mask = epoch_order(labels, epoch=1, seed=0, augment="all")
    assert all_mask.all()
    _, no_mask = epoch_order(labels, epoch=1, seed=0, augment="none")
    assert not no_mask.any()


def test_epoch_order_oversampling_balances() -> None:
    labels = np.array([1] * 3 + [0] * 10)
    order, _ = epoch_order(labels, epoch=1, seed=0, oversample=True)
    y = labels[order]
    assert (y == 1).sum() == (y == 0).sum() == 10
    order, _ = epoch_order(labels, epoch=1, seed=0, covid_copies=5, oversample=True)
    y = labels[order]
    assert (y == 1).sum() == (y == 0).sum() == 15
    with pytest.raises(ValueError):
        epoch_order(labels, epoch=1, seed=0, covid_copies=0)


def test_augment_identity_flip_and_mask() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 24, 24, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(augment_batch(x, NO_AUG, gen), x, atol=1e-4)
    flip_only = AugmentSpec(**{**NO_AUG.to_dict(), "hflip": True, "scale": (1.0, 1.0)})
    y = augment_batch(x, flip_only, gen)
    for i in range(6):
        assert torch.allclose(y[i], x[i], atol=1e-4) or torch.allclose(
            y[i], x[i].flip(-1), atol=1e-4
        )
    mask = torch.tensor([True, False, True, False, False, False])
    z = augment_batch(x, AugmentSpec(), gen, mask)
    assert torch.equal(z[~mask], x[~mask])
    assert not torch.allclose(z[mask], x[mask])
    assert z.min() >= 0 and z.max() <= 1


def test_augment_is_seeded() -> None:
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    a = augment_batch(x, AugmentSpec(), torch.Generator().manual_seed(7))
    b = augment_batch(x, AugmentSpec(), torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        augment_batch(torch.rand(2, 3, 8, 8), AugmentSpec(), torch.Generator())


def test_config_defaults_are_the_papers_and_round_trip() -> None:
    cfg = TrainConfig(manifest="m.csv")
    assert (cfg.input_size, cfg.batch_size, cfg.optimizer, cfg.lr) == (224, 20, "adam", 1e-4)
    assert (cfg.covid_copies, cfg.augment, cfg.target_sensitivity) == (5, "covid", 0.98)
    assert not cfg.trains_last_layer_only
    assert TrainConfig(manifest="m", init="imagenet").trains_last_layer_only
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        TrainConfig(manifest="m", optimizer="lbfgs")
    with pytest.raises(ValueError):
        TrainConfig.from_dict({**cfg.to_dict(), "typo": 1})


def test_lr_schedule_warmup_and_cosine() -> None:
    from training.trainer import lr_factor

    cfg = TrainConfig(manifest="m", epochs=10, schedule="cosine", warmup_epochs=2)
    assert lr_factor(cfg, 1.0) == pytest.approx(0.5)  # half-way through warm-up
    assert lr_factor(cfg, 2.0) == pytest.approx(1.0)  # cosine starts at the full rate
    assert lr_factor(cfg, 6.0) == pytest.approx(0.505)  # half-way: (1 + 0.01) / 2
    assert lr_factor(cfg, 10.0) == pytest.approx(0.01)
    assert lr_factor(TrainConfig(manifest="m"), 5.0) == 1.0  # constant, the paper
