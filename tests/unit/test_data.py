"""Datasets: IDX reading, fixed and disjoint splits, the Debian Fashion-MNIST files and any --data-dir."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from split.data import FASHION_MNIST_DIR, IDX_FILES, load_dataset, load_digits, load_fashion_mnist, read_idx


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    code = {np.uint8: 0x08, np.int32: 0x0C}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if compress:
        with gzip.open(path, "wb") as fh:
            fh.write(body)
    else:
        path.write_bytes(body)


@pytest.fixture()
def tiny_fashion(tmp_path: Path) -> Path:
    """A --data-dir with the four standard file names: 600 train and 100 test images of 28x28."""
    rng = np.random.default_rng(0)
    for key, stem in IDX_FILES.items():
        n = 600 if key.startswith("train") else 100
        array = rng.integers(0, 256, (n, 28, 28)) if key.endswith("images") else rng.integers(0, 10, n)
        gz = key.startswith("train")  # both spellings: name.gz and plain name
        _write_idx(tmp_path / (stem + ".gz" if gz else stem), array.astype(np.uint8), gz)
    return tmp_path


def test_read_idx_round_trips_and_refuses_garbage(tmp_path: Path) -> None:
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.idx", a, compress=False)
    assert np.array_equal(read_idx(tmp_path / "a.idx"), a)
    (tmp_path / "bad").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def test_any_data_dir_with_the_standard_names(tiny_fashion: Path) -> None:
    data = load_fashion_mnist(tiny_fashion, cal=100)
    assert (len(data.y_train), len(data.y_cal), len(data.y_test)) == (500, 100, 100)
    assert data.x_train.shape[1:] == (1, 28, 28) and data.x_train.dtype == np.float32


def test_a_data_dir_missing_a_file_says_which_and_what_is_expected(tiny_fashion: Path) -> None:
    (tiny_fashion / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"no t10k-labels-idx1-ubyte.*four standard IDX files"):
        load_fashion_mnist(tiny_fashion)


def test_digits_splits_are_fixed_and_disjoint() -> None:
    a, b = load_digits(), load_digits()
    assert np.array_equal(a.x_cal, b.x_cal)
    rows = {split: {x.tobytes() for x in getattr(a, f"x_{split}")} for split in ("train", "cal", "test")}
    assert not (rows["train"] & rows["cal"]) and not (rows["train"] & rows["test"]) and not (rows["cal"] & rows["test"])


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"known datasets: \['digits', 'fashion-mnist'\]"):
        load_dataset("cifar")


_REQUIRED = os.environ.get("EDGESPLIT_REQUIRE_FASHION_MNIST") == "1"  # .ci/run installs the Debian package


@pytest.mark.skipif(
    not _REQUIRED and not Path(FASHION_MNIST_DIR).is_dir(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
def test_debian_fashion_mnist_has_fixed_disjoint_splits() -> None:
    data = load_fashion_mnist()
    assert (len(data.y_train), len(data.y_cal), len(data.y_test)) == (55000, 5000, 10000)
    assert sorted(np.unique(data.y_test)) == list(range(10)) and len(data.classes) == 10
    again = load_fashion_mnist()
    assert np.array_equal(data.y_cal, again.y_cal) and np.array_equal(data.x_cal[:50], again.x_cal[:50])
    train = {x.tobytes() for x in data.x_train[::11]}
    assert not any(x.tobytes() in train for x in data.x_cal)
