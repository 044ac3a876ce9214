"""MobileNetV3 Small and Large, laid out like torchvision's (``features.N.block.M``, ``fc1``/``fc2`` in the
squeeze-excitation, ``classifier.0``/``classifier.3``), so a torchvision state_dict of the same width would load.

Inverted residuals with optional squeeze-excitation (a hard-sigmoid gate) and ReLU or hard-swish; batch norm
eps 1e-3. No published weights are wired in.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor, nn

from split.models.common import conv_bn, divisible
from split.models.imagenet import imagenet_preprocessing

__all__ = ["MobileNetV3Block", "MobileNetV3Large", "MobileNetV3Small", "SqueezeExcitation"]

_EPS = 1e-3


class _Setting(NamedTuple):
    kernel: int
    expanded: int
    out: int
    se: bool
    hswish: bool
    stride: int


_S = _Setting
# The paper's tables 1 and 2 (input channels follow from the previous row; the stem has 16).
_LARGE = (
    _S(3, 16, 16, False, False, 1),
    _S(3, 64, 24, False, False, 2),
    _S(3, 72, 24, False, False, 1),
    _S(5, 72, 40, True, False, 2),
    _S(5, 120, 40, True, False, 1),
    _S(5, 120, 40, True, False, 1),
    _S(3, 240, 80, False, True, 2),
    _S(3, 200, 80, False, True, 1),
    _S(3, 184, 80, False, True, 1),
    _S(3, 184, 80, False, True, 1),
    _S(3, 480, 112, True, True, 1),
    _S(3, 672, 112, True, True, 1),
    _S(5, 672, 160, True, True, 2),
    _S(5, 960, 160, True, True, 1),
    _S(5, 960, 160, True, True, 1),
)
_SMALL = (
    _S(3, 16, 16, True, False, 2),
    _S(3, 72, 24, False, False, 2),
    _S(3, 88, 24, False, False, 1),
    _S(5, 96, 40, True, True, 2),
    _S(5, 240, 40, True, True, 1),
    _S(5, 240, 40, True, True, 1),
    _S(5, 120, 48, True, True, 1),
    _S(5, 144, 48, True, True, 1),
    _S(5, 288, 96, True, True, 2),
    _S(5, 576, 96, True, True, 1),
    _S(5, 576, 96, True, True, 1),
)


class SqueezeExcitation(nn.Module):
    """Channel gate: global average pool -> 1x1 (``squeeze``) -> ReLU -> 1x1 -> hard-sigmoid, times the input."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU(inplace=True)
        self.scale_activation = nn.Hardsigmoid(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))


class MobileNetV3Block(nn.Module):
    """[expand 1x1] -> depthwise kxk -> [squeeze-excitation] -> project 1x1 (linear); a skip when shapes allow."""

    def __init__(self, cin: int, s: _Setting, width: float) -> None:
        super().__init__()
        act = nn.Hardswish if s.hswish else nn.ReLU
        hidden, cout = divisible(s.expanded * width), divisible(s.out * width)
        layers: list[nn.Module] = [] if hidden == cin else [conv_bn(cin, hidden, 1, act=act, eps=_EPS)]
        layers.append(conv_bn(hidden, hidden, s.kernel, s.stride, groups=hidden, act=act, eps=_EPS))
        if s.se:
            layers.append(SqueezeExcitation(hidden, divisible(hidden // 4)))
        layers.append(conv_bn(hidden, cout, 1, act=None, eps=_EPS))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = s.stride == 1 and cin == cout
        self.out_channels = cout

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.use_res_connect else self.block(x)


class _MobileNetV3(nn.Module):
    """stem (``features.0``) -> blocks -> 1x1 to six times the last block's channels -> pool -> classifier."""

    def __init__(
        self, in_channels: int, num_classes: int, width: float, settings: tuple[_Setting, ...], last: int
    ) -> None:
        super().__init__()
        channels = divisible(16 * width)
        layers: list[nn.Module] = [conv_bn(in_channels, channels, 3, 2, act=nn.Hardswish, eps=_EPS)]
        for s in settings:
            block = MobileNetV3Block(channels, s, width)
            layers.append(block)
            channels = block.out_channels
        layers.append(conv_bn(channels, 6 * channels, 1, act=nn.Hardswish, eps=_EPS))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        hidden = divisible(last * width)
        self.classifier = nn.Sequential(
            nn.Linear(6 * channels, hidden), nn.Hardswish(inplace=True), nn.Dropout(0.2), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)))


class MobileNetV3Large(_MobileNetV3):
    """MobileNetV3-Large (5.5 M parameters at width 1.0 and 1000 classes).

    Example:
        >>> MobileNetV3Large(3, 1000, 1.0, 224)(torch.zeros(1, 3, 224, 224)).shape   # doctest: +SKIP
        torch.Size([1, 1000])
    """

    split_points = ("features.3", "features.6", "features.12", "features.15")
    exits = ("features.3", "features.6")
    preprocessing: dict[str, Any] = imagenet_preprocessing()

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0, image_size: int = 224) -> None:
        del image_size  # fully convolutional up to the global pooling
        super().__init__(in_channels, num_classes, width, _LARGE, 1280)


class MobileNetV3Small(_MobileNetV3):
    """MobileNetV3-Small (2.5 M parameters at width 1.0 and 1000 classes).

    Example:
        >>> MobileNetV3Small(3, 1000, 1.0, 224)(torch.zeros(1, 3, 224, 224)).shape   # doctest: +SKIP
        torch.Size([1, 1000])
    """

    split_points = ("features.1", "features.3", "features.8", "features.11")
    exits = ("features.1", "features.3")
    preprocessing: dict[str, Any] = imagenet_preprocessing()

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0, image_size: int = 224) -> None:
        del image_size  # fully convolutional up to the global pooling
        super().__init__(in_channels, num_classes, width, _SMALL, 1024)
