"""SqueezeNet-style network: fire modules (1x1 squeeze, then 1x1 and 3x3 expands concatenated)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from split.models.common import conv_bn, divisible

__all__ = ["Fire", "SqueezeNet"]


class Fire(nn.Module):
    """Squeeze to ``s`` channels, expand to ``e`` (1x1) + ``e`` (3x3) channels, concatenated."""

    def __init__(self, cin: int, s: int, e: int) -> None:
        super().__init__()
        self.squeeze = conv_bn(cin, s, 1)
        self.expand1 = conv_bn(s, e, 1)
        self.expand3 = conv_bn(s, e, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.squeeze(x)
        return torch.cat([self.expand1(x), self.expand3(x)], dim=1)


class SqueezeNet(nn.Module):
    """stem -> fire1 -> fire2 -> pool1 -> fire3 -> fire4 -> pool2 -> fire5 -> classifier (1x1 conv, pool)."""

    split_points = ("fire2", "pool1", "pool2")
    exits = ("fire2", "pool1", "pool2")

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0, image_size: int = 28) -> None:
        super().__init__()
        c = [divisible(v * width) for v in (32, 16, 64, 32, 128, 48, 192)]
        self.stem = conv_bn(in_channels, c[0], 3, stride=2 if image_size >= 24 else 1)
        self.fire1 = Fire(c[0], c[1], c[2])
        self.fire2 = Fire(2 * c[2], c[1], c[2])
        self.pool1 = nn.MaxPool2d(2, ceil_mode=True)
        self.fire3 = Fire(2 * c[2], c[3], c[4])
        self.fire4 = Fire(2 * c[4], c[3], c[4])
        self.pool2 = nn.MaxPool2d(2, ceil_mode=True)
        self.fire5 = Fire(2 * c[4], c[5], c[6])
        self.classifier = nn.Sequential(
            nn.Dropout(0.2), nn.Conv2d(2 * c[6], num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.fire2(self.fire1(self.stem(x))))
        return self.classifier(self.fire5(self.pool2(self.fire4(self.fire3(x)))))
