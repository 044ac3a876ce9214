"""Model families written here (there is no torchvision).

Each family is an ``nn.Module`` class taking ``(in_channels, num_classes, width, image_size)`` and naming its
default ``split_points`` and ``exits`` (boundaries of its traced graph, see :mod:`split.graph`). The first four
are sized for small images (digits, Fashion-MNIST); :data:`IMAGENET_FAMILIES` for 224-pixel photos, two of them
with published ImageNet weights (:mod:`split.pretrained`).
"""

from __future__ import annotations

from torch import nn

from split.models.efficientnet import EfficientNetLite0
from split.models.mobilenet import MobileNetV2
from split.models.mobilenet_v1 import MobileNetV1
from split.models.mobilenet_v2 import ImageNetMobileNetV2
from split.models.mobilenet_v3 import MobileNetV3Large, MobileNetV3Small
from split.models.resnet import ResNet
from split.models.shufflenet import ShuffleNetV2
from split.models.squeezenet import SqueezeNet
from split.models.vgg import VGG

__all__ = [
    "FAMILIES",
    "IMAGENET_FAMILIES",
    "VGG",
    "EfficientNetLite0",
    "ImageNetMobileNetV2",
    "MobileNetV1",
    "MobileNetV2",
    "MobileNetV3Large",
    "MobileNetV3Small",
    "ResNet",
    "ShuffleNetV2",
    "SqueezeNet",
    "build",
]

IMAGENET_FAMILIES: dict[str, type[nn.Module]] = {
    "efficientnet_lite0": EfficientNetLite0,
    "mobilenet_v1": MobileNetV1,
    "mobilenet_v2": ImageNetMobileNetV2,
    "mobilenet_v3_large": MobileNetV3Large,
    "mobilenet_v3_small": MobileNetV3Small,
    "shufflenet_v2": ShuffleNetV2,
}
"""The ImageNet-style families, built for 224-pixel RGB inputs (each names its ``preprocessing``)."""

FAMILIES: dict[str, type[nn.Module]] = {
    "mobilenetv2": MobileNetV2,
    "resnet": ResNet,
    "squeezenet": SqueezeNet,
    "vgg": VGG,
    **IMAGENET_FAMILIES,
}


def build(family: str, in_channels: int, num_classes: int, width: float, image_size: int) -> nn.Module:
    """Build a model of ``family``; ``ValueError`` listing the known families otherwise."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known families: {sorted(FAMILIES)}")
    return FAMILIES[family](in_channels, num_classes, width, image_size)
