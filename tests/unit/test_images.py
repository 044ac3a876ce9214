"""A user's image folder: layouts, class names, the crop cache, lazy samples, and every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protos.preprocessing import ImageError, Preprocessing, decode_image
from split import imagecache
from split.data import Dataset
from split.folder import FolderError, scan_folder
from split.preprocess import Cropper
from split.samples import ImageSamples, as_array
from split.userdata import DataOptions, image_spec, load_data, load_image_folder, stratified_split

SPEC = Preprocessing(resize=20, crop=16)


def _image(path: Path, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Path:
    """A random image of ``size`` (w, h) in ``mode``, saved by suffix (PNG, JPEG, WebP)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def _folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), n: int = 6) -> Path:
    for c, name in enumerate(classes):
        for i in range(n):
            _image(root / name / f"{i}.png", (24 + i, 18 + 2 * i), seed=10 * c + i)
    return root


def _options(tmp_path: Path, **kwargs: object) -> DataOptions:
    return DataOptions(cache_dir=tmp_path / "cache", workers=0, progress=False, **kwargs)  # type: ignore[arg-type]


def _expected(path: Path, spec: Preprocessing = SPEC) -> np.ndarray:
    """What the training sample of ``path`` must be: decode, crop, normalise."""
    return spec.normalize(Cropper(spec)(decode_image(path.read_bytes(), str(path))))[0]


def _sample_of(data: Dataset, name: str) -> np.ndarray:
    """The model input the dataset holds for the image file ``name`` (any split)."""
    for x in (data.x_train, data.x_cal, data.x_test):
        assert isinstance(x, ImageSamples)
        names = [x.file(k) for k in range(len(x))]
        if name in names:
            return x[names.index(name)]
    raise AssertionError(f"{name} is in no split")


def test_classes_are_the_sorted_folder_names_and_other_files_are_reported(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    root = _folder(tmp_path / "pets", ("zebra", "ant", "mole"))
    _image(root / "ant" / "deep" / "nested.webp", (30, 20))
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / "ant" / ".DS_Store").write_bytes(b"\0")
    folder = scan_folder(root)
    assert folder.classes == ("ant", "mole", "zebra")
    assert "ant/deep/nested.webp" in folder.files and folder.ignored == ("ant/notes.txt",)
    data = load_image_folder(root, SPEC, _options(tmp_path))
    assert data.classes == ("ant", "mole", "zebra") and data.preprocessing == SPEC.to_dict()
    assert "ignored 1 file(s) that are not JPEG, PNG or WebP images: ant/notes.txt" in capsys.readouterr().err


def test_mixed_sizes_grey_rgba_and_jpeg_become_the_crops_the_graph_makes(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    files = [
        _image(root / "a" / "grey.png", (40, 25), "L"),
        _image(root / "a" / "rgba.png", (17, 33), "RGBA", seed=1),
        _image(root / "b" / "photo.jpg", (64, 48), seed=2),
        _image(root / "b" / "palette.png", (21, 21), "P", seed=3),
        _image(root / "a" / "wide.webp", (90, 12), seed=4),
        _image(root / "b" / "cmyk.jpg", (30, 40), "CMYK", seed=5),
    ]
    data = load_image_folder(root, SPEC, _options(tmp_path, test=0.3, cal=0.3))
    assert data.x_train.shape == (2, 3, 16, 16) and data.x_train.dtype == np.float32
    for path in files:
        np.testing.assert_array_equal(_sample_of(data, path.relative_to(root).as_posix()), _expected(path))


def test_a_split_folder_is_used_as_split_with_val_for_calibration(tmp_path: Path) -> None:
    root = tmp_path / "split"
    for split, n in (("train", 5), ("val", 3), ("test", 2)):
        _folder(root / split, ("cat", "dog"), n)
    data = load_image_folder(root, SPEC, _options(tmp_path))
    assert (len(data.y_train), len(data.y_cal), len(data.y_test)) == (10, 6, 4)
    assert data.source["layout"] == "train/val/test"
    assert {data.x_cal.file(i).split("/")[0] for i in range(6)} == {"val"}  # type: ignore[union-attr]


def test_split_folders_whose_classes_differ_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "split"
    _folder(root / "train", ("cat", "dog", "emu"), 2)
    _folder(root / "val", ("cat", "dog"), 2)
    _folder(root / "test", ("cat", "dog", "emu"), 2)
    with pytest.raises(FolderError, match=r"class folders of train/, val/ and test/ differ \(val/ lacks \['emu'\]\)"):
        scan_folder(root)


def test_a_split_folder_without_val_says_what_it_needs(tmp_path: Path) -> None:
    _folder(tmp_path / "d" / "train")
    _folder(tmp_path / "d" / "test")
    with pytest.raises(FolderError, match=r"has \['test', 'train'\] but no \['val'\]; a split folder holds train/"):
        scan_folder(tmp_path / "d")


def test_an_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    (root / "empty").mkdir()
    (root / "empty" / "readme.md").write_text("?")
    with pytest.raises(FolderError, match=r"d/empty: a class folder with no images \(JPEG, PNG or WebP"):
        scan_folder(root)


def test_a_single_class_is_refused(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", ("cat",))
    with pytest.raises(FolderError, match=r"only one class folder \('cat'\); a classifier needs two or more"):
        scan_folder(root)


def test_a_folder_without_class_folders_says_how_to_lay_it_out(tmp_path: Path) -> None:
    (tmp_path / "none").mkdir()
    with pytest.raises(FolderError, match=r"none: no class folders; --data takes a folder with one sub-folder per"):
        scan_folder(tmp_path / "none")
    _image(tmp_path / "loose" / "a.jpg", (8, 8))
    with pytest.raises(FolderError, match=r"1 images directly in it, none in class folders"):
        scan_folder(tmp_path / "loose")
    with pytest.raises(FileNotFoundError, match=r"missing: no such folder"):
        load_data(tmp_path / "missing")


def test_a_corrupt_image_is_named_and_skip_bad_images_leaves_it_out(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    root = _folder(tmp_path / "d")
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    good = (root / "dog" / "0.png").read_bytes()
    (root / "dog" / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageError) as raised:
        load_image_folder(root, SPEC, _options(tmp_path))
    message = str(raised.value)
    assert "2 image(s) cannot be decoded: cat/broken.jpg: not a readable image" in message
    assert "dog/cut.png: not a readable image" in message and "pass --skip-bad-images" in message
    data = load_image_folder(root, SPEC, _options(tmp_path, skip_bad=True))  # the cache is reused
    assert len(data.y_train) + len(data.y_cal) + len(data.y_test) == 12
    err = capsys.readouterr().err
    assert "skipped 2 unreadable image(s) (--skip-bad-images): cat/broken.jpg, dog/cut.png" in err
    assert data.source["skipped"] == ["cat/broken.jpg", "dog/cut.png"]


def test_an_unreadable_file_is_reported_like_a_corrupt_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folder(tmp_path / "d")
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "3.png":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(ImageError, match=r"cat/3.png: cannot be read \(Permission denied\).*dog/3.png: cannot be"):
        load_image_folder(root, SPEC, _options(tmp_path))


def test_the_crop_cache_is_reused_and_remade_when_a_file_changes(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    root = _folder(tmp_path / "d")
    first = load_image_folder(root, SPEC, _options(tmp_path))
    fills = []
    original = imagecache._fill
    monkeypatch.setattr(imagecache, "_fill", lambda *a: fills.append(1) or original(*a))
    again = load_image_folder(root, SPEC, _options(tmp_path))
    assert fills == [] and again.source["cache"] == first.source["cache"]
    assert again.cache_key == first.cache_key and np.array_equal(again.x_test[:], first.x_test[:])
    _image(root / "cat" / "0.png", (30, 30), seed=99)
    changed = load_image_folder(root, SPEC, _options(tmp_path))
    assert fills == [1] and changed.cache_key != first.cache_key
    other_crop = load_image_folder(root, Preprocessing(resize=12, crop=12), _options(tmp_path))
    assert fills == [1, 1] and other_crop.input_shape == (3, 12, 12)


def test_workers_make_the_same_crops_as_the_main_process(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", n=9)
    folder = scan_folder(root)
    here = imagecache.crop_cache(folder, SPEC, tmp_path / "c0", workers=0, progress=False)
    workers = imagecache.crop_cache(folder, SPEC, tmp_path / "c2", workers=2, progress=False)
    np.testing.assert_array_equal(here.crops, workers.crops)


def test_a_split_is_stratified_fixed_and_disjoint() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 40])
    train, cal, test = stratified_split(labels, 0.2, 0.1, seed=0)
    again = stratified_split(labels, 0.2, 0.1, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, cal, test), again, strict=True))
    assert len(np.unique(np.concatenate([train, cal, test]))) == 70
    assert np.bincount(labels[test]).tolist() == [2, 4, 8] and np.bincount(labels[cal]).tolist() == [1, 2, 4]


def test_image_samples_index_like_an_array() -> None:
    crops = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    x = ImageSamples(crops, SPEC, np.array([4, 0, 2]))
    whole = SPEC.normalize(crops[[4, 0, 2]])
    assert x.shape == (3, 3, 16, 16) and x.dtype == np.float32 and len(x) == 3
    np.testing.assert_array_equal(x[:], whole)
    np.testing.assert_array_equal(x[1], whole[1])
    np.testing.assert_array_equal(x[-1], whole[2])
    np.testing.assert_array_equal(x[np.array([2, 0])], whole[[2, 0]])
    np.testing.assert_array_equal(x.subset(slice(1, 3))[:], whole[1:3])
    np.testing.assert_array_equal(as_array(x), whole)
    with pytest.raises(ValueError, match=r"crops must be uint8 \[M, 16, 16, 3\]"):
        ImageSamples(crops[:, :8], SPEC, np.arange(6))
    with pytest.raises(ValueError, match="rows must be a 1-d index into 6 crops"):
        ImageSamples(crops, SPEC, np.array([6]))


def test_the_image_spec_defaults_to_imagenet_and_takes_a_familys_record() -> None:
    spec = image_spec()
    assert (spec.resize, spec.crop, spec.mean, spec.std) == (256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (image_spec(32).resize, image_spec(32, 40).resize) == (37, 40)
    family = {"resize": 160, "crop": 128, "mean": [0.5] * 3, "std": [0.5] * 3, "scale": 1 / 255}
    assert image_spec(base=family) == Preprocessing(160, 128, (0.5,) * 3, (0.5,) * 3)
    assert image_spec(96, base=family).crop == 96
    with pytest.raises(ValueError, match=r"valid keys: resize, crop, mean, std, scale"):
        image_spec(base={"size": 3})
