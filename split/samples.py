"""Lazy model-ready samples: uint8 crops (in memory or a memory-mapped cache file) normalised per batch.

An image dataset stores each image as the uint8 crop the bundle's preprocessing graph makes
(:class:`~split.preprocess.Cropper`); :class:`ImageSamples` hands out float32 ``[N, 3, crop, crop]`` batches
through :meth:`~protos.preprocessing.Preprocessing.normalize`, the arithmetic of the graph's last step, so what
training sees is exactly what the edge computes. Only the rows asked for are read: a split of 50,000 images is
never in memory at once.

Consumers index or slice (``x[i]``, ``x[a:b]``, ``x[rows]``) and never convert a whole split; a plain float32
array supports the same operations, so :data:`Samples` is either.

Example:
    >>> x = ImageSamples(crops, spec)                      # crops: uint8 [N, 224, 224, 3]  # doctest: +SKIP
    >>> x.shape, x[:8].shape                                                               # doctest: +SKIP
    ((N, 3, 224, 224), (8, 3, 224, 224))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from protos.preprocessing import Preprocessing

__all__ = ["ImageSamples", "Samples", "as_array"]


@dataclass(frozen=True, eq=False)
class ImageSamples:
    """Rows ``rows`` of uint8 ``crops [M, crop, crop, 3]``, read as float32 ``[N, 3, crop, crop]`` on indexing.

    ``rows`` (:meth:`of`: all of them) selects the split; ``files`` optionally names each of the ``M`` crops
    (the image file it came from, relative to its folder).
    """

    crops: np.ndarray
    spec: Preprocessing
    rows: np.ndarray
    files: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        crop = self.spec.crop
        if self.crops.dtype != np.uint8 or self.crops.ndim != 4 or self.crops.shape[1:] != (crop, crop, 3):
            raise ValueError(
                f"image samples: crops must be uint8 [M, {crop}, {crop}, 3] (the spec's crop),"
                f" got {self.crops.dtype} {list(self.crops.shape)}"
            )
        rows = np.asarray(self.rows).astype(np.int64, copy=False)
        if rows.ndim != 1 or (len(rows) and not 0 <= rows.min() <= rows.max() < len(self.crops)):
            raise ValueError(f"image samples: rows must be a 1-d index into {len(self.crops)} crops")
        if self.files is not None and len(self.files) != len(self.crops):
            raise ValueError(f"image samples: {len(self.files)} file names for {len(self.crops)} crops")
        object.__setattr__(self, "rows", rows)

    @classmethod
    def of(cls, crops: np.ndarray, spec: Preprocessing, files: tuple[str, ...] | None = None) -> ImageSamples:
        """All of ``crops``, in order."""
        return cls(crops, spec, np.arange(len(crops), dtype=np.int64), files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N, 3, crop, crop)``: the shape of the whole split as model input."""
        return (len(self.rows), 3, self.spec.crop, self.spec.crop)

    @property
    def dtype(self) -> np.dtype:
        """float32, the model input's type."""
        return np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        """4."""
        return 4

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        """``x[i]`` -> ``[3, crop, crop]``; ``x[a:b]`` or ``x[index array]`` -> ``[n, 3, crop, crop]`` float32."""
        if isinstance(key, (int, np.integer)):
            return self.spec.normalize(self.crops[self.rows[key]][None])[0]
        rows = self.rows[key]
        return self.spec.normalize(_gather(self.crops, rows))

    def file(self, i: int) -> str | None:
        """The name of sample ``i``'s source, when known."""
        return None if self.files is None else self.files[int(self.rows[i])]

    def subset(self, key: slice | np.ndarray) -> ImageSamples:
        """The samples ``key`` selects, still lazy."""
        return ImageSamples(self.crops, self.spec, self.rows[key], self.files)


def _gather(crops: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``crops[rows]``, reading a memory map in ascending order (sequential pages) and restoring the order."""
    if len(rows) > 1 and np.all(rows[1:] == rows[:-1] + 1):
        return np.asarray(crops[rows[0] : rows[-1] + 1])
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), *crops.shape[1:]), dtype=crops.dtype)
    out[order] = crops[rows[order]]
    return out


Samples = Union[np.ndarray, ImageSamples]  # noqa: UP007 (a runtime alias)
"""Model-ready inputs ``[N, C, H, W]`` float32: an array, or lazy image samples."""


def as_array(x: Samples) -> np.ndarray:
    """``x`` as one float32 array: an array as it is, lazy samples read whole (for small sets only)."""
    return x if isinstance(x, np.ndarray) else x[:]
