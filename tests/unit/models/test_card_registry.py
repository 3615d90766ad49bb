"""Model cards round-trip; the registry saves, activates and loads versions and refuses
corrupted or mismatched weights with a clear error; `deepcovid models` drives it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import torch

from deepcovid.cli import main
from models.architectures import ARCHITECTURES, build_model
from models.card import Metric, ModelCard
from models.preprocessing import PreprocessSpec
from models.registry import Registry, RegistryError, WeightsIntegrityError, sha256_file


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _card(arch: str = "squeezenet1_1", **kw: object) -> ModelCard:
    return ModelCard(
        architecture=arch,
        threshold=0.37,
        threshold_method="sensitivity 0.98 on val",
        training_manifest="cxr/manifest.csv",
        training_manifest_sha256="ab" * 32,
        training_command="deepcovid train --arch " + arch,
        training_parameters={"epochs": 3, "lr": 1e-3},
        metrics={
            "test/auc": Metric(0.97, 0.95, 0.99, method="bootstrap", n=378),
            "test/sensitivity": Metric(0.98, 0.94, 0.99, method="Wilson"),
        },
        **kw,  # type: ignore[arg-type]
    )


def test_card_json_round_trip() -> None:
    card = _card(created="2026-11-27T10:00:00Z", device_uid="1.2.3.4")
    text = card.to_json()
    again = ModelCard.from_json(text)
    assert again == card
    data = json.loads(text)
    assert data["classes"] == ["non_covid", "covid"]
    assert data["metrics"]["test/auc"]["ci_low"] == 0.95
    assert again.preprocess.input_size == 224


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"architecture": "vgg16"}, "architecture"),
        ({"classes": ["covid", "non_covid"]}, "classes"),
        ({"threshold": 1.5}, "threshold"),
        ({"device_uid": "1.2.abc"}, "device_uid"),
        ({"weights_sha256": "xyz"}, "weights_sha256"),
        ({"weights_dtype": "int8"}, "weights_dtype must be one of float32, float16"),
        ({"colour": "blue"}, "unknown model card fields: colour"),
    ],
)
def test_card_refuses_invalid_values(change: dict[str, object], message: str) -> None:
    data = _card().to_dict()
    data.update(change)
    with pytest.raises(ValueError, match=message):
        ModelCard.from_dict(data)


def test_weights_dtype_is_written_only_when_not_float32() -> None:
    """Cards from before the field stay byte-identical; a float16 card says so and round-trips."""
    assert "weights_dtype" not in json.loads(_card().to_json())
    half = _card(weights_dtype="float16")
    assert json.loads(half.to_json())["weights_dtype"] == "float16"
    assert ModelCard.from_json(half.to_json()).weights_dtype == "float16"


def test_metric_interval_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="ci_low"):
        Metric(0.9, 0.95, 0.85)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_architecture_saves_and_loads(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(arch)
    registry = Registry(tmp_path)
    version = registry.save_version(model, _card(arch))
    assert registry.versions() == [version]
    registry.activate(version)
    loaded, card = registry.load()
    assert card.version == version and card.architecture == arch
    assert len(card.weights_sha256) == 64 and card.device_uid.count(".") > 3
    assert ModelCard.from_json(card.to_json()) == card
    for (k1, v1), (k2, v2) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(model.eval()(x), loaded(x))


def test_every_version_gets_a_new_device_uid(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    model = build_model("squeezenet1_1")
    v1 = registry.save_version(model, _card())
    v2 = registry.save_version(model, _card())
    named = registry.save_version(model, _card(version="2026-11-rc1"))
    assert (v1, v2, named) == ("v0001", "v0002", "2026-11-rc1")
    uids = {registry.card(v).device_uid for v in (v1, v2, named)}
    assert len(uids) == 3
    with pytest.raises(RegistryError, match="already exists"):
        registry.save_version(model, _card(version="v0001"))


def test_registry_files_are_readable_by_the_worker_and_cards_replace_atomically(
    tmp_path: Path,
) -> None:
    registry = Registry(tmp_path)
    version = registry.save_version(
        build_model("squeezenet1_1"), _card(), extra_files={"extra.bin": b"stats"}
    )
    registry.activate(version)
    folder = registry.path(version)
    written = [folder / "weights.pt", folder / "model_card.json", folder / "extra.bin"]
    for path in [*written, tmp_path / "ACTIVE"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name
    registry.replace_card(registry.card(version).replace(threshold=0.5))
    assert registry.card(version).threshold == 0.5
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in written)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(RegistryError, match="no model version 'v0009'"):
        registry.replace_card(registry.card(version).replace(version="v0009"))


def test_corrupted_weights_give_a_clear_error(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    version = registry.save_version(build_model("squeezenet1_1"), _card())
    weights = registry.path(version) / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match=r"corrupted or does not belong.*sha256"):
        registry.load(version)
    with pytest.raises(WeightsIntegrityError):
        registry.activate(version)


def _version_with_weights(registry: Registry, stored: object) -> str:
    """A squeezenet1_1 version whose ``weights.pt`` is ``stored``, the card's sha256 matching."""
    version = registry.save_version(build_model("squeezenet1_1"), _card())
    torch.save(stored, registry.path(version) / "weights.pt")
    weights_sha256 = sha256_file(registry.path(version) / "weights.pt")
    registry.replace_card(registry.card(version).replace(weights_sha256=weights_sha256))
    return version


def test_weights_of_another_architecture_give_a_clear_error(tmp_path: Path) -> None:
    """Even with a matching sha256 (card edited), weights that do not fit are refused."""
    registry = Registry(tmp_path)
    version = _version_with_weights(registry, build_model("squeezenet1_0").state_dict())
    with pytest.raises(WeightsIntegrityError, match="do not fit architecture squeezenet1_1"):
        registry.load(version)


def test_pickled_objects_are_not_loaded(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    version = _version_with_weights(registry, build_model("squeezenet1_1"))  # a whole-model pickle
    with pytest.raises(WeightsIntegrityError, match="not a readable state dict"):
        registry.load(version)


def test_no_active_version_and_unknown_version(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    assert registry.versions() == [] and registry.active_version() is None
    with pytest.raises(RegistryError, match="no active model version"):
        registry.load()
    with pytest.raises(RegistryError, match="no model version 'v0009'"):
        registry.activate("v0009")
    with pytest.raises(ValueError, match="invalid version name"):
        registry.path("../etc")


def test_models_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = Registry(tmp_path)
    v1 = registry.save_version(build_model("squeezenet1_1"), _card())
    v2 = registry.save_version(build_model("squeezenet1_1"), _card())
    root = ["models", "--registry", str(tmp_path)]

    assert main([*root, "activate", v2]) == 0
    assert registry.active_version() == v2
    capsys.readouterr()
    assert main([*root, "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"  {v1}") and lines[1].startswith(f"* {v2}")
    assert "test AUC 0.970" in lines[1]

    assert main([*root, "show", v1, "--verify"]) == 0
    shown = ModelCard.from_json(capsys.readouterr().out)
    assert shown.version == v1

    assert main([*root, "activate", "v0042"]) == 2  # a usage error: one line, no traceback
    assert "no model version 'v0042'" in capsys.readouterr().err
    assert registry.active_version() == v2


def test_the_card_carries_the_optional_preprocessing_to_serving() -> None:
    spec = PreprocessSpec(160, lung_crop=True, equalise="clahe")
    card = ModelCard(architecture="resnet18", input_size=160)
    card = card.replace(preprocessing=ModelCard.preprocessing_of(spec))
    # The finder is recorded with a crop: a card without one means the classical finder.
    assert card.preprocessing == {"lung_crop": True, "equalise": "clahe", "lung_finder": "learned"}
    again = ModelCard.from_json(card.to_json())
    assert again.preprocess == spec
    old = ModelCard.from_dict({"architecture": "resnet18", "input_size": 160})  # before the field
    assert old.preprocess == PreprocessSpec(160)
    with pytest.raises(ValueError):
        card.replace(preprocessing={"equalise": "sharpen"})
