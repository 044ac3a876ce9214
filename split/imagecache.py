"""The crop cache: every image of a folder decoded and cropped once, into a uint8 memory map on disk.

``<cache>/images/<folder name>-<key>/`` holds ``crops.npy`` (uint8 ``[M, crop, crop, 3]``, one row per file of
the :class:`~split.folder.ImageFolder`, in its order) and ``meta.json`` (the files, the preprocessing, and the
files that could not be decoded with the reason). The key (:meth:`ImageFolder.fingerprint`) covers the file
names, sizes and modification times and the preprocessing, so a second export of the same folder reads the
cache, and a changed folder or crop size makes a new one. A cache is written under a temporary name and renamed
when complete: an interrupted fill leaves nothing that looks finished.

The fill streams: torch ``DataLoader`` workers (each with its own :class:`~split.preprocess.Cropper`) read,
decode (:func:`~protos.preprocessing.decode_image`) and crop the images, and the main process writes each batch
into the memory map, so memory holds a few batches whatever the folder's size. An image that cannot be read or
decoded does not stop the fill: its row stays zero and the worker reports the file and the reason, which the
cache records (:attr:`CropCache.bad`); the loader then refuses the folder or, when asked, leaves those out.

Example:
    >>> cache = crop_cache(scan_folder("flowers"), Preprocessing(), Path("~/.cache/edgesplit"))  # doctest: +SKIP
    >>> cache.crops.shape, cache.bad                                                          # doctest: +SKIP
    ((2746, 224, 224, 3), ())
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from protos.preprocessing import ImageError, Preprocessing, decode_image
from split.folder import ImageFolder
from split.preprocess import Cropper
from split.progress import Progress

__all__ = ["CACHE_FORMAT", "CropCache", "crop_cache"]

CACHE_FORMAT = 1
_BATCH = 16


@dataclass(frozen=True, eq=False)
class CropCache:
    """A filled cache: ``key`` (:meth:`ImageFolder.fingerprint`), ``crops`` (read-only memory map, a row per
    file) and ``bad``: ``(file, reason)`` of the images that could not be decoded (their rows are zero)."""

    key: str
    path: Path
    crops: np.ndarray
    bad: tuple[tuple[str, str], ...]


def crop_cache(
    folder: ImageFolder, spec: Preprocessing, cache_dir: Path, workers: int = 2, progress: bool = True
) -> CropCache:
    """The crops of ``folder``'s images under ``cache_dir``: read when present, made (streaming) otherwise.

    ``workers``: ``DataLoader`` worker processes decoding in parallel (0: in this process).
    """
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")
    key = folder.fingerprint(spec)
    path = Path(cache_dir) / "images" / f"{_safe(folder.root.resolve().name)}-{key}"
    cached = _open(key, path, folder, spec)
    if cached is not None:
        return cached
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        bad = _fill(tmp / "crops.npy", folder, spec, workers, progress)
        meta = {"format": CACHE_FORMAT, "spec": spec.to_dict(), "files": list(folder.files), "bad": bad}
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            tmp.rename(path)
        except OSError:  # another process finished the same cache first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    opened = _open(key, path, folder, spec)
    if opened is None:
        raise RuntimeError(f"{path}: the crop cache just written does not read back; remove it and run again")
    return opened


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "images"


def _open(key: str, path: Path, folder: ImageFolder, spec: Preprocessing) -> CropCache | None:
    """The cache at ``path`` when it is complete and holds ``folder``'s files cropped with ``spec``."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        crops = np.load(path / "crops.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    expected = (len(folder.files), spec.crop, spec.crop, 3)
    same = meta.get("format") == CACHE_FORMAT and meta.get("spec") == json.loads(json.dumps(spec.to_dict()))
    if not same or meta.get("files") != list(folder.files) or crops.shape != expected or crops.dtype != np.uint8:
        return None
    return CropCache(key, path, crops, tuple((str(f), str(r)) for f, r in meta.get("bad", [])))


class _DecodeCrop(torch.utils.data.Dataset):
    """Image ``i`` of the folder -> ``(i, uint8 crop [crop, crop, 3], "")``, or a zero crop and the reason it
    could not be read. Each worker process builds its own :class:`Cropper` on first use."""

    def __init__(self, folder: ImageFolder, spec: Preprocessing) -> None:
        self.root, self.files, self.spec = folder.root, folder.files, spec
        self._cropper: Cropper | None = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray, str]:
        name = self.files[i]
        try:
            frame = decode_image((self.root / name).read_bytes(), name)
        except ImageError as exc:
            return i, self._blank(), str(exc)
        except OSError as exc:
            return i, self._blank(), f"{name}: cannot be read ({exc.strerror or exc})"
        except Exception as exc:  # a decoder's own failure: recorded like the others, never silent
            return i, self._blank(), f"{name}: not a readable image ({type(exc).__name__}: {exc})"
        if self._cropper is None:
            self._cropper = Cropper(self.spec)
        return i, self._cropper(frame)[0], ""

    def _blank(self) -> np.ndarray:
        return np.zeros((self.spec.crop, self.spec.crop, 3), dtype=np.uint8)


def _collate(items: list[tuple[int, np.ndarray, str]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Keep numpy (no tensors): the rows, the crops stacked, the errors."""
    rows = np.asarray([i for i, _, _ in items], dtype=np.int64)
    return rows, np.stack([c for _, c, _ in items]), [e for _, _, e in items]


def _fill(path: Path, folder: ImageFolder, spec: Preprocessing, workers: int, progress: bool) -> list[list[str]]:
    """Decode and crop every image into a new ``.npy`` memory map at ``path``; the ``[file, reason]`` failures."""
    n = len(folder.files)
    crops = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, spec.crop, spec.crop, 3))
    loader = DataLoader(
        _DecodeCrop(folder, spec), batch_size=_BATCH, num_workers=workers, collate_fn=_collate, shuffle=False
    )
    bar = Progress(n, f"decoding {folder.root.name}") if progress else None
    bad: list[list[str]] = []
    for rows, batch, errors in loader:
        crops[rows] = batch
        bad += [[folder.files[r], e] for r, e in zip(rows.tolist(), errors, strict=True) if e]
        if bar:
            bar.update(len(rows), note=f"{len(bad)} unreadable" if bad else "")
    if bar:
        bar.close()
    crops.flush()
    del crops
    return bad
