"""The ``compile`` engine (torch.compile, whose inductor runs the C compiler in child processes)
agrees with eager fp32 within 1e-4. The other engines are unit tests
(``tests/unit/models/test_inference.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.architectures import build_model
from models.card import ModelCard
from models.inference import Predictor
from models.registry import Registry


@pytest.mark.slow
def test_compile_matches_eager(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_model("squeezenet1_1")
    with torch.no_grad():
        model.classifier[1].weight.mul_(40.0)  # spread the probabilities: differences show
    registry = Registry(tmp_path)
    registry.activate(registry.save_version(model, ModelCard(architecture="squeezenet1_1")))
    rng = np.random.default_rng(0)
    images = [rng.random((96 + 8 * i, 80), dtype=np.float32) for i in range(5)]
    eager = Predictor.from_registry(tmp_path, engine="eager", device="cpu").predict(images)
    compiled = Predictor.from_registry(tmp_path, engine="compile", device="cpu")
    assert float(np.abs(compiled.predict(images) - eager).max()) <= 1e-4


@pytest.mark.slow
def test_compile_runs_an_ensemble_as_eager_does(tmp_path: Path) -> None:
    """An ensemble version compiles as one network (all members in one graph)."""
    from tests.harness.factories import random_ensemble_registry

    torch.set_num_threads(2)
    root = random_ensemble_registry(tmp_path / "registry", members=2)
    rng = np.random.default_rng(1)
    images = [rng.random((90, 80), dtype=np.float32) for _ in range(4)]
    eager = Predictor.from_registry(root, engine="eager", device="cpu").predict(images)
    compiled = Predictor.from_registry(root, engine="compile", device="cpu")
    assert compiled.card.is_ensemble
    assert float(np.abs(compiled.predict(images) - eager).max()) <= 1e-4
