"""BranchyNet-style early-exit classifiers attached at segment boundaries."""

from __future__ import annotations

from torch import nn

__all__ = ["exit_head"]


def exit_head(channels: int, spatial: int, num_classes: int, hidden: int = 32) -> nn.Sequential:
    """A small classifier for a ``channels x spatial x spatial`` feature map.

    One 3x3 convolution (strided while the map is larger than 4 pixels, to keep it cheap), batch norm, ReLU,
    global average pooling and a linear layer: the shape BranchyNet used, sized for the device.
    """
    stride = 2 if spatial > 4 else 1
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 3, stride, 1, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(hidden, num_classes),
    )
