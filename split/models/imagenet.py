"""Preprocessing descriptions of the ImageNet-style 224-pixel families.

Each family's ``preprocessing`` class attribute is a plain dict with exactly the keys ``resize`` (the shorter side
is resized to it, pixels), ``crop`` (the centre square then taken, pixels), ``scale`` (applied to the 0..255 RGB
values first), ``mean`` and ``std`` (per RGB channel, after scaling): ``input = (value * scale - mean) / std``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["imagenet_preprocessing", "tf_lite_preprocessing"]


def _preprocessing(mean: list[float], std: list[float]) -> dict[str, Any]:
    return {"resize": 256, "crop": 224, "mean": mean, "std": std, "scale": 1 / 255}


def imagenet_preprocessing() -> dict[str, Any]:
    """torchvision's ImageNet statistics on RGB in [0, 1] (a fresh dict)."""
    return _preprocessing([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def tf_lite_preprocessing() -> dict[str, Any]:
    """EfficientNet-Lite's ``(x - 127) / 128`` on 0..255 values, written as mean/std on [0, 1] (a fresh dict)."""
    return _preprocessing([127 / 255] * 3, [128 / 255] * 3)
