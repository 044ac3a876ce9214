"""Model families written here (there is no torchvision).

Each family is an ``nn.Module`` class taking ``(in_channels, num_classes, width, image_size)`` and naming its
default ``split_points`` and ``exits`` (boundaries of its traced graph, see :mod:`split.graph`).
"""

from __future__ import annotations

from torch import nn

from split.models.mobilenet import MobileNetV2
from split.models.resnet import ResNet
from split.models.squeezenet import SqueezeNet
from split.models.vgg import VGG

__all__ = ["FAMILIES", "VGG", "MobileNetV2", "ResNet", "SqueezeNet", "build"]

FAMILIES: dict[str, type[nn.Module]] = {
    "mobilenetv2": MobileNetV2,
    "resnet": ResNet,
    "squeezenet": SqueezeNet,
    "vgg": VGG,
}


def build(family: str, in_channels: int, num_classes: int, width: float, image_size: int) -> nn.Module:
    """Build a model of ``family``; ``ValueError`` listing the known families otherwise."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known families: {sorted(FAMILIES)}")
    return FAMILIES[family](in_channels, num_classes, width, image_size)
