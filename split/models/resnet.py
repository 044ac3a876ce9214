"""ResNet-style network: a stem and three stages of basic residual blocks, with a width multiplier."""

from __future__ import annotations

from torch import Tensor, nn

from split.models.common import conv_bn, divisible

__all__ = ["BasicBlock", "ResNet"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus the input (projected by a 1x1 convolution when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, act=None)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride, act=None)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet(nn.Module):
    """stem -> layer1 -> layer2 (stride 2) -> layer3 (stride 2) -> pool -> fc; ``depth`` blocks per stage."""

    split_points = ("layer1", "layer2", "layer3")
    exits = ("layer1", "layer2", "layer3")

    def __init__(
        self, in_channels: int, num_classes: int, width: float = 1.0, image_size: int = 28, depth: int = 1
    ) -> None:
        super().__init__()
        c1, c2, c3 = (divisible(c * width) for c in (32, 64, 128))
        self.stem = conv_bn(in_channels, c1, 3)
        self.layer1 = self._stage(c1, c1, depth, 1)
        self.layer2 = self._stage(c1, c2, depth, 2)
        self.layer3 = self._stage(c2, c3, depth, 2)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c3, num_classes)

    @staticmethod
    def _stage(cin: int, cout: int, depth: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            *(BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(depth))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layer3(self.layer2(self.layer1(self.stem(x))))))
