"""EfficientNet-Lite0, laid out like the ``efficientnet_pytorch`` port so that its published weights load strictly.

Lite: ReLU6 instead of swish, no squeeze-excitation, the stem (32) and head (1280) channels fixed. Batch norm
eps 1e-3, as trained in TensorFlow. Convolutions pad TensorFlow's "same" way, computed statically from
``image_size``: the total padding ``max((out - 1) * stride + kernel - in, 0)`` with the extra pixel on the right
and bottom, which for a stride-2 convolution on an even size is asymmetric (3x3 on 224: 0 before, 1 after). A
static pad keeps the ONNX export free of shape arithmetic. On the 20 ImageNet sample photos (:mod:`split.photos`)
the TF padding scores 17/20 top-1 (19/20 top-5); PyTorch's symmetric ``kernel // 2`` padding 15/20, the extra
pixel before rather than after 15/20 (measured when this was written).
"""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from split.models.common import divisible
from split.models.imagenet import tf_lite_preprocessing

__all__ = ["EfficientNetLite0", "MBConvBlock", "SameConv2d", "same_padding"]

_EPS = 1e-3
# (expansion, kernel, stride, output channels, repeats): EfficientNet-B0's stages (Lite0 keeps them).
_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding of one spatial side of ``size`` pixels: (before, after)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow "same" padding for a square ``size``-pixel input, fixed at build."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1) -> None:
        before, after = same_padding(size, kernel, stride)
        symmetric = before == after
        super().__init__(cin, cout, kernel, stride, before if symmetric else 0, groups=groups, bias=False)
        self.same_pad = (0, 0, 0, 0) if symmetric else (before, after, before, after)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self.same_pad) if any(self.same_pad) else x)


class MBConvBlock(nn.Module):
    """[expand 1x1] -> depthwise kxk -> project 1x1 (linear), each batch-normed; a skip when shapes allow."""

    def __init__(self, cin: int, cout: int, expansion: int, kernel: int, stride: int, size: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.has_expand = expansion != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, hidden, 1, 1, size)
            self._bn0 = nn.BatchNorm2d(hidden, eps=_EPS)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, size, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=_EPS)
        self._project_conv = SameConv2d(hidden, cout, 1, 1, math.ceil(size / stride))
        self._bn2 = nn.BatchNorm2d(cout, eps=_EPS)
        self.act = nn.ReLU6(inplace=True)
        self.use_skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = self._bn2(self._project_conv(self.act(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.use_skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (4.7 M parameters at width 1.0): stem -> ``_blocks.0`` … ``_blocks.15`` -> head -> fc.

    Example:
        >>> net = EfficientNetLite0(3, 1000, width=1.0, image_size=224)
        >>> net(torch.zeros(1, 3, 224, 224)).shape        # doctest: +SKIP
        torch.Size([1, 1000])
    """

    split_points = ("_blocks.2", "_blocks.4", "_blocks.10", "_blocks.15")
    exits = ("_blocks.2", "_blocks.4")
    preprocessing: dict[str, Any] = tf_lite_preprocessing()
    block_names = (*(f"_blocks.{i}" for i in range(sum(s[-1] for s in _STAGES))), "_conv_head")
    """The blocks a transfer can fine-tune (:mod:`split.finetune`), in order, each named by its first module:
    ``_blocks.0`` … ``_blocks.15``, then the head (``_conv_head`` and its batch norm ``_bn1``)."""

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0, image_size: int = 224) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(in_channels, 32, 3, 2, image_size)
        self._bn0 = nn.BatchNorm2d(32, eps=_EPS)
        self.stem_act = nn.ReLU6(inplace=True)
        size, channels = math.ceil(image_size / 2), 32
        blocks: list[nn.Module] = []
        for expansion, kernel, stride, c, repeats in _STAGES:
            cout = divisible(c * width)
            for i in range(repeats):
                s = stride if i == 0 else 1
                blocks.append(MBConvBlock(channels, cout, expansion, kernel, s, size))
                size, channels = math.ceil(size / s), cout
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = SameConv2d(channels, 1280, 1, 1, size)
        self._bn1 = nn.BatchNorm2d(1280, eps=_EPS)
        self.head_act = nn.ReLU6(inplace=True)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self._blocks(self.stem_act(self._bn0(self._conv_stem(x))))
        x = self.pool(self.head_act(self._bn1(self._conv_head(x))))
        return self._fc(self._dropout(x))
