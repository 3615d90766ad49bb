"""Architectures build offline with random weights; ImageNet init goes through the weight enums
and the TORCH_HOME cache and fails clearly when the file is not there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from models.architectures import (
    ARCHITECTURES,
    CLASSES,
    build_model,
    head_parameters,
    head_prefix,
    imagenet_weights_file,
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_classes_order_puts_covid_second() -> None:
    assert CLASSES == ("non_covid", "covid")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_architecture_builds_with_two_outputs(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, init="none")
    assert not model.training
    with torch.inference_mode():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 2)
    head = list(head_parameters(model, arch))
    assert head and all(p.shape[0] == 2 for p in head)


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'vgg16'"):
        build_model("vgg16")


def test_imagenet_offline_error_names_file_and_torch_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert imagenet_weights_file("resnet18") == expected
    with pytest.raises(RuntimeError) as info:
        build_model("resnet18", init="imagenet")
    message = str(info.value)
    assert str(expected) in message
    assert f"TORCH_HOME={tmp_path}" in message


def test_imagenet_init_reads_the_cached_enum_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file in the TORCH_HOME cache is what the weight enum loads (no download attempted)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(1)
    fake_imagenet = torchvision.models.squeezenet1_1(weights=None)  # 1000 classes
    path = imagenet_weights_file("squeezenet1_1")
    path.parent.mkdir(parents=True)
    torch.save(fake_imagenet.state_dict(), path)

    model = build_model("squeezenet1_1", init="imagenet")
    ours = model.state_dict()
    for key, value in fake_imagenet.state_dict().items():
        if key.startswith(head_prefix("squeezenet1_1")):
            assert ours[key].shape[0] == 2  # new 2-class head
        else:
            assert torch.equal(ours[key], value), key


def test_local_file_init_backbone_or_full_model(tmp_path: Path) -> None:
    torch.manual_seed(2)
    imagenet_like = torchvision.models.resnet18(weights=None)
    backbone_file = tmp_path / "backbone.pth"
    torch.save(imagenet_like.state_dict(), backbone_file)
    model = build_model("resnet18", init=backbone_file)
    assert torch.equal(model.conv1.weight, imagenet_like.conv1.weight)
    assert model.fc.out_features == 2

    full_file = tmp_path / "full.pt"
    torch.save({"state_dict": model.state_dict()}, full_file)
    again = build_model("resnet18", init=str(full_file))
    assert torch.equal(again.fc.weight, model.fc.weight)


def test_local_file_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sq.pt"
    torch.save(build_model("squeezenet1_1").state_dict(), path)
    with pytest.raises(RuntimeError, match="does not fit resnet18"):
        build_model("resnet18", init=path)
    with pytest.raises(FileNotFoundError):
        build_model("resnet18", init=tmp_path / "missing.pt")
