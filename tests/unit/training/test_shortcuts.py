"""Training against shortcuts: source-cue augmentations, source sampling, hard negatives, the
source adversary, selection by within-source AUC, and the config / flags that record them."""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.preprocessing import PreprocessSpec
from tests.harness.factories import CXR_DIR
from training import trainer as trainer_module
from training.augment import (
    _affine_matrices,
    _uniform,
    augment_batch,
    border_crop_matrices,
    gaussian_blur,
    jpeg_recompress,
)
from training.commands.train import add_arguments as add_train_arguments
from training.commands.train import config_from_args
from training.config import AugmentSpec, TrainConfig
from training.dataset import (
    SplitData,
    epoch_order,
    hard_negative_mask,
    source_quotas,
)
from training.manifest import ManifestRow, read_manifest
from training.trainer import (
    EpochRecord,
    SourceAdversary,
    Validation,
    _check_resumable,
    _epoch_inputs,
    _GradReverse,
    choose_best_epoch,
    sample_weights,
    train,
    weighted_loss,
)

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
"""The paper's transforms off: what remains is the transform under test."""

SOURCE_CUE = {
    "border_crop": {"border_crop": 0.2},
    "border_erase": {"border_erase": 3},
    "downscale": {"downscale": 0.3},
    "blur": {"blur_sigma": 2.0},
    "jpeg": {"jpeg_quality": 10, "jpeg_p": 1.0},
    "noise": {"noise_std": 0.05},
}


def _images(n: int = 6, size: int = 40, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _checkerboard(n: int = 4, size: int = 40) -> torch.Tensor:
    idx = torch.arange(size)
    board = ((idx.view(-1, 1) + idx.view(1, -1)) % 2).float()
    return board.expand(n, 1, size, size).clone()


# --- augmentations ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SOURCE_CUE))
def test_each_source_cue_transform_is_seeded_and_changes_the_image(name: str) -> None:
    spec = replace(NO_AUG, **SOURCE_CUE[name])
    x = _images()
    a = augment_batch(x, spec, torch.Generator().manual_seed(5))
    b = augment_batch(x, spec, torch.Generator().manual_seed(5))
    c = augment_batch(x, spec, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.allclose(a, x, atol=1e-3)
    assert a.min() >= 0.0 and a.max() <= 1.0
    mask = torch.tensor([True, False, True, False, False, True])
    masked = augment_batch(x, spec, torch.Generator().manual_seed(5), mask)
    assert torch.equal(masked[~mask], x[~mask])
    assert torch.equal(masked[mask], a[mask])  # draws do not depend on the mask


def test_everything_off_is_the_identity() -> None:
    x = _images()
    off = replace(NO_AUG, noise_std=0.0, blur_sigma=0.0, downscale=1.0, jpeg_quality=0)
    assert torch.allclose(augment_batch(x, off, torch.Generator().manual_seed(0)), x, atol=1e-5)
    no_jpeg = replace(NO_AUG, jpeg_quality=10, jpeg_p=0.0)
    assert torch.allclose(augment_batch(x, no_jpeg, torch.Generator().manual_seed(0)), x, atol=1e-5)


def test_disabled_transforms_draw_no_random_numbers() -> None:
    """The paper's recipe must give the images it gave before these transforms existed."""
    x = _images(n=5)
    spec = AugmentSpec()
    gen = torch.Generator().manual_seed(11)
    augment_batch(x, spec, gen)
    expected = torch.Generator().manual_seed(11)
    _affine_matrices(spec, 5, expected)
    for _ in range(3):  # brightness, contrast, gamma
        _uniform(expected, 5, 0.0, 1.0)
    assert torch.equal(gen.get_state(), expected.get_state())
    on = torch.Generator().manual_seed(11)
    augment_batch(x, replace(spec, noise_std=0.01), on)
    assert not torch.equal(on.get_state(), expected.get_state())


def test_border_erase_touches_only_the_borders() -> None:
    size, frac = 40, 0.15
    band = math.ceil(frac * size)
    spec = replace(NO_AUG, border_erase=4, border_erase_size=frac)
    x = _images(n=16, size=size)
    y = augment_batch(x, spec, torch.Generator().manual_seed(3))
    changed = ((y - x).abs() > 1e-4)[:, 0]  # the identity resampling moves values ~1e-7
    assert changed.any()
    inner = changed[:, band : size - band, band : size - band]
    assert not inner.any()
    for img in changed:  # every changed pixel lies in the band of some edge
        rows, cols = torch.nonzero(img, as_tuple=True)
        near = (rows < band) | (rows >= size - band) | (cols < band) | (cols >= size - band)
        assert near.all()
    # Each image's erased pixels take few gray values (one per rectangle).
    for i in range(16):
        if changed[i].any():
            assert torch.unique(y[i, 0][changed[i]]).numel() <= 4


def test_border_crop_is_crop_then_resize() -> None:
    size = 40
    x = _images(n=1, size=size)
    # left 10 %, right 20 %, top 0, bottom 25 %: whole pixels, so a plain crop + resize compares.
    theta = border_crop_matrices(torch.tensor([[0.1, 0.2, 0.0, 0.25]]))
    grid = F.affine_grid(theta, [1, 1, size, size], align_corners=False)
    got = F.grid_sample(x, grid, mode="bilinear", align_corners=False)
    crop = x[:, :, 0:30, 4:32]
    want = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)
    # The outermost pixels differ: there bilinear sampling reaches half a pixel past the crop.
    assert torch.allclose(got[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], atol=1e-5)


def test_border_crop_in_the_batch_removes_the_frame() -> None:
    size = 40
    framed = torch.zeros(8, 1, size, size)
    framed[:, :, :2, :] = framed[:, :, -2:, :] = 1.0
    framed[:, :, :, :2] = framed[:, :, :, -2:] = 1.0
    spec = replace(NO_AUG, border_crop=0.3)
    y = augment_batch(framed, spec, torch.Generator().manual_seed(0))
    # Up to 30 % cut per edge: most edges lose the 2-pixel frame entirely; none keeps all of it.
    assert y.sum() < framed.sum() * 0.8


def test_resolution_change_and_blur_remove_fine_detail() -> None:
    board = _checkerboard()
    for spec in (replace(NO_AUG, downscale=0.3), replace(NO_AUG, blur_sigma=2.0)):
        y = augment_batch(board, spec, torch.Generator().manual_seed(2))
        assert float(y.var()) < 0.5 * float(board.var())
    assert torch.equal(gaussian_blur(board, torch.zeros(4)), board)


def test_jpeg_quality_orders_the_error() -> None:
    x = _images(n=1, size=64)[0]
    low = jpeg_recompress(x, 10)
    high = jpeg_recompress(x, 95)
    assert low.shape == x.shape
    assert float((low - x).abs().mean()) > float((high - x).abs().mean())
    assert torch.allclose(low * 255, (low * 255).round(), atol=1e-3)  # 8-bit levels


def test_noise_has_the_requested_scale() -> None:
    x = torch.full((8, 1, 64, 64), 0.5)
    y = augment_batch(x, replace(NO_AUG, noise_std=0.05), torch.Generator().manual_seed(0))
    diff = y - x
    assert abs(float(diff.mean())) < 0.005
    assert 0.0 < float(diff.std()) < 0.05


@pytest.mark.parametrize(
    "bad",
    [
        {"border_crop": 0.5},
        {"border_erase": -1},
        {"border_erase_size": 0.0},
        {"downscale": 0.0},
        {"downscale": 1.5},
        {"blur_sigma": -1.0},
        {"jpeg_quality": 99},
        {"jpeg_p": 1.5},
        {"noise_std": -0.1},
    ],
)
def test_augment_spec_rejects_bad_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AugmentSpec(**bad)  # type: ignore[arg-type]


# --- sampling -----------------------------------------------------------------------------------

LABELS = np.array([0] * 40 + [1] * 10 + [0] * 6 + [1] * 14 + [1] * 4)
SOURCES = ["nih"] * 40 + ["hannover"] * 10 + ["cohen"] * 20 + ["figure1"] * 4
HARD = np.array([False] * 50 + [True] * 3 + [False] * 21)


def _per_source(order: np.ndarray) -> dict[str, int]:
    src = np.array(SOURCES)[order]
    return {name: int((src == name).sum()) for name in sorted(set(SOURCES))}


def test_equal_source_sampling_counts() -> None:
    order, mask = epoch_order(
        LABELS, epoch=1, seed=0, sources=SOURCES, source_sampling="equal", augment="all"
    )
    assert order.size == LABELS.size  # the epoch keeps its length
    # 74 visits over 4 sources: 18.5 each; the remainder goes to the first names.
    assert _per_source(order) == {"cohen": 19, "figure1": 19, "hannover": 18, "nih": 18}
    assert mask.all()
    # A source smaller than its quota is visited in whole passes: every image 4 or 5 times.
    figure1 = np.bincount(order, minlength=LABELS.size)[70:74]
    assert figure1.sum() == 19
    assert set(figure1.tolist()) <= {4, 5}
    # NIH's 40 images fill 19 visits without repeats.
    nih = order[np.array(SOURCES)[order] == "nih"]
    assert np.unique(nih).size == nih.size
    again, _ = epoch_order(
        LABELS, epoch=1, seed=0, sources=SOURCES, source_sampling="equal", augment="all"
    )
    assert (again == order).all()


def test_temperature_source_sampling_counts() -> None:
    counts = {"cohen": 20, "figure1": 4, "hannover": 10, "nih": 40}
    same = source_quotas(SOURCES, 74, "temperature", 1.0)
    assert same == counts  # T = 1: the data's own shares
    flat = source_quotas(SOURCES, 74, "temperature", 1e6)
    assert max(flat.values()) - min(flat.values()) <= 1  # T -> infinity: equal
    mid = source_quotas(SOURCES, 1000, "temperature", 2.0)
    assert sum(mid.values()) == 1000
    share = {k: v / 1000 for k, v in mid.items()}
    expected = {
        k: math.sqrt(n) / sum(math.sqrt(m) for m in counts.values()) for k, n in counts.items()
    }
    for k in counts:
        assert share[k] == pytest.approx(expected[k], abs=1e-3)
    order, _ = epoch_order(
        LABELS,
        epoch=2,
        seed=0,
        covid_copies=2,
        sources=SOURCES,
        source_sampling="temperature",
        source_temperature=2.0,
    )
    length = 46 + 2 * 28  # negatives + COVID-19 twice
    assert order.size == length
    assert _per_source(order) == source_quotas(SOURCES, length, "temperature", 2.0)


def test_source_sampling_keeps_copies_within_a_source() -> None:
    # Cohen: 6 non-COVID, 14 COVID-19 x5 = 76 pool entries; with 20 visits its COVID share follows.
    order, _ = epoch_order(
        LABELS,
        epoch=1,
        seed=0,
        covid_copies=5,
        sources=SOURCES,
        source_sampling="equal",
    )
    cohen = order[np.array(SOURCES)[order] == "cohen"]
    covid_share = float(LABELS[cohen].mean())
    assert covid_share > 0.75  # pool share 70/76 = 0.92; 6/20 without the copies
    with pytest.raises(ValueError, match="source"):
        epoch_order(LABELS, epoch=1, seed=0, source_sampling="equal")


def test_hard_negative_copies_and_default_order() -> None:
    plain, _ = epoch_order(LABELS, epoch=3, seed=1, covid_copies=2)
    same, _ = epoch_order(LABELS, epoch=3, seed=1, covid_copies=2, hard_negatives=HARD)
    assert (plain == same).all()  # copies 1: the order of earlier versions
    order, _ = epoch_order(
        LABELS, epoch=3, seed=1, covid_copies=2, hard_negatives=HARD, hard_negative_copies=4
    )
    visits = np.bincount(order, minlength=LABELS.size)
    assert (visits[HARD] == 4).all()
    assert (visits[(LABELS == 0) & ~HARD] == 1).all()
    assert (visits[LABELS == 1] == 2).all()


def _row(i: int, label: int, source: str, finding: str) -> ManifestRow:
    return ManifestRow(Path(f"/x/{i}.jpg"), f"{i}.jpg", label, "train", finding, source)


def test_hard_negative_mask_and_loss_weights() -> None:
    rows = [
        _row(0, 1, "ieee8023", "COVID-19"),
        _row(1, 0, "ieee8023", "Pneumocystis"),
        _row(2, 0, "ieee8023", "No Finding"),
        _row(3, 0, "nih_chestxray8", "Pneumonia"),
        _row(4, 0, "ieee8023", "SARS"),
    ]
    hard = hard_negative_mask(rows, ("ieee8023",))
    assert hard.tolist() == [False, True, False, False, True]
    cfg = TrainConfig(manifest="m", hard_negative_weight=3.0)
    labels = np.array([r.label for r in rows])
    assert sample_weights(labels, hard, cfg).tolist() == [1.0, 3.0, 1.0, 1.0, 3.0]
    data = SplitData(torch.zeros(5, 1, 8, 8), torch.from_numpy(labels), rows)
    inputs = _epoch_inputs(data, cfg, None)
    assert inputs.weights is not None and inputs.weights.tolist() == [1.0, 3.0, 1.0, 1.0, 3.0]
    assert _epoch_inputs(data, TrainConfig(manifest="m"), None).weights is None


def test_weighted_loss_is_the_loss_of_repeated_images() -> None:
    logits = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 0])
    weighted = weighted_loss(logits, targets, torch.tensor([2.0, 1.0, 1.0]), 0.1)
    repeated = F.cross_entropy(logits[[0, 0, 1, 2]], targets[[0, 0, 1, 2]], label_smoothing=0.1)
    assert float(weighted) == pytest.approx(float(repeated), rel=1e-6)
    plain = weighted_loss(logits, targets, None, 0.0)
    assert torch.equal(plain, F.cross_entropy(logits, targets))


def test_shared_manifest_hard_negatives_and_equal_sources() -> None:
    manifest = read_manifest(CXR_DIR / "manifest.csv")
    rows = manifest.split("train")
    hard = hard_negative_mask(rows, ("ieee8023",))
    with (CXR_DIR / "manifest.csv").open(newline="") as handle:
        expected = sum(
            r["split"] == "train"
            and r["source"] == "ieee8023"
            and r["label"] == "non_covid"
            and r["finding"].strip().lower() != "no finding"
            for r in csv.DictReader(handle)
        )
    assert int(hard.sum()) == expected > 20
    labels = np.array([r.label for r in rows])
    sources = [r.source for r in rows]
    order, _ = epoch_order(labels, epoch=1, seed=0, sources=sources, source_sampling="equal")
    counted = np.unique(np.array(sources)[order], return_counts=True)[1]
    assert counted.max() - counted.min() <= 1 and counted.sum() == len(rows)


# --- the adversary ------------------------------------------------------------------------------


def test_gradient_reversal() -> None:
    x = torch.ones(3, requires_grad=True)
    (_GradReverse.apply(x, 0.5) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad is not None and x.grad.tolist() == [-0.5, -1.0, -1.5]


def test_adversary_reads_head_features_and_reverses_into_the_backbone() -> None:
    from models.architectures import build_model

    torch.manual_seed(0)
    model = build_model("squeezenet1_1", init="none")
    adversary = SourceAdversary(model, "squeezenet1_1", ["b", "a", "c", "a"], weight=1.0)
    assert adversary.sources == ["a", "b", "c"]
    assert adversary.source_index(["c", "a"]).tolist() == [2, 0]
    model.train()
    adversary.train()
    x = torch.rand(4, 3, 64, 64)
    model(x)
    labels = torch.tensor([0, 1, 1, 0])
    loss = adversary.loss(labels, torch.tensor([0, 1, 2, 0]))
    assert math.isfinite(float(loss.detach()))
    loss.backward()
    backbone = next(model.features.parameters())
    assert backbone.grad is not None and backbone.grad.abs().sum() > 0
    assert adversary.classifier.weight.grad is not None
    with pytest.raises(RuntimeError):
        adversary.loss(labels, torch.tensor([0, 1, 2, 0]))  # features are used once
    adversary.remove()


# --- selection by within-source AUC -------------------------------------------------------------

SCRIPT = [
    # epoch, val loss, val AUC, pooled within-source AUC
    (1, 0.60, 0.80, 0.55),
    (2, 0.50, 0.95, 0.60),  # best pooled AUC: the source-recognition epoch
    (3, 0.45, 0.90, 0.62),  # lowest loss
    (4, 0.55, 0.85, 0.75),  # best within sources
    (5, 0.58, 0.88, 0.70),
]


def _history() -> list[EpochRecord]:
    return [
        EpochRecord(e, 0.5, loss, auc, 1e-3, 1.0, val_within_source_auc=within)
        for e, loss, auc, within in SCRIPT
    ]


def test_choose_best_epoch_by_each_score() -> None:
    history = _history()
    assert choose_best_epoch(history, "auc") == 2
    assert choose_best_epoch(history, "loss") == 3
    assert choose_best_epoch(history, "within_source_auc") == 4
    nan = [replace(h, val_within_source_auc=float("nan")) for h in history]
    assert choose_best_epoch(nan, "within_source_auc") == 2  # no source with both: by AUC


def _synthetic_split(n: int, seed: int) -> SplitData:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor([i % 2 for i in range(n)])
    sources = ["ieee8023" if i % 4 < 2 else ("nih" if i % 2 == 0 else "hannover") for i in range(n)]
    rows = [_row(i, int(labels[i]), sources[i], "SARS") for i in range(n)]
    return SplitData(torch.rand(n, 1, 32, 32, generator=gen), labels, rows)


@pytest.mark.parametrize(("select_by", "best"), [("auc", 2), ("loss", 3), ("within_source_auc", 4)])
def test_train_keeps_the_epoch_choose_best_epoch_names(
    select_by: str, best: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer's own loop, with scripted validation scores (no optimisation needed): each
    score picks another epoch, and the one kept is the one :func:`choose_best_epoch` names."""
    script = iter(SCRIPT)

    def fake_epoch(*args: object, **kwargs: object) -> tuple[float, float]:
        return 0.5, float("nan")

    def fake_validate(*args: object, **kwargs: object) -> Validation:
        _, loss, auc, within = next(script)
        return Validation(loss=loss, auc=auc, within_source_auc=within, constant=False)

    monkeypatch.setattr(trainer_module, "_run_epoch", fake_epoch)
    monkeypatch.setattr(trainer_module, "_validate", fake_validate)
    cfg = TrainConfig(
        manifest="m",
        arch="squeezenet1_1",
        input_size=32,
        epochs=5,
        device="cpu",
        select_by=select_by,
    )
    result = train(cfg, _synthetic_split(8, 0), _synthetic_split(8, 1), tmp_path, progress=False)
    assert result.best_epoch == best == choose_best_epoch(result.history, select_by)
    assert trainer_module.load_checkpoint(tmp_path / "best.pt")["epoch"] == best
    saved = json.loads((tmp_path / "history.json").read_text())
    assert [h["val_within_source_auc"] for h in saved] == [s[3] for s in SCRIPT]
    assert result.preprocess == PreprocessSpec(input_size=32)


def test_adversarial_run_trains_and_resumes(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    cfg = TrainConfig(
        manifest="m",
        arch="squeezenet1_1",
        head_bias=1.0,
        input_size=32,
        batch_size=8,
        epochs=1,
        lr=1e-3,
        device="cpu",
        augment="all",
        covid_copies=1,
        adversary_weight=0.3,
        source_sampling="equal",
        hard_negative_weight=2.0,
        aug=replace(AugmentSpec(), border_erase=2, noise_std=0.02, blur_sigma=1.0),
    )
    data, val = _synthetic_split(16, 0), _synthetic_split(8, 1)
    first = train(cfg, data, val, tmp_path, progress=False, log=lambda _: None)
    assert math.isfinite(first.history[0].adversary_loss)
    assert "adversary" in trainer_module.load_checkpoint(tmp_path / "last.pt")
    cfg2 = replace(cfg, epochs=2)
    second = train(cfg2, data, val, tmp_path, resume=True, progress=False, log=lambda _: None)
    assert [h.epoch for h in second.history] == [1, 2]
    with pytest.raises(ValueError, match="adversary_weight"):
        train(replace(cfg, epochs=3, adversary_weight=0.0), data, val, tmp_path, resume=True)


# --- config, flags, cards -----------------------------------------------------------------------


def _shortcut_config() -> TrainConfig:
    return TrainConfig(
        manifest="m.csv",
        source_sampling="temperature",
        source_temperature=3.0,
        hard_negative_sources=("ieee8023", "figure1"),
        hard_negative_weight=2.5,
        hard_negative_copies=3,
        adversary_weight=0.1,
        select_by="within_source_auc",
        aug=replace(
            AugmentSpec(),
            border_crop=0.1,
            border_erase=2,
            border_erase_size=0.2,
            downscale=0.4,
            blur_sigma=1.5,
            jpeg_quality=40,
            jpeg_p=0.3,
            noise_std=0.02,
        ),
    )


def test_config_round_trip_with_the_new_fields() -> None:
    cfg = _shortcut_config()
    data = json.loads(json.dumps(cfg.to_dict()))  # through JSON, as in the card
    assert data["hard_negative_sources"] == ["ieee8023", "figure1"]
    assert TrainConfig.from_dict(data) == cfg
    with pytest.raises(ValueError):
        TrainConfig(manifest="m", select_by="within_auc")
    with pytest.raises(ValueError):
        TrainConfig(manifest="m", source_sampling="uniform")
    with pytest.raises(ValueError):
        TrainConfig(manifest="m", adversary_weight=0.1, init="imagenet")  # frozen backbone


def test_old_configs_and_cards_still_load() -> None:
    cfg = _shortcut_config()
    new_keys = {
        "source_sampling",
        "source_temperature",
        "hard_negative_sources",
        "hard_negative_weight",
        "hard_negative_copies",
        "adversary_weight",
        "preprocess",
    }
    old = {k: v for k, v in TrainConfig(manifest="m").to_dict().items() if k not in new_keys}
    paper_aug = ("hflip", "rotate_deg", "scale", "shear_deg", "translate", "brightness")
    old["aug"] = {k: old["aug"][k] for k in (*paper_aug, "contrast", "gamma")}
    assert TrainConfig.from_dict(old) == TrainConfig(manifest="m")
    assert cfg.to_dict().keys() >= new_keys
    shipped = (
        Path(__file__).resolve().parents[3] / "models/registry/squeezenet1_1-c/model_card.json"
    )
    params = json.loads(shipped.read_text())["training_parameters"]
    loaded = TrainConfig.from_card_parameters(params)
    assert loaded.arch == "squeezenet1_1" and loaded.select_by == "auc"
    assert loaded.source_sampling == "none" and loaded.aug.border_erase == 0


def test_resume_accepts_a_checkpoint_without_the_new_keys() -> None:
    cfg = TrainConfig(manifest="m")
    saved = {k: v for k, v in cfg.to_dict().items() if k not in {"adversary_weight", "preprocess"}}
    _check_resumable(saved, cfg)
    with pytest.raises(ValueError, match="select_by"):
        _check_resumable(saved, replace(cfg, select_by="within_source_auc"))


def test_preprocess_fields_pass_through_to_the_spec() -> None:
    assert TrainConfig(manifest="m", input_size=96).preprocess_spec() == PreprocessSpec(96)
    with pytest.raises(ValueError, match="input_size"):
        TrainConfig(manifest="m", preprocess={"input_size": 64})
    spec = TrainConfig(manifest="m", preprocess={"lung_crop": True, "equalise": "clahe"})
    assert spec.preprocess_spec() == PreprocessSpec(224, lung_crop=True, equalise="clahe")


def test_train_flags_map_onto_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    default = config_from_args(parser.parse_args(["--manifest", "m.csv"]))
    assert default == TrainConfig(manifest="m.csv")
    args = parser.parse_args(
        [
            "--manifest",
            "m.csv",
            "--source-sampling",
            "temperature",
            "--source-temperature",
            "3",
            "--hard-negative-sources",
            "ieee8023",
            "figure1",
            "--hard-negative-weight",
            "2.5",
            "--hard-negative-copies",
            "3",
            "--adversary-weight",
            "0.1",
            "--select-by",
            "within_source_auc",
            "--border-crop",
            "0.1",
            "--border-erase",
            "2",
            "--border-erase-size",
            "0.2",
            "--downscale",
            "0.4",
            "--blur-sigma",
            "1.5",
            "--jpeg-quality",
            "40",
            "--jpeg-p",
            "0.3",
            "--noise-std",
            "0.02",
        ]
    )
    assert config_from_args(args) == _shortcut_config()
