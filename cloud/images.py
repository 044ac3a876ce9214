"""Split point 0's image codecs on the cloud: the edge sends its frame as JPEG or PNG bytes; the cloud decodes
them (Pillow, torch-free) and runs the bundle's preprocessing graph, so the fp32 tail gets the model input.

The preprocessing session is built once, at load. Each frame is preprocessed on its own (frames differ in
size); the model inputs then join the fp32 tail's batches like any other request's. An element that is not an
image of the codec's format, or is larger than :data:`MAX_PIXELS`, is INVALID_ARGUMENT, naming it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cloud.errors import InvalidArgument
from protos.bundle import Bundle
from protos.codecs import IMAGE_INPUT, Codec, decode_images
from protos.preprocessing import ImageError, Preprocessor

__all__ = ["MAX_PIXELS", "ImageInput"]

MAX_PIXELS = 1 << 25
"""The largest frame the cloud decodes (about 33.5 megapixels: a phone's full-resolution photo fits)."""


class ImageInput:
    """Turns an image codec's wire tensor into the model input of split point 0."""

    def __init__(
        self, bundle: Bundle, formats: tuple[str, ...], threads: int = 1, max_pixels: int = MAX_PIXELS
    ) -> None:
        preprocessor = Preprocessor.load(bundle, threads)
        if preprocessor is None:  # the manifest refuses images without preprocessing; a second guard
            raise ValueError(f"bundle {bundle.root} has no image preprocessing for its image formats {formats}")
        self.formats = formats
        self._preprocessor = preprocessor
        self._max_pixels = max_pixels

    def model_input(self, inputs: Mapping[str, np.ndarray], codec: Codec, max_batch: int) -> np.ndarray:
        """``image`` BYTES ``[N]`` -> float32 ``[N, 3, crop, crop]``; INVALID_ARGUMENT naming what is wrong."""
        if codec.format not in self.formats:
            raise InvalidArgument(f"split point 0 takes no image codec {codec.name!r}; formats: {list(self.formats)}")
        images = inputs.get(IMAGE_INPUT)
        if len(inputs) != 1 or images is None:
            raise InvalidArgument(
                f"split point 0 with codec {codec.name!r} takes one input {IMAGE_INPUT!r} BYTES [N], got {list(inputs)}"
            )
        if images.dtype != object or images.ndim != 1 or not 1 <= len(images) <= max_batch:
            raise InvalidArgument(
                f"input {IMAGE_INPUT!r}: must be BYTES [N] with N in 1..{max_batch}, got"
                f" {'BYTES' if images.dtype == object else images.dtype} {list(images.shape)}"
            )
        try:
            frames = decode_images(inputs, codec, self._max_pixels)
        except ImageError as exc:
            raise InvalidArgument(f"codec {codec.name!r}: {exc}") from None
        return np.concatenate([self._preprocessor(frame) for frame in frames])
