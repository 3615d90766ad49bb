"""The predictor: engines agree with eager fp32 within 1e-4, images in, probabilities out."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from models.architectures import build_model
from models.card import ModelCard
from models.inference import AUTO_ENGINE, Predictor, resolve_device, resolve_engine
from models.preprocessing import PreprocessSpec, to_model_input
from models.registry import Registry, round_to_dtype


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with one active SqueezeNet 1.1 (random weights, head scaled so that the
    probabilities spread over (0, 1) and engine differences would show)."""
    root = tmp_path_factory.mktemp("registry")
    torch.manual_seed(0)
    model = build_model("squeezenet1_1")
    with torch.no_grad():
        model.classifier[1].weight.mul_(40.0)
    registry = Registry(root)
    registry.activate(registry.save_version(model, ModelCard(architecture="squeezenet1_1")))
    return root


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((96 + 8 * i, 80), dtype=np.float32) for i in range(5)]


def test_auto_engine_per_device() -> None:
    cpu = torch.device("cpu")
    assert resolve_engine("auto", cpu) == AUTO_ENGINE["cpu"]
    assert resolve_engine("auto", cpu, "bf16") in ("eager", "compile")
    assert resolve_engine("auto", torch.device("cuda")) == AUTO_ENGINE["cuda"]
    with pytest.raises(ValueError, match="onnx"):
        resolve_engine("onnx", torch.device("cuda"))
    with pytest.raises(ValueError, match="unknown engine"):
        resolve_engine("tensorrt", cpu)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_eager_predicts_probabilities(registry_root: Path, images: list[np.ndarray]) -> None:
    predictor = Predictor.from_registry(registry_root, engine="eager", device="cpu", threads=2)
    assert predictor.version == "v0001" and predictor.card.architecture == "squeezenet1_1"
    probs = predictor.predict(images)
    assert probs.shape == (5,) and probs.dtype == np.float32
    assert np.all((probs >= 0) & (probs <= 1))
    assert float(probs.std()) > 1e-3  # the model is not constant
    batch = torch.stack([to_model_input(im) for im in images])
    assert np.array_equal(predictor.predict_tensor(batch), probs)
    assert predictor.predict(images[0]).shape == (1,)
    assert predictor.predict([]).shape == (0,)
    # Batch size does not change results.
    small = Predictor.from_registry(registry_root, engine="eager", device="cpu", batch_size=2)
    assert np.allclose(small.predict(images), probs, atol=1e-6)


def test_onnx_matches_eager_and_is_cached_next_to_the_version(
    registry_root: Path, images: list[np.ndarray]
) -> None:
    eager = Predictor.from_registry(registry_root, engine="eager", device="cpu").predict(images)
    onnx = Predictor.from_registry(registry_root, engine="onnx", device="cpu")
    assert onnx.engine == "onnx"
    assert float(np.abs(onnx.predict(images) - eager).max()) <= 1e-4
    cached = list((registry_root / ".cache").glob("*.onnx"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    Predictor.from_registry(registry_root, engine="onnx", device="cpu").warmup()
    assert cached[0].stat().st_mtime_ns == stamp  # exported once
    assert Registry(registry_root).versions() == ["v0001"]  # the cache is not a version


def test_auto_engine_is_exact(registry_root: Path, images: list[np.ndarray]) -> None:
    eager = Predictor.from_registry(registry_root, engine="eager", device="cpu").predict(images)
    auto = Predictor.from_registry(registry_root, device="cpu")
    assert auto.engine == AUTO_ENGINE["cpu"]
    assert float(np.abs(auto.predict(images) - eager).max()) <= 1e-4


def test_unsaved_model_and_custom_spec(images: list[np.ndarray]) -> None:
    """A model not from a registry (training's evaluation): its own spec, ONNX exported to tmp."""
    torch.manual_seed(1)
    card = ModelCard(architecture="resnet18", input_size=64, mean=(0.5,) * 3, std=(0.25,) * 3)
    model = build_model("resnet18")
    twin = copy.deepcopy(model)
    eager = Predictor(model, card, engine="eager", device="cpu")
    onnx = Predictor(twin, card, engine="onnx", device="cpu")
    assert eager.spec == PreprocessSpec(64, (0.5,) * 3, (0.25,) * 3)
    x = torch.stack([to_model_input(im, eager.spec) for im in images])
    assert x.shape == (5, 3, 64, 64)
    assert float(np.abs(onnx.predict_tensor(x) - eager.predict_tensor(x)).max()) <= 1e-4
    assert np.array_equal(eager.predict(images), eager.predict_tensor(x))


def test_bf16_is_an_option_close_to_fp32(registry_root: Path, images: list[np.ndarray]) -> None:
    fp32 = Predictor.from_registry(registry_root, engine="eager", device="cpu").predict(images)
    bf16 = Predictor.from_registry(registry_root, engine="eager", device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    assert float(np.abs(bf16.predict(images) - fp32).max()) < 0.05


def test_efficientnet_lite0_stored_as_float16_serves_exactly_on_onnx(
    tmp_path: Path, images: list[np.ndarray]
) -> None:
    """The ImageNet-initialised EfficientNet-Lite0, rounded to and stored as float16 (the shipped
    format): the file is half size, loads back to the very network that was measured, and the
    CPU's default engine (ONNX, with the TF-style padding exported) matches eager."""
    torch.manual_seed(0)  # the new 2-class head
    model = build_model("efficientnet_lite0", init="imagenet")
    with torch.no_grad():
        model._fc.weight.mul_(10.0)  # spread the probabilities (about 0.06-0.44 here)
    round_to_dtype(model, "float16")
    registry = Registry(tmp_path)
    card = ModelCard(architecture="efficientnet_lite0", weights_dtype="float16")
    registry.activate(registry.save_version(model, card))
    weights = tmp_path / "v0001" / "weights.pt"
    assert 6e6 < weights.stat().st_size < 8e6  # float32 would be 13.5 MB
    loaded, _ = registry.load()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    eager = Predictor.from_registry(tmp_path, engine="eager", device="cpu").predict(images)
    assert float(eager.std()) > 1e-3
    onnx = Predictor.from_registry(tmp_path, engine="onnx", device="cpu").predict(images)
    assert float(np.abs(onnx - eager).max()) <= 1e-4
