"""Image corruptions in the style of ImageNet-C (Hendrycks & Dietterich, 2019), five severities each, for 28x28
grayscale images in [0, 1]: gaussian noise, gaussian blur, brightness, contrast, JPEG artefacts (Pillow).

ImageNet-C's parameters are for 224-px colour photos; these are scaled to 28 px (blur widths) and grayscale
(brightness shifts the value, as ImageNet-C shifts HSV's V). Each function takes ``(N, H, W)`` floats in [0, 1], a
severity 1..5 and a random source, and returns the corrupted images, clipped to [0, 1].

Example:
    >>> corrupt("contrast", np.full((1, 28, 28), 0.5), 3, np.random.default_rng(0)).shape
    (1, 28, 28)
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt"]

SEVERITIES = (1, 2, 3, 4, 5)

_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)  # ImageNet-C's gaussian_noise sigmas
_BLUR = (0.5, 0.75, 1.0, 1.25, 1.5)  # ImageNet-C's gaussian_blur (1, 2, 3, 4, 6 px at 224) at 28 px, floored
_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # ImageNet-C's
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # ImageNet-C's
_JPEG = (25, 18, 15, 10, 7)  # ImageNet-C's qualities


def _noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(0.0, _NOISE[s - 1], x.shape)


def _kernel(sigma: float) -> np.ndarray:
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return k / k.sum()


def _blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    k = _kernel(_BLUR[s - 1])
    r = len(k) // 2
    out = np.pad(x, ((0, 0), (r, r), (r, r)), mode="reflect")
    out = sum(k[i] * out[:, i : i + x.shape[1], :] for i in range(len(k)))  # rows
    return sum(k[i] * out[:, :, i : i + x.shape[2]] for i in range(len(k)))


def _brightness(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    return x + _BRIGHTNESS[s - 1]


def _contrast(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) * _CONTRAST[s - 1] + mean


def _jpeg(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    out = np.empty_like(x)
    for i, image in enumerate(x):
        buf = io.BytesIO()
        Image.fromarray((image * 255).round().astype(np.uint8)).save(buf, format="JPEG", quality=_JPEG[s - 1])
        out[i] = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float64) / 255
    return out


CORRUPTIONS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": _noise,
    "gaussian_blur": _blur,
    "brightness": _brightness,
    "contrast": _contrast,
    "jpeg": _jpeg,
}


def corrupt(name: str, x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``x`` (``(N, H, W)`` in [0, 1]) with corruption ``name`` at ``severity`` (1..5), clipped to [0, 1]."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; corruptions: {list(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    return np.clip(CORRUPTIONS[name](np.asarray(x, dtype=np.float64), severity, rng), 0.0, 1.0)
