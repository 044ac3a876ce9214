"""A user's own data (``edgesplit export --data``): an image folder or an ``.npz`` file, as a :class:`Dataset`.

An image folder (:mod:`split.folder`: one sub-folder per class, optionally split into ``train/``, ``val/``,
``test/``) is decoded and cropped once into the crop cache (:mod:`split.imagecache`), and its splits are lazy
:class:`~split.samples.ImageSamples` over that memory map: a folder of 50,000 images is never in memory. Training
sees what the bundle's ``preprocess.onnx`` computes from the same file: :func:`~protos.preprocessing.decode_image`,
the :class:`~split.preprocess.Cropper`'s resize and crop, then
:meth:`~protos.preprocessing.Preprocessing.normalize`.

Without split folders, the split is fixed, seeded and stratified: in each class, ``test`` and ``cal`` fractions
go to the test and calibration splits, the rest to training.

Example:
    >>> data = load_data(Path("flowers"), image_spec(crop=224))          # doctest: +SKIP
    >>> data.classes, data.x_train.shape                                 # doctest: +SKIP
    (('daisy', 'rose', 'tulip'), (1922, 3, 224, 224))
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protos.preprocessing import ImageError, Preprocessing
from split.data import Dataset
from split.folder import SPLITS, ImageFolder, scan_folder
from split.samples import ImageSamples, Samples

__all__ = ["DataOptions", "image_spec", "load_data", "load_image_folder", "load_npz", "stratified_split"]

_SHOWN = 5
"""How many file names a report lists before "and N more"."""


@dataclass(frozen=True)
class DataOptions:
    """How a user's data is read: the split fractions and seed (a folder without split folders, an ``.npz``),
    whether unreadable images are left out (else they are an error), the decoding workers and the crop cache."""

    seed: int = 0
    test: float = 0.2
    cal: float = 0.15
    skip_bad: bool = False
    workers: int = 2
    cache_dir: Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if not (0 < self.test < 1 and 0 < self.cal < 1 and self.test + self.cal < 1):
            raise ValueError(f"test and cal are fractions with test + cal < 1, got {self.test}, {self.cal}")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 or more, got {self.workers}")


def image_spec(
    crop: int | None = None, resize: int | None = None, base: Mapping[str, Any] | None = None
) -> Preprocessing:
    """The preprocessing of an image dataset: ``base`` (a family's own record, e.g. a pretrained family's
    ``preprocessing`` attribute) or ImageNet's mean and std with scale 1/255 at crop 224; ``crop`` and ``resize``
    override it (``resize`` defaults to ``round(crop * 256 / 224)`` when ``crop`` is given alone)."""
    fields = {k: v for k, v in dict(base or {}).items() if k != "kind"}
    if crop is not None:
        fields["crop"] = crop
        fields["resize"] = resize if resize is not None else round(crop * 256 / 224)
    elif resize is not None:
        fields["resize"] = resize
    fields.setdefault("crop", 224)
    fields.setdefault("resize", round(fields["crop"] * 256 / 224))
    try:
        return Preprocessing(**fields)
    except TypeError as exc:
        raise ValueError(f"preprocessing {fields}: {exc}; valid keys: resize, crop, mean, std, scale") from None


def load_data(path: str | Path, spec: Preprocessing | None = None, options: DataOptions | None = None) -> Dataset:
    """``path``: an image folder (:func:`load_image_folder`) or an ``.npz`` file (:func:`load_npz`)."""
    path = Path(path)
    spec = spec or image_spec()
    options = options or DataOptions()
    if path.is_file():
        if path.suffix != ".npz":
            raise ValueError(f"{path}: --data takes an image folder or an .npz file (arrays x, y, classes)")
        return load_npz(path, spec, options)
    return load_image_folder(path, spec, options)


def stratified_split(labels: np.ndarray, test: float, cal: float, seed: int) -> tuple[np.ndarray, ...]:
    """Fixed, disjoint (train, calibration, test) row indices, each sorted: per class, ``round(n * test)`` test
    and ``round(n * cal)`` calibration rows drawn with ``seed``, the rest for training."""
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], ...] = ([], [], [])
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rows = rows[rng.permutation(len(rows))]
        n_test, n_cal = round(len(rows) * test), round(len(rows) * cal)
        parts[2].append(rows[:n_test])
        parts[1].append(rows[n_test : n_test + n_cal])
        parts[0].append(rows[n_test + n_cal :])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)


def load_image_folder(root: str | Path, spec: Preprocessing, options: DataOptions | None = None) -> Dataset:
    """An image folder as a dataset of lazy samples over the crop cache (made on first use, then reused).

    An image that cannot be decoded is an :class:`ImageError` naming it (with ``options.skip_bad``: left out,
    and reported on stderr); files that are not images are reported and ignored.
    """
    from split.imagecache import crop_cache
    from split.pipeline import default_cache_dir

    options = options or DataOptions()
    folder = scan_folder(root)
    _report(folder.root, "ignored", "file(s) that are not JPEG, PNG or WebP images", list(folder.ignored))
    cache = crop_cache(folder, spec, options.cache_dir or default_cache_dir(), options.workers, options.progress)
    keep = _usable(folder, cache.bad, options.skip_bad)
    if folder.split_of is None:
        splits = stratified_split(folder.labels, options.test, options.cal, options.seed)
    else:
        splits = tuple(folder.rows(s) for s in SPLITS)
    splits = tuple(rows[keep[rows]] for rows in splits)
    _check_splits(folder, splits)
    xs = [ImageSamples(cache.crops, spec, rows, folder.files) for rows in splits]
    ys = [folder.labels[rows] for rows in splits]
    source = {
        "kind": "image-folder",
        "path": str(folder.root),
        "fingerprint": _digest([cache.key, options.seed, options.test, options.cal]),
        "layout": "flat" if folder.split_of is None else "train/val/test",
        "cache": str(cache.path),
        "skipped": [f for f, _ in cache.bad],
    }
    return Dataset(_name(folder.root), folder.classes, xs[0], ys[0], xs[1], ys[1], xs[2], ys[2],
                   spec.to_dict(), source)  # fmt: skip


def _digest(parts: list[Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.resolve().stem).strip("._") or "data"


def _report(root: Path, verb: str, what: str, names: list[str]) -> None:
    if names:
        shown = ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
        print(f"{root}: {verb} {len(names)} {what}: {shown}", file=sys.stderr)


def _usable(folder: ImageFolder, bad: tuple[tuple[str, str], ...], skip_bad: bool) -> np.ndarray:
    """A mask of the rows to use: all, unless some images could not be decoded (an error, or left out)."""
    keep = np.ones(len(folder.files), dtype=bool)
    if not bad:
        return keep
    if not skip_bad:
        reasons = "; ".join(reason for _, reason in bad[:_SHOWN])
        more = f"; and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        raise ImageError(
            f"{folder.root}: {len(bad)} image(s) cannot be decoded: {reasons}{more}. Fix or remove them, or pass"
            " --skip-bad-images to leave them out"
        )
    _report(folder.root, "skipped", "unreadable image(s) (--skip-bad-images)", [f for f, _ in bad])
    index = {name: i for i, name in enumerate(folder.files)}
    keep[[index[f] for f, _ in bad]] = False
    return keep


def _check_splits(folder: ImageFolder, splits: tuple[np.ndarray, ...]) -> None:
    """Every split has samples and every class has training samples."""
    for name, rows in zip(("train", "calibration", "test"), splits, strict=True):
        if len(rows) == 0:
            raise ValueError(f"{folder.root}: no usable images for the {name} split; add images")
    missing = sorted(set(range(len(folder.classes))) - set(folder.labels[splits[0]].tolist()))
    if missing:
        names = [folder.classes[k] for k in missing]
        raise ValueError(f"{folder.root}: no usable training images for class(es) {names}; add images")


def load_npz(path: str | Path, spec: Preprocessing, options: DataOptions | None = None) -> Dataset:
    """An ``.npz`` with arrays ``x``, ``y`` (integer labels ``0..K-1``) and optionally ``classes`` (K names).

    ``x`` is either model-ready float ``[N, C, H, W]`` (used as is, as float32; the bundle then takes tensors),
    or uint8 images ``[N, H, W, 3]`` (RGB) or ``[N, H, W]`` (grey, made RGB), which go through ``spec``'s
    resize and crop (stored in memory as uint8 crops) and are normalised per batch; the bundle then has the
    preprocessing graph. The split is :func:`stratified_split`'s.
    """
    path, options = Path(path), options or DataOptions()
    with np.load(path, allow_pickle=False) as z:
        if not {"x", "y"} <= set(z.files):
            raise ValueError(f"{path}: an .npz for --data holds arrays 'x' and 'y' (and optionally 'classes'),"
                             f" found {sorted(z.files)}")  # fmt: skip
        x, y = z["x"], z["y"]
        names = z["classes"] if "classes" in z.files else None
    y, classes = _labels(path, y, len(x), names)
    samples, preprocessing = _npz_samples(path, x, spec)
    stat = path.stat()
    key = [stat.st_size, stat.st_mtime_ns, preprocessing, options.seed, options.test, options.cal]
    source = {"kind": "npz", "path": str(path), "fingerprint": _digest(key)}
    rows = stratified_split(y, options.test, options.cal, options.seed)
    xs = [samples[r] if isinstance(samples, np.ndarray) else samples.subset(r) for r in rows]
    return Dataset(_name(path), classes, xs[0], y[rows[0]], xs[1], y[rows[1]], xs[2], y[rows[2]],
                   preprocessing, source)  # fmt: skip


def _labels(path: Path, y: np.ndarray, n: int, names: np.ndarray | None) -> tuple[np.ndarray, tuple[str, ...]]:
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer) or (n and y.min() < 0):
        raise ValueError(
            f"{path}: y must be {n} non-negative integer labels (one per sample of x), got {y.dtype} {list(y.shape)}"
        )
    k = int(y.max()) + 1 if n else 0
    if names is None:
        return y.astype(np.int64), tuple(str(c) for c in range(k))
    if names.ndim != 1 or names.dtype.kind not in "US" or len(names) < k:
        raise ValueError(
            f"{path}: classes must be a 1-d array of at least {k} names (the labels go up to {k - 1}),"
            f" got {names.dtype} {list(names.shape)}"
        )
    return y.astype(np.int64), tuple(str(c.decode() if isinstance(c, bytes) else c) for c in names)


def _npz_samples(path: Path, x: np.ndarray, spec: Preprocessing) -> tuple[Samples, dict[str, Any]]:
    """Model-ready float32, or image crops; and the manifest's preprocessing record."""
    if x.ndim == 4 and np.issubdtype(x.dtype, np.floating):
        return np.ascontiguousarray(x, dtype=np.float32), {}
    if x.dtype == np.uint8 and (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 3)) and len(x):
        from split.preprocess import Cropper

        frames = np.repeat(x[..., None], 3, axis=-1) if x.ndim == 3 else x
        cropper = Cropper(spec)
        crops = np.concatenate([cropper(frames[i : i + 256]) for i in range(0, len(frames), 256)])
        return ImageSamples.of(crops, spec), spec.to_dict()
    raise ValueError(
        f"{path}: x is {x.dtype} {list(x.shape)}; valid: model-ready float [N, C, H, W], or uint8 images"
        " [N, H, W, 3] (RGB) or [N, H, W] (grey)"
    )
