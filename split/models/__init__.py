"""Model families written here (there is no torchvision): each returns an ``nn.Sequential`` of blocks."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from split.models.mobilenet import mobilenetv2

__all__ = ["FAMILIES", "build"]

FAMILIES: dict[str, Callable[[int, int, float], nn.Sequential]] = {"mobilenetv2": mobilenetv2}


def build(family: str, in_channels: int, num_classes: int, width: float) -> nn.Sequential:
    """Build a model of ``family``; ``ValueError`` listing the known families otherwise."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known families: {sorted(FAMILIES)}")
    return FAMILIES[family](in_channels, num_classes, width)
