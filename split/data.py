"""Datasets with fixed, disjoint train / calibration / test splits (calibration is carved out of train).

The built-in sets (scikit-learn's digits, Fashion-MNIST's IDX files) are arrays in memory; a user's image folder
or ``.npz`` (:mod:`split.userdata`) gives lazy :class:`~split.samples.ImageSamples`. Consumers index or slice a
split (``x[a:b]``, ``x[rows]``), which both support.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from split.samples import Samples

__all__ = ["Dataset", "load_dataset", "load_digits", "load_fashion_mnist", "read_idx"]


@dataclass(frozen=True)
class Dataset:
    """Model-ready float32 samples ``(N, C, H, W)`` (arrays or lazy image samples) and int64 labels for the
    three splits.

    ``preprocessing`` is the manifest's record (for an image set, :meth:`Preprocessing.to_dict`, which the
    bundle's ``preprocess.onnx`` is made from); ``source`` says where the data came from (not in the manifest).
    A ``fingerprint`` there (of a user's files) enters the trained models' cache keys (:attr:`cache_key`).
    """

    name: str
    classes: tuple[str, ...]
    x_train: Samples
    y_train: np.ndarray
    x_cal: Samples
    y_cal: np.ndarray
    x_test: Samples
    y_test: np.ndarray
    preprocessing: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "cal", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise ValueError(f"dataset {self.name!r}: {len(x)} {split} samples but {len(y)} labels")
        if len(self.classes) < 2:
            raise ValueError(f"dataset {self.name!r}: needs two or more classes, got {list(self.classes)}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample."""
        return tuple(self.x_train.shape[1:])

    @property
    def cache_key(self) -> str:
        """What identifies the data in a cache key: the name, and the source's fingerprint when it has one."""
        fingerprint = self.source.get("fingerprint")
        return f"{self.name}-{fingerprint}" if fingerprint else self.name


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


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}  # fmt: skip


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally ``.gz``): the big-endian header says the element type and the shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic {data[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_TYPES[data[2]]), data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {body.size} values")
    return body.reshape(shape).astype(dtype.newbyteorder("="))


_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _find_idx(data_dir: Path, stem: str) -> Path:
    for candidate in (data_dir / f"{stem}.gz", data_dir / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{data_dir}: no {stem}[.gz]; a data directory holds the four standard IDX files "
        f"{sorted(IDX_FILES.values())} (Debian: apt-get install dataset-fashion-mnist)"
    )


def load_fashion_mnist(data_dir: str | Path | None = None, seed: int = 0, cal: int = 5000) -> Dataset:
    """Fashion-MNIST (28x28) from IDX files: the official 10k test set; ``cal`` samples carved out of train.

    Any directory with the four standard file names works (``data_dir``); only the Debian package's
    (:data:`FASHION_MNIST_DIR`, the default) is Fashion-MNIST and has its class names. Another directory's
    classes are named by its labels (``"0"``, ``"1"``, …) unless a ``classes.txt`` beside the files names them,
    one per line; its dataset is named after the directory, and its files' fingerprint keys the trained models.
    """
    root = Path(data_dir) if data_dir else FASHION_MNIST_DIR
    paths = {key: _find_idx(root, stem) for key, stem in IDX_FILES.items()}
    arrays = {key: read_idx(path) for key, path in paths.items()}
    train_x = arrays["train_images"].astype(np.float32) / 255.0
    order = np.random.default_rng(seed).permutation(len(train_x))
    calib, train = order[:cal], order[cal:]
    mean, std = float(train_x[train].mean()), float(train_x[train].std())

    def prep(images: np.ndarray) -> np.ndarray:
        return ((images.astype(np.float32) / 255.0 - mean) / std)[:, None]

    y_train = arrays["train_labels"].astype(np.int64)
    y_test = arrays["test_labels"].astype(np.int64)
    name, classes, source = _idx_identity(root, list(paths.values()), max(int(y_train.max()), int(y_test.max())) + 1)
    prep_spec = {"source": str(root), "scale": 1 / 255, "mean": mean, "std": std, "resize": [28, 28]}
    return Dataset(name, classes, prep(arrays["train_images"][train]), y_train[train],
                   prep(arrays["train_images"][calib]), y_train[calib], prep(arrays["test_images"]),
                   y_test, prep_spec, source)  # fmt: skip


def _idx_identity(root: Path, files: list[Path], n_classes: int) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """(name, classes, source) of an IDX directory: Fashion-MNIST's for the Debian package's, else its own."""
    if root.resolve() == FASHION_MNIST_DIR.resolve():
        return "fashion-mnist", FASHION_CLASSES, {"kind": "idx", "path": str(root)}
    names = root / "classes.txt"
    if names.is_file():
        classes = tuple(line.strip() for line in names.read_text().splitlines() if line.strip())
        if len(classes) < n_classes:
            raise ValueError(
                f"{names}: names {len(classes)} classes but the labels go up to {n_classes - 1};"
                f" it needs one name per line for each of the {n_classes} classes"
            )
    else:
        classes = tuple(str(c) for c in range(n_classes))
    stats = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    fingerprint = hashlib.sha256(json.dumps([stats, list(classes)]).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.resolve().name).strip("._") or "idx"
    return name, classes, {"kind": "idx", "path": str(root), "fingerprint": fingerprint}


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Load a dataset by name; ``ValueError`` listing the known names otherwise."""
    loaders: dict[str, Any] = {"digits": load_digits, "fashion-mnist": load_fashion_mnist}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {sorted(loaders)}")
    return loaders[name](**kwargs)
