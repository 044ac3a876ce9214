"""Real ImageNet photos for tests and benchmarks, and a reference preprocessing for them.

The photos are foolbox's 20 ImageNet samples (``pip install 'edgesplit[weights]'``): 512x512 RGB JPEGs named
``imagenet_{i:02d}_{label}.jpg``, the label being the ImageNet class index. foolbox is only read as files, never
imported (it would import its own framework stack).

Example:
    >>> photos = imagenet_photos()                                   # doctest: +SKIP
    >>> x = preprocess_photos([p for p, _ in photos], ImageNetMobileNetV2.preprocessing)  # doctest: +SKIP
    >>> x.shape                                                      # doctest: +SKIP
    (20, 3, 224, 224)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PHOTOS_PACKAGE", "imagenet_photos", "preprocess_photo", "preprocess_photos"]

PHOTOS_PACKAGE = "foolbox"
_PREFIX = "imagenet_"


def _photo_dir() -> Path:
    spec = importlib.util.find_spec(PHOTOS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the ImageNet sample photos come with the {PHOTOS_PACKAGE!r} package, which is not installed: "
            "pip install 'edgesplit[weights]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def imagenet_photos() -> list[tuple[Path, int]]:
    """The sample photos and their ImageNet class indices, in file-name order."""
    folder = _photo_dir()
    found = sorted(folder.glob(f"{_PREFIX}*.jpg"))
    if not found:
        raise FileNotFoundError(f"no {_PREFIX}*.jpg photos in {str(folder)!r}; reinstall {PHOTOS_PACKAGE!r}")
    return [(path, int(path.stem.rsplit("_", 1)[1])) for path in found]


def preprocess_photo(path: Path, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """One photo as a ``[3, crop, crop]`` float32 model input: RGB, the shorter side resized to ``resize``
    (bilinear), the centre ``crop`` square, then ``(value * scale - mean) / std`` per channel."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    size, crop = int(preprocessing["resize"]), int(preprocessing["crop"])
    w, h = rgb.size
    ratio = size / min(w, h)
    resized = rgb.resize((max(size, round(w * ratio)), max(size, round(h * ratio))), Image.Resampling.BILINEAR)
    left, top = (resized.width - crop) // 2, (resized.height - crop) // 2
    pixels = np.asarray(resized.crop((left, top, left + crop, top + crop)), dtype=np.float32)
    mean = np.asarray(preprocessing["mean"], dtype=np.float32)
    std = np.asarray(preprocessing["std"], dtype=np.float32)
    scaled = pixels * np.float32(preprocessing["scale"])
    return np.ascontiguousarray(((scaled - mean) / std).transpose(2, 0, 1), dtype=np.float32)


def preprocess_photos(paths: Sequence[Path], preprocessing: Mapping[str, Any]) -> np.ndarray:
    """A ``[N, 3, crop, crop]`` float32 batch of :func:`preprocess_photo`."""
    return np.stack([preprocess_photo(p, preprocessing) for p in paths])
