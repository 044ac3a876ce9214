"""A user's image folder: one sub-folder per class, optionally already split into ``train/``, ``val/``, ``test/``.

``DIR/<class>/<image>`` (any depth below the class folder) or ``DIR/{train,val,test}/<class>/<image>``, where
``val`` is the calibration split. Class names are the sorted folder names; images are recognised by their
suffix (:data:`IMAGE_SUFFIXES`: JPEG, PNG, WebP); other files are listed in :attr:`ImageFolder.ignored`, hidden
ones (``.DS_Store``) are passed over. Scanning reads no image: decoding happens once, into the crop cache
(:mod:`split.imagecache`).

Example:
    >>> folder = scan_folder(Path("flowers"))                              # doctest: +SKIP
    >>> folder.classes, len(folder.files)                                  # doctest: +SKIP
    (('daisy', 'rose', 'tulip'), 2746)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protos.preprocessing import Preprocessing

__all__ = ["IMAGE_SUFFIXES", "SPLITS", "FolderError", "ImageFolder", "scan_folder"]

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".webp")
SPLITS = ("train", "val", "test")
"""A split folder's sub-folders; ``val`` is the calibration split."""

_KINDS = "JPEG, PNG or WebP: " + ", ".join(IMAGE_SUFFIXES)
_LAYOUT = "one sub-folder per class (DIR/<class>/<image>.jpg), optionally inside train/, val/ and test/"


class FolderError(ValueError):
    """An image folder whose layout cannot be used; the message names the folder and what is valid."""


@dataclass(frozen=True, eq=False)
class ImageFolder:
    """The images of a folder: ``files`` (relative POSIX paths, sorted by split, class, name) and their
    ``labels`` (indices into ``classes``); ``split_of`` gives each file's split for a split layout (else
    ``None``); ``ignored``: files that are not images."""

    root: Path
    classes: tuple[str, ...]
    files: tuple[str, ...]
    labels: np.ndarray
    split_of: tuple[str, ...] | None = None
    ignored: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.files) != len(self.labels):
            raise ValueError(f"{self.root}: {len(self.files)} files but {len(self.labels)} labels")
        if self.split_of is not None and len(self.split_of) != len(self.files):
            raise ValueError(f"{self.root}: {len(self.files)} files but {len(self.split_of)} split names")

    def rows(self, split: str) -> np.ndarray:
        """The rows of ``split`` (one of :data:`SPLITS`) in a split layout."""
        if self.split_of is None:
            raise ValueError(f"{self.root} is not split into {SPLITS}")
        return np.flatnonzero(np.asarray(self.split_of) == split)

    def fingerprint(self, spec: Preprocessing) -> str:
        """A key of the files (names, sizes, modification times) and the preprocessing: a changed image, an added
        one or another crop makes another key."""
        entries = []
        for name in self.files:
            stat = (self.root / name).stat()
            entries.append([name, stat.st_size, stat.st_mtime_ns])
        blob = json.dumps([spec.to_dict(), entries], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def scan_folder(root: str | Path) -> ImageFolder:
    """List the images of ``root`` (see the module docstring); :class:`FolderError` for a layout that cannot be
    used: no class folders, a single class, an empty class folder, split folders with different classes."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder; --data takes a folder with {_LAYOUT}, or an .npz file")
    names = {d.name for d in _subdirs(root)}
    if names & set(SPLITS) and names <= set(SPLITS):
        return _scan_split(root, names)
    by_class, ignored = _scan_classes(root)
    files, labels = _flatten(by_class, "")
    return ImageFolder(root, tuple(by_class), tuple(files), labels, None, ignored)


def _scan_split(root: Path, names: set[str]) -> ImageFolder:
    missing = [s for s in SPLITS if s not in names]
    if missing:
        raise FolderError(
            f"{root}: has {sorted(names)} but no {missing}; a split folder holds train/, val/ (the calibration"
            " split) and test/, each with the same class folders"
        )
    scans = {s: _scan_classes(root / s) for s in SPLITS}
    classes = {s: tuple(scan[0]) for s, scan in scans.items()}
    if len(set(classes.values())) > 1:
        every = set().union(*classes.values())
        diff = "; ".join(f"{s}/ lacks {sorted(every - set(c))}" for s, c in classes.items() if set(c) != every)
        raise FolderError(f"{root}: the class folders of train/, val/ and test/ differ ({diff}); each needs them all")
    files: list[str] = []
    labels: list[np.ndarray] = []
    split_of: list[str] = []
    for s in SPLITS:
        f, y = _flatten(scans[s][0], f"{s}/")
        files += f
        labels.append(y)
        split_of += [s] * len(f)
    ignored = tuple(f"{s}/{name}" for s in SPLITS for name in scans[s][1])
    return ImageFolder(root, classes["train"], tuple(files), np.concatenate(labels), tuple(split_of), ignored)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_classes(folder: Path) -> tuple[dict[str, list[str]], tuple[str, ...]]:
    """``{class: [relative image paths]}`` (sorted) and the files that are not images."""
    ignored = [p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    by_class: dict[str, list[str]] = {}
    for sub in _subdirs(folder):
        images, others = _images_under(sub)
        ignored += [f"{sub.name}/{name}" for name in others]
        if not images:
            raise FolderError(f"{sub}: a class folder with no images ({_KINDS}); add images or remove the folder")
        by_class[sub.name] = [f"{sub.name}/{name}" for name in images]
    if not by_class:
        loose = [n for n in ignored if n.lower().endswith(IMAGE_SUFFIXES)]
        found = f"{len(loose)} images directly in it, none in class folders" if loose else "no class folders"
        raise FolderError(f"{folder}: {found}; --data takes a folder with {_LAYOUT}")
    if len(by_class) == 1:
        raise FolderError(
            f"{folder}: only one class folder ({next(iter(by_class))!r}); a classifier needs two or more ({_LAYOUT})"
        )
    return by_class, tuple(sorted(ignored))


def _images_under(folder: Path) -> tuple[list[str], list[str]]:
    """The image files below ``folder`` (any depth) and the other files, as sorted relative POSIX paths."""
    images: list[str] = []
    others: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath).relative_to(folder)
        for name in filenames:
            if name.startswith("."):
                continue
            rel = (base / name).as_posix()
            (images if name.lower().endswith(IMAGE_SUFFIXES) else others).append(rel)
    return sorted(images), sorted(others)


def _flatten(by_class: dict[str, list[str]], prefix: str) -> tuple[list[str], np.ndarray]:
    files = [prefix + name for names in by_class.values() for name in names]
    labels = np.concatenate([np.full(len(names), k, dtype=np.int64) for k, names in enumerate(by_class.values())])
    return files, labels
