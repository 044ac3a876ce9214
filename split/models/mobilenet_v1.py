"""MobileNetV1 for ImageNet-sized inputs: a strided stem and 13 depthwise separable convolutions.

``features.0`` is the stem, ``features.1`` … ``features.13`` the separable blocks (``dw``: depthwise 3x3, ``pw``:
pointwise 1x1, each batch-normed with ReLU), then ``pool`` and ``classifier``. No published weights are wired in.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from split.models.common import conv_bn, divisible
from split.models.imagenet import imagenet_preprocessing

__all__ = ["MobileNetV1", "SeparableBlock"]

# (output channels, stride) of the 13 separable blocks, the paper's table 1.
_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    *((512, 1),) * 5,
    (1024, 2),
    (1024, 1),
)


class SeparableBlock(nn.Module):
    """Depthwise 3x3 (``stride``) then pointwise 1x1, each followed by batch norm and ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.dw = conv_bn(cin, cin, 3, stride, groups=cin)
        self.pw = conv_bn(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw(self.dw(x))


class MobileNetV1(nn.Module):
    """MobileNetV1 (4.2 M parameters at width 1.0 and 1000 classes).

    Example:
        >>> net = MobileNetV1(3, 1000, width=1.0, image_size=224)
        >>> net(torch.zeros(1, 3, 224, 224)).shape        # doctest: +SKIP
        torch.Size([1, 1000])
    """

    split_points = ("features.3", "features.5", "features.11")
    exits = ("features.3", "features.5")
    preprocessing: dict[str, Any] = imagenet_preprocessing()

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0, image_size: int = 224) -> None:
        super().__init__()
        del image_size  # fully convolutional up to the global pooling
        channels = divisible(32 * width)
        layers: list[nn.Module] = [conv_bn(in_channels, channels, 3, 2)]
        for c, stride in _BLOCKS:
            layers.append(SeparableBlock(channels, divisible(c * width), stride))
            channels = divisible(c * width)
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(channels, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)))
