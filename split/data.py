"""Datasets with fixed, disjoint train / calibration / test splits (calibration is carved out of train)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Dataset", "load_dataset", "load_digits"]


@dataclass(frozen=True)
class Dataset:
    """Model-ready float32 arrays ``(N, C, H, W)`` and int64 labels for the three splits."""

    name: str
    classes: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_cal: np.ndarray
    y_cal: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample."""
        return tuple(self.x_train.shape[1:])


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``(N, H, W)`` images to ``size x size`` (half-pixel centres, as ONNX/PyTorch)."""
    _n, h, w = images.shape
    ys = np.clip((np.arange(size) + 0.5) * h / size - 0.5, 0, h - 1)
    xs = np.clip((np.arange(size) + 0.5) * w / size - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[None, :, None], (xs - x0)[None, None, :]
    top = images[:, y0][:, :, x0] * (1 - wx) + images[:, y0][:, :, x1] * wx
    bottom = images[:, y1][:, :, x0] * (1 - wx) + images[:, y1][:, :, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def _split_indices(n: int, test: float, cal: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_cal = round(n * test), round(n * cal)
    return order[n_test + n_cal :], order[n_test : n_test + n_cal], order[:n_test]


def load_digits(image_size: int = 16, seed: int = 0, test: float = 0.2, cal: float = 0.15) -> Dataset:
    """scikit-learn's 8x8 digits (embedded, no download), resized to ``image_size`` and standardised.

    The splits are fixed by ``seed``: ``test`` and ``cal`` are fractions of the whole set; calibration samples
    are never used for training.
    """
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    images = _resize(digits.images.astype(np.float32) / 16.0, image_size)
    train, calib, test_idx = _split_indices(len(images), test, cal, seed)
    mean, std = float(images[train].mean()), float(images[train].std())
    x = ((images - mean) / std)[:, None].astype(np.float32)
    y = digits.target.astype(np.int64)
    prep = {
        "source": "sklearn.datasets.load_digits",
        "source_shape": [8, 8],
        "scale": 1 / 16,
        "resize": [image_size, image_size],
        "interpolation": "bilinear",
        "mean": mean,
        "std": std,
    }
    return Dataset(
        "digits",
        tuple(str(c) for c in range(10)),
        x[train],
        y[train],
        x[calib],
        y[calib],
        x[test_idx],
        y[test_idx],
        prep,
    )


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Load a dataset by name; ``ValueError`` listing the known names otherwise."""
    loaders = {"digits": load_digits}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {sorted(loaders)}")
    return loaders[name](**kwargs)
