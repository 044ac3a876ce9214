"""What the edge accepts as a sample: the model-ready tensor, a uint8 RGB frame, or an encoded image.

A bundle made from images carries its preprocessing (:mod:`protos.preprocessing`): then a camera's frame
(uint8 ``[H, W, 3]`` of any size) or a photo's bytes (JPEG, PNG, WebP) go through the bundle's graph on the
device, in the same ONNX Runtime session for every request. A bundle without one takes model-ready float32
tensors only, and says so when given anything else.

Example:
    >>> inputs = Inputs.load(bundle)                          # doctest: +SKIP
    >>> inputs.batch([open("cat.jpg", "rb").read()]).shape     # doctest: +SKIP
    (1, 3, 224, 224)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from protos.bundle import Bundle, Manifest
from protos.preprocessing import ImageError, Preprocessing, Preprocessor, decode_image, frames_of

__all__ = ["Inputs", "is_encoded"]

Encoded = bytes | bytearray | memoryview
_FLOAT32 = np.dtype(np.float32)


def is_encoded(x: Any) -> bool:
    """Whether ``x`` is one encoded image (bytes)."""
    return isinstance(x, bytes | bytearray | memoryview)


class Inputs:
    """Turns what an app hands the edge into the model input ``[N, *sample]`` float32."""

    def __init__(self, manifest: Manifest, preprocessor: Preprocessor | None = None) -> None:
        self.manifest = manifest
        self.preprocessor = preprocessor
        self._sample = manifest.input.sample_shape
        self._dims = ", ".join(map(str, self._sample))
        self._one = (1, *self._sample)

    @classmethod
    def load(cls, bundle: Bundle, threads: int = 1) -> Inputs:
        """The inputs of ``bundle``: with its preprocessing graph in a session when it has one (its ORT-format file
        when the bundle has that, :meth:`~protos.bundle.Bundle.edge_file`)."""
        spec = Preprocessing.from_manifest(bundle.manifest.preprocessing)
        return cls(bundle.manifest, None if spec is None else Preprocessor(spec, bundle.edge_file(spec.graph), threads))

    @property
    def takes_images(self) -> bool:
        """Whether frames and encoded images are accepted (the bundle carries its preprocessing)."""
        return self.preprocessor is not None

    def expected(self) -> str:
        """What is accepted, for error messages."""
        tensor = f"float32 [{self._dims}]"
        if not self.takes_images:
            return f"a model-ready {tensor} (this bundle has no image preprocessing)"
        return f"a model-ready {tensor}, a uint8 RGB frame [H, W, 3], or an encoded image (JPEG, PNG, WebP)"

    def one(self, x: Any) -> np.ndarray:
        """One sample -> ``[1, *sample]`` float32."""
        if type(x) is np.ndarray and x.dtype is _FLOAT32 and x.shape == self._one and x.flags.c_contiguous:
            return x  # model-ready already: the per-request path checks nothing more and copies nothing
        if is_encoded(x):
            return self._frames(decode_image(x))
        x = np.asarray(x)
        if x.dtype == np.uint8 and x.ndim == 3 and x.shape[-1] == 3 and x.shape != self._sample:
            return self._frames(x)
        if x.shape == self._sample:
            x = x[None]
        if x.shape[1:] != self._sample or x.shape[0] != 1 or x.dtype.kind != "f":
            raise ValueError(
                f"input must have shape {list(self._sample)} or [1, {self._dims}] ({self.expected()}), got"
                f" {x.dtype} {list(x.shape)}"
            )
        return np.ascontiguousarray(x, dtype=np.float32)

    def frame(self, x: Any, codec: str = "an image codec") -> np.ndarray:
        """One sample as the uint8 RGB frame ``[1, H, W, 3]`` an image codec encodes: a frame as it is, an encoded
        image decoded (to be encoded again at the codec's quality). A model-ready tensor cannot be: ImageError."""
        if self.preprocessor is None:
            raise ImageError(f"codec {codec!r} sends an image, but this bundle takes {self.expected()}")
        if is_encoded(x):
            return frames_of(decode_image(x))
        x = np.asarray(x)
        if x.dtype != np.uint8 or x.ndim not in (3, 4) or x.shape[-1] != 3 or (x.ndim == 4 and len(x) != 1):
            raise ImageError(
                f"codec {codec!r} encodes the device's frame: give a uint8 RGB frame [H, W, 3] or an encoded image;"
                f" got {x.dtype} {list(x.shape)} (a model-ready tensor cannot be sent as an image: use a tensor"
                " codec such as fp32 for it)"
            )
        return frames_of(x)

    def preprocess(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames ``[N, H, W, 3]`` -> the model input, through the bundle's preprocessing graph."""
        return self._frames(frames)

    def batch(self, x: Any) -> np.ndarray:
        """A batch -> ``[N, *sample]`` float32: model-ready ``[N, *sample]``, frames ``[N, H, W, 3]`` uint8, or a
        sequence of encoded images (each may have its own size)."""
        if isinstance(x, Sequence) and not isinstance(x, np.ndarray):
            return np.concatenate([self.one(item) for item in x]) if len(x) else self._empty()
        x = np.asarray(x)
        if x.dtype == object:
            return self.batch(list(x.ravel()))
        if x.dtype == np.uint8 and x.ndim == 4 and x.shape[-1] == 3 and x.shape[1:] != self._sample:
            return self._frames(x)
        if x.ndim != len(self._sample) + 1 or x.shape[1:] != self._sample or x.dtype.kind != "f":
            raise ValueError(
                f"a batch must have shape [B, {self._dims}] ({self.expected()} each), got {x.dtype} {list(x.shape)}"
            )
        return np.ascontiguousarray(x, dtype=np.float32)

    def _frames(self, frames: np.ndarray) -> np.ndarray:
        if self.preprocessor is None:
            raise ImageError(f"this bundle takes {self.expected()}; got a frame or an image")
        return self.preprocessor(frames)

    def _empty(self) -> np.ndarray:
        return np.zeros((0, *self._sample), dtype=np.float32)
