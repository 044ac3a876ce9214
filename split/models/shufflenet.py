"""ShuffleNetV2 (x1.0 at width 1.0), laid out like torchvision's (``conv1``, ``stage2`` … ``stage4``, ``conv5``).

A unit of stride 1 splits its channels in two (``chunk``): one half passes untouched, the other goes through a
1x1 -> depthwise 3x3 -> 1x1 branch; a unit of stride 2 feeds its whole input to two branches. The halves are
concatenated and the channels shuffled (two groups interleaved), so information crosses the halves.

What split discovery (:mod:`split.graph`) makes of it, at 224 pixels (73 valid boundaries): every unit's end,
after its shuffle, is a valid split point (``stage2.0`` … ``stage4.3``; ``stage2``, ``stage3``, ``stage4`` alias
the last unit's), as are ``conv1``, ``maxpool``, ``conv5`` and ``pool``: one tensor crosses there. So are the
three steps of each shuffle (fx names ``cat``, ``unflatten``, ``transpose``, numbered per unit): one tensor
crosses, but the ``unflatten`` and ``transpose`` ones are five-dimensional (``2 x 58 x 28 x 28``), pointless cuts
halfway through a reshape that no exit head can read. Refused, with the reason in the error: anything inside a
stride-1 unit after its ``chunk`` (the untouched half crosses beside the branch's tensor: 2 tensors), anything
inside a stride-2 unit (its input crosses beside ``branch1``'s output), and the ``chunk`` itself (the one value
crossing is a tuple, not a tensor). The defaults cut at stage ends. No published weights are wired in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from split.models.common import conv_bn
from split.models.imagenet import imagenet_preprocessing

__all__ = ["ShuffleNetV2", "ShuffleUnit", "channel_shuffle"]

_REPEATS = (4, 8, 4)
_CHANNELS = (116, 232, 464)  # x1.0


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave ``groups`` equal channel groups (``[a0 a1 b0 b1]`` -> ``[a0 b0 a1 b1]`` for two)."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's building block (``branch1`` only when strided)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        half = cout // 2
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin, act=None), conv_bn(cin, half, 1))
        else:
            self.branch1 = nn.Sequential()
        first = cin if stride > 1 else half
        self.branch2 = nn.Sequential(
            conv_bn(first, half, 1), conv_bn(half, half, 3, stride, groups=half, act=None), conv_bn(half, half, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


def _channels(c: int, width: float) -> int:
    """A stage's channels at ``width``: a multiple of 4, so both halves stay even."""
    return max(8, round(c * width / 4) * 4)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 (2.3 M parameters at width 1.0 and 1000 classes).

    Example:
        >>> ShuffleNetV2(3, 1000, 1.0, 224)(torch.zeros(1, 3, 224, 224)).shape   # doctest: +SKIP
        torch.Size([1, 1000])
    """

    split_points = ("maxpool", "stage2", "stage3", "stage4")
    exits = ("maxpool", "stage2")
    preprocessing: dict[str, Any] = imagenet_preprocessing()

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0, image_size: int = 224) -> None:
        super().__init__()
        del image_size  # fully convolutional up to the global pooling
        self.conv1 = conv_bn(in_channels, 24, 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = 24
        stages = []
        for repeats, c in zip(_REPEATS, _CHANNELS, strict=True):
            cout = _channels(c, width)
            stages.append(
                nn.Sequential(
                    *(ShuffleUnit(channels if i == 0 else cout, cout, 2 if i == 0 else 1) for i in range(repeats))
                )
            )
            channels = cout
        self.stage2, self.stage3, self.stage4 = stages
        last = 1024 if width <= 1.5 else 2048
        self.conv5 = conv_bn(channels, last, 1)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage4(self.stage3(self.stage2(self.maxpool(self.conv1(x)))))
        return self.fc(self.pool(self.conv5(x)))
