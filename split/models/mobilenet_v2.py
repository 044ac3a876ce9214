"""MobileNetV2 for ImageNet-sized inputs, laid out like torchvision's so that its published weights load strictly.

``features.0`` is the strided stem, ``features.1`` … ``features.17`` the inverted residuals (each a ``conv``
sequence: expand 1x1, depthwise 3x3, linear 1x1 projection and its batch norm), ``features.18`` the 1x1 head to
1280 channels, then ``pool`` and ``classifier`` (dropout, linear). Written here: there is no torchvision.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from split.models.common import conv_bn, divisible
from split.models.imagenet import imagenet_preprocessing

__all__ = ["ImageNetMobileNetV2", "MobileNetV2Block"]

# (expansion t, output channels c, repeats n, stride s), the paper's table 2.
_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2Block(nn.Module):
    """Inverted residual: [expand 1x1] -> depthwise 3x3 -> project 1x1 (linear); a skip when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = [] if expansion == 1 else [conv_bn(cin, hidden, 1, act=nn.ReLU6)]
        layers += [
            conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class ImageNetMobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0: 3.5 M parameters, torchvision's ImageNet weights load with ``strict=True``).

    Example:
        >>> net = ImageNetMobileNetV2(3, 1000, width=1.0, image_size=224)
        >>> net(torch.zeros(1, 3, 224, 224)).shape        # doctest: +SKIP
        torch.Size([1, 1000])
    """

    split_points = ("features.3", "features.6", "features.13", "features.17")
    exits = ("features.3", "features.6")
    preprocessing: dict[str, Any] = imagenet_preprocessing()
    block_names = tuple(f"features.{i}" for i in range(2 + sum(n for _, _, n, _ in _STAGES)))
    """The blocks a transfer can fine-tune (:mod:`split.finetune`), in order: the stem, the inverted residuals,
    the 1x1 head ``features.18``."""

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0, image_size: int = 224) -> None:
        super().__init__()
        del image_size  # fully convolutional up to the global pooling
        channels = divisible(32 * width)
        layers: list[nn.Module] = [conv_bn(in_channels, channels, 3, 2, act=nn.ReLU6)]
        for expansion, c, repeats, stride in _STAGES:
            cout = divisible(c * width)
            for i in range(repeats):
                layers.append(MobileNetV2Block(channels, cout, stride if i == 0 else 1, expansion))
                channels = cout
        last = divisible(1280 * max(1.0, width))
        layers.append(conv_bn(channels, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)))
