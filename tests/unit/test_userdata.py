"""``--data FILE.npz``, a user's own IDX directory, the export options for a user's data, and the consumers that
read lazy samples a batch at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protos.preprocessing import Preprocessing
from split import data as data_module
from split.cli import main
from split.data import FASHION_CLASSES, IDX_FILES, load_fashion_mnist
from split.pipeline import QUANTIZATION_SAMPLES, quantization_inputs
from split.preprocess import Cropper
from split.samples import ImageSamples
from split.userdata import DataOptions, load_data

SPEC = Preprocessing(resize=12, crop=8)


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_a_model_ready_npz_is_used_as_is_with_its_class_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 2, 5, 5)).astype(np.float64), np.repeat(np.arange(4), 10)
    data = load_data(_npz(tmp_path / "mine.npz", x=x, y=y, classes=np.array(["a", "b", "c", "d"])), SPEC)
    assert data.name == "mine" and data.classes == ("a", "b", "c", "d") and data.preprocessing == {}
    assert isinstance(data.x_train, np.ndarray) and data.x_train.dtype == np.float32 and data.input_shape == (2, 5, 5)
    assert (len(data.y_train), len(data.y_cal), len(data.y_test)) == (
        24,
        8,
        8,
    )  # per class: round(1.5) = 2 calibration, 2 test
    assert data.cache_key.startswith("mine-")


@pytest.mark.parametrize("grey", [False, True])
def test_uint8_npz_images_go_through_the_preprocessing(tmp_path: Path, grey: bool) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (20, 15, 10) if grey else (20, 15, 10, 3), dtype=np.uint8)
    data = load_data(_npz(tmp_path / "img.npz", x=x, y=np.arange(20) % 2), SPEC, DataOptions(seed=3))
    assert data.classes == ("0", "1") and data.preprocessing == SPEC.to_dict() and data.input_shape == (3, 8, 8)
    assert isinstance(data.x_test, ImageSamples)
    rgb = np.repeat(x[..., None], 3, axis=-1) if grey else x
    expected = SPEC.normalize(Cropper(SPEC)(rgb))
    train, _, test = (np.sort(r) for r in _rows(data, expected))
    assert len(set(train.tolist()) | set(test.tolist())) == len(train) + len(test)


def _rows(data, expected):  # type: ignore[no-untyped-def]
    """The rows of ``expected`` that each split's samples are (every sample must be one of them)."""
    out = []
    for x in (data.x_train, data.x_cal, data.x_test):
        rows = []
        for k in range(len(x)):
            match = np.flatnonzero(np.all(expected == x[k], axis=(1, 2, 3)))
            assert len(match) == 1
            rows.append(int(match[0]))
        out.append(np.asarray(rows))
    return out


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 3, 3, 3), np.float32)}, r"holds arrays 'x' and 'y' \(and optionally 'classes'\), found"),
        ({"x": np.zeros((4, 3, 3), np.float32), "y": np.arange(4)}, r"x is float32 \[4, 3, 3\]; valid: model-ready"),
        ({"x": np.zeros((4, 5, 5, 4), np.uint8), "y": np.arange(4)}, r"uint8 images \[N, H, W, 3\] \(RGB\)"),
        ({"x": np.zeros((4, 1, 3, 3), np.float32), "y": np.arange(3)}, r"y must be 4 non-negative integer labels"),
        ({"x": np.zeros((4, 1, 3, 3), np.float32), "y": np.arange(4), "classes": np.array(["a"])},
         r"classes must be a 1-d array of at least 4 names \(the labels go up to 3\)"),
    ],
)  # fmt: skip
def test_a_malformed_npz_says_what_is_valid(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_data(_npz(tmp_path / "bad.npz", **arrays), SPEC)


def test_data_is_a_folder_or_an_npz(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(ValueError, match=r"x.csv: --data takes an image folder or an .npz file"):
        load_data(tmp_path / "x.csv", SPEC)


def _idx_dir(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for key, stem in IDX_FILES.items():
        n = 60 if key.startswith("train") else 20
        array = rng.integers(0, 256, (n, 28, 28)) if key.endswith("images") else np.arange(n) % 3
        a = array.astype(np.uint8)
        (root / stem).write_bytes(
            bytes([0, 0, 8, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape) + a.tobytes()
        )
    return root


def test_a_users_idx_directory_is_named_by_its_labels_or_classes_txt(tmp_path: Path) -> None:
    (tmp_path / "letters").mkdir()
    root = _idx_dir(tmp_path / "letters")
    data = load_fashion_mnist(root, cal=10)
    assert data.classes == ("0", "1", "2") and data.name == "letters" and data.cache_key != "letters"
    (root / "classes.txt").write_text("alpha\nbeta\ngamma\n")
    assert load_fashion_mnist(root, cal=10).classes == ("alpha", "beta", "gamma")
    (root / "classes.txt").write_text("alpha\n")
    with pytest.raises(ValueError, match=r"classes.txt: names 1 classes but the labels go up to 2"):
        load_fashion_mnist(root, cal=10)


def test_the_debian_directory_is_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_module, "FASHION_MNIST_DIR", _idx_dir(tmp_path))
    data = load_fashion_mnist(cal=10)
    assert (data.name, data.classes, data.cache_key) == ("fashion-mnist", FASHION_CLASSES, "fashion-mnist")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "digits"], "--data (your own folder or .npz) replaces --dataset and --data-dir"),
        (["--data-dir", "x"], "--data (your own folder or .npz) replaces --dataset and --data-dir"),
    ],
)
def test_export_options_for_a_users_data_that_conflict(tmp_path: Path, capsys, extra: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    assert main(["export", "--data", str(tmp_path), *extra, "--out", str(tmp_path / "b")]) == 1
    assert message in capsys.readouterr().err


def test_image_options_need_data(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["export", "--image-size", "64", "--out", str(tmp_path / "b")]) == 1
    assert "--image-size, --resize and --skip-bad-images go with --data" in capsys.readouterr().err


def test_int8_calibrates_on_an_array_as_is_and_on_a_spread_of_lazy_samples() -> None:
    x = np.zeros((3, 1, 2, 2), np.float32)
    assert quantization_inputs(x) is x
    crops = np.arange(2000, dtype=np.int64).astype(np.uint8)[:, None, None, None].repeat(8, 1).repeat(8, 2).repeat(3, 3)
    lazy = ImageSamples.of(np.ascontiguousarray(crops), SPEC)
    got = quantization_inputs(lazy)
    assert got.shape == (QUANTIZATION_SAMPLES, 3, 8, 8)
    np.testing.assert_array_equal(got[[0, -1]], lazy[np.array([0, 1999])])
