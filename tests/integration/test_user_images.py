"""``edgesplit export --data DIR`` end to end on a tiny generated image folder: the classes are the folder names,
the bundle's ``preprocess.onnx`` turns a raw file into exactly the sample training saw, and the bundle runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.runtime import EdgeRuntime
from protos.bundle import Bundle
from protos.preprocessing import Preprocessing, Preprocessor, decode_image
from split.cli import main
from split.samples import ImageSamples
from split.userdata import DataOptions, load_data

CLASSES = ("apple", "banana", "cherry")
MODES = ("RGB", "L", "RGBA", "RGB")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Bundle, Path]:
    """(image folder, bundle, cache): 3 classes x 12 PNG/JPEG images of different sizes, grey and RGBA among them."""
    root = tmp_path_factory.mktemp("data") / "fruit"
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(12):
            h, w = int(rng.integers(30, 70)), int(rng.integers(30, 70))
            pixels = (rng.integers(0, 128, (h, w, 3)) + 60 * c).astype(np.uint8)  # a class is a colour
            suffix = "jpg" if i % 3 == 0 else "png"
            Image.fromarray(pixels).convert(MODES[i % 4] if suffix == "png" else "RGB").save(
                root / name / f"{i}.{suffix}"
            )
    out, cache = tmp_path_factory.mktemp("bundle") / "b", tmp_path_factory.mktemp("cache")
    argv = ["export", "--data", str(root), "--image-size", "32", "--resize", "36", "--epochs", "1"]
    argv += ["--family", "mobilenetv2", "--width", "0.25", "--split-points", "blocks.2", "--workers", "1"]
    assert main([*argv, "--out", str(out), "--cache-dir", str(cache)]) == 0
    return root, Bundle.load(out), cache


def test_the_classes_are_the_folder_names(exported: tuple[Path, Bundle, Path]) -> None:
    _, bundle, _ = exported
    assert bundle.manifest.classes == CLASSES
    assert bundle.manifest.model == "mobilenetv2_fruit"


def test_the_preprocessing_graph_makes_the_training_sample_from_the_raw_file(
    exported: tuple[Path, Bundle, Path],
) -> None:
    root, bundle, cache = exported
    spec = Preprocessing.from_manifest(bundle.manifest.preprocessing)
    assert spec == Preprocessing(resize=36, crop=32) and bundle.file("preprocess.onnx").is_file()
    data = load_data(root, spec, DataOptions(cache_dir=cache, workers=0, progress=False))  # the cache's crops
    pre = Preprocessor.load(bundle)
    assert pre is not None and isinstance(data.x_train, ImageSamples)
    checked = 0
    for k in range(len(data.x_train)):
        name = data.x_train.file(k)
        assert name is not None
        got = pre(decode_image((root / name).read_bytes(), name))
        assert got.shape == (1, 3, 32, 32) and got.dtype == np.float32
        np.testing.assert_allclose(got[0], data.x_train[k], rtol=0, atol=1e-6)
        checked += 1
    assert checked == len(data.y_train) > 20


def test_the_bundle_runs_on_a_decoded_file(exported: tuple[Path, Bundle, Path]) -> None:
    root, bundle, _ = exported
    pre = Preprocessor.load(bundle)
    assert pre is not None
    x = pre(decode_image((root / "cherry" / "1.png").read_bytes()))[0]
    for split, exits in ((len(bundle.manifest.segments), False), (len(bundle.manifest.segments), True)):
        answer = EdgeRuntime(bundle, split=split, exits=exits).infer(x)
        assert answer.probabilities.shape == (len(CLASSES),)
        assert np.isclose(answer.probabilities.sum(), 1, atol=1e-5)
