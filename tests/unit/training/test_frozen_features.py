"""A frozen backbone trained without augmentation reuses its outputs: same head, one pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.architectures import build_model, split_at_head
from training import trainer
from training.config import TrainConfig
from training.dataset import SplitData
from training.manifest import ManifestRow


@pytest.mark.parametrize("arch", ["resnet18", "squeezenet1_1", "densenet121", "efficientnet_lite0"])
def test_head_of_backbone_is_the_model(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch).eval()
    x = torch.randn(2, 3, 64, 64)
    backbone, head = split_at_head(model, arch)
    with torch.inference_mode():
        assert torch.allclose(head(backbone(x)), model(x), atol=1e-5)


def _split(n: int, seed: int) -> SplitData:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor([i % 2 for i in range(n)])
    gray = torch.rand(n, 1, 32, 32, generator=gen) * 0.5 + 0.3 * labels.view(-1, 1, 1, 1)
    rows = [
        ManifestRow(
            relpath=f"x{seed}-{i}.png",
            path=Path(f"x{seed}-{i}.png"),
            label=int(labels[i]),
            split="train",
            source="s",
        )
        for i in range(n)
    ]
    return SplitData(gray=gray.clamp(0, 1), labels=labels, rows=rows)


def _config(**kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "manifest": "unused.csv",
        "arch": "resnet18",
        "finetune": "last",
        "augment": "none",
        "covid_copies": 1,
        "epochs": 3,
        "batch_size": 8,
        "input_size": 32,
        "lr": 1e-2,
        "device": "cpu",
        "threads": 1,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_frozen_training_equals_full_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_data, val_data = _split(24, 1), _split(12, 2)
    logs: list[str] = []
    cached = trainer.train(
        _config(), train_data, val_data, tmp_path / "a", progress=False, log=logs.append
    )
    assert any("computed once" in line for line in logs)
    monkeypatch.setattr(trainer.FrozenBackbone, "applies", staticmethod(lambda cfg: False))
    full = trainer.train(_config(), train_data, val_data, tmp_path / "b", progress=False, log=print)
    for a, b in zip(cached.history, full.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, abs=1e-5)
        assert a.val_auc == pytest.approx(b.val_auc, abs=1e-6)
    weights = [dict(m.model.named_parameters())["fc.weight"] for m in (cached, full)]
    assert torch.allclose(weights[0], weights[1], atol=1e-5)


@pytest.mark.parametrize(
    ("kw", "applies"),
    [
        ({}, True),
        ({"augment": "all"}, False),
        ({"finetune": "all"}, False),
    ],
)
def test_cache_only_without_augmentation_and_with_a_frozen_backbone(
    kw: dict[str, object], applies: bool
) -> None:
    assert trainer.FrozenBackbone.applies(_config(**kw)) is applies
