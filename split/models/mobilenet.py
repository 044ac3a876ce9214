"""MobileNetV2-style network (inverted residuals, linear bottlenecks) with a width multiplier.

Written here because there is no torchvision on the target machines. Sized for small inputs (16x16 digits,
28x28 Fashion-MNIST): the strides of the stage table adapt to the input so that the last feature map is a few
pixels across.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["InvertedResidual", "mobilenetv2"]

# (expansion t, output channels c, repeats n, stride s), as in the MobileNetV2 paper, trimmed for small images.
_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 2, 1),
    (6, 96, 1, 1),
)


def _divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10% (the paper's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> project (1x1, linear); a skip connection when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = [] if expansion == 1 else [_conv_bn(cin, hidden, 1)]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.use_skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return x + y if self.use_skip else y


def mobilenetv2(in_channels: int, num_classes: int, width: float = 1.0) -> nn.Sequential:
    """A MobileNetV2-style chain of blocks: stem, inverted residuals, 1x1 head, classifier.

    Args:
        in_channels: channels of the input image (1 for grayscale).
        num_classes: size of the output layer.
        width: the width multiplier applied to every layer's channels.

    Returns:
        An ``nn.Sequential`` whose children are the blocks; every child boundary is a candidate split point.

    Example:
        >>> net = mobilenetv2(1, 10, width=0.5)
        >>> net(torch.zeros(2, 1, 16, 16)).shape        # doctest: +SKIP
        torch.Size([2, 10])
    """
    channels = _divisible(32 * width)
    blocks: list[nn.Module] = [_conv_bn(in_channels, channels, 3, stride=1)]
    for expansion, c, repeats, stride in _STAGES:
        cout = _divisible(c * width)
        for i in range(repeats):
            blocks.append(InvertedResidual(channels, cout, stride if i == 0 else 1, expansion))
            channels = cout
    head = _divisible(256 * max(width, 1.0))
    blocks.append(_conv_bn(channels, head, 1))
    blocks.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(head, num_classes)))
    return nn.Sequential(*blocks)
