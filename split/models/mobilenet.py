"""MobileNetV2-style network (inverted residuals, linear bottlenecks) with a width multiplier.

Written here because there is no torchvision on the target machines. Sized for small inputs (16x16 digits,
28x28 Fashion-MNIST): inputs of 24 pixels and more get a strided stem, so the last feature map is a few pixels
across either way.
"""

from __future__ import annotations

from torch import Tensor, nn

from split.models.common import conv_bn, divisible

__all__ = ["InvertedResidual", "MobileNetV2"]

# (expansion t, output channels c, repeats n, stride s), as in the MobileNetV2 paper, trimmed for small images.
_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 2, 1),
    (6, 96, 1, 1),
)


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> project (1x1, linear); a skip connection when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = [] if expansion == 1 else [conv_bn(cin, hidden, 1, act=nn.ReLU6)]
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), conv_bn(hidden, cout, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.use_skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return x + y if self.use_skip else y


class MobileNetV2(nn.Module):
    """stem -> blocks.0 … blocks.8 (inverted residuals) -> head (1x1) -> classifier.

    Example:
        >>> net = MobileNetV2(1, 10, width=0.5, image_size=16)
        >>> net(torch.zeros(2, 1, 16, 16)).shape        # doctest: +SKIP
        torch.Size([2, 10])
    """

    split_points = ("blocks.0", "blocks.2", "blocks.5")
    exits = ("blocks.0", "blocks.2", "blocks.5")

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0, image_size: int = 28) -> None:
        super().__init__()
        channels = divisible(32 * width)
        self.stem = conv_bn(in_channels, channels, 3, stride=2 if image_size >= 24 else 1, act=nn.ReLU6)
        blocks: list[nn.Module] = []
        for expansion, c, repeats, stride in _STAGES:
            cout = divisible(c * width)
            for i in range(repeats):
                blocks.append(InvertedResidual(channels, cout, stride if i == 0 else 1, expansion))
                channels = cout
        self.blocks = nn.Sequential(*blocks)
        head = divisible(256 * max(width, 1.0))
        self.head = conv_bn(channels, head, 1, act=nn.ReLU6)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(head, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.head(self.blocks(self.stem(x))))
