"""VGG-style network: three stages of 3x3 convolutions, then a large fully connected head (AlexNet and VGG's shape,
the models split computing was first measured on).

Its cloud tail from ``stage3`` is the dense head alone: most of the parameters and, at batch 1, a stream of weights
through memory per sample. That is the tail dynamic batching pays off on, and the one ``edgesplit bench cloud``
serves by default.
"""

from __future__ import annotations

from torch import Tensor, nn

from split.models.common import conv_bn, divisible

__all__ = ["VGG"]


class VGG(nn.Module):
    """stage1 (pool) -> stage2 (pool) -> stage3 -> head (flatten, fc, fc, classifier); ``width`` scales channels
    and the head's hidden size (4096 at width 1)."""

    split_points = ("stage1", "stage2", "stage3")
    exits = ("stage1", "stage2")

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0, image_size: int = 28) -> None:
        super().__init__()
        c1, c2, c3 = (divisible(c * width) for c in (32, 64, 128))
        hidden = divisible(4096 * width)
        self.stage1 = nn.Sequential(conv_bn(in_channels, c1, 3), conv_bn(c1, c1, 3), nn.MaxPool2d(2))
        self.stage2 = nn.Sequential(conv_bn(c1, c2, 3), conv_bn(c2, c2, 3), nn.MaxPool2d(2))
        self.stage3 = nn.Sequential(conv_bn(c2, c3, 3), conv_bn(c3, c3, 3))
        side = image_size // 4
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c3 * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stage3(self.stage2(self.stage1(x))))
