"""Wire codecs for the split tensor: what the edge sends instead of float32, and how the tail reads it back.

A codec is a wire format (:data:`protos.bundle.WIRE_FORMATS`) optionally followed by a lossless compressor:
``fp32``, ``fp16``, ``int8`` (affine, one scale and zero point per tensor), ``int8c`` (affine, per channel,
axis 1), each with an optional ``+zstd`` or ``+lz4``.

The format decides the tensors on the wire. For the split tensor ``b2``:

======  =====================================================================
fp32    ``b2`` FP32
fp16    ``b2`` FP16
int8    ``b2`` INT8, ``b2_scale`` FP32 ``[1]``, ``b2_zero_point`` INT8 ``[1]``
int8c   ``b2`` INT8, ``b2_scale`` FP32 ``[C]``, ``b2_zero_point`` INT8 ``[C]``
======  =====================================================================

Split point 0 of an image bundle (its manifest lists :data:`protos.bundle.IMAGE_FORMATS` in the split point's
``images``) can also send the device's frame itself, encoded: ``png`` (lossless) or ``jpeg<Q>``, JPEG at quality
``Q`` in 1..100 (``jpeg90``; no compressor: the bytes are compressed already). The wire then carries one tensor,

======  =====================================================================
image   ``image`` BYTES ``[N]``: each element one encoded uint8 RGB frame
======  =====================================================================

and the cloud decodes it (Pillow, torch-free), runs the bundle's ``preprocess.onnx`` and the fp32 tail. The frame
is whatever the device has, at its own size: the edge re-encodes an image it was given as bytes at the codec's
quality, so the bytes measured are the codec's, not the camera's.

The bundle's tail for each format reads exactly those inputs and turns them back into float32 itself (a Cast,
or a DequantizeLinear), so any KServe v2 server with ONNX Runtime can serve it. The compressor only changes the
bytes of the first tensor on the wire (see :mod:`protos.compression`). :func:`decode` is the numpy reference of
what the tail computes.

Example:
    >>> import numpy as np
    >>> x = np.linspace(-1, 3, 48, dtype=np.float32).reshape(1, 3, 4, 4)
    >>> wire = encode(Codec.parse("int8"), "b2", x)
    >>> [(k, v.dtype.name, v.shape) for k, v in wire.items()]
    [('b2', 'int8', (1, 3, 4, 4)), ('b2_scale', 'float32', (1,)), ('b2_zero_point', 'int8', (1,))]
    >>> bool(np.abs(decode("int8", "b2", wire) - x).max() <= wire["b2_scale"][0] / 2 + 1e-6)
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from protos.bundle import IMAGE_FORMATS, WIRE_FORMATS, TensorSpec
from protos.byte_tensors import from_items
from protos.compression import COMPRESSORS

__all__ = [
    "CODECS",
    "IMAGE_CODECS",
    "IMAGE_INPUT",
    "Codec",
    "decode",
    "decode_images",
    "dequantize",
    "encode",
    "wire_inputs",
]

CODECS = tuple(f"{fmt}{suffix}" for fmt in WIRE_FORMATS for suffix in ("", *(f"+{c}" for c in COMPRESSORS)))
"""Every tensor codec name: each wire format alone and followed by each compressor."""

IMAGE_CODECS = ("png", "jpeg<Q>")
"""The image codecs of split point 0, as written: ``png``, and ``jpeg`` followed by a quality 1..100 (``jpeg90``)."""

IMAGE_INPUT = "image"
"""The one wire tensor of an image codec: ``BYTES [N]``, one encoded frame per element."""

_VALID = ", ".join((*CODECS, "png", "jpeg<Q> (Q in 1..100, e.g. jpeg90)"))

_QMIN, _QMAX = -128, 127


@dataclass(frozen=True)
class Codec:
    """How split point ``k`` travels: a wire format and an optional lossless compressor for the split tensor, or
    (split point 0 of an image bundle) an image format, with a JPEG ``quality``."""

    format: str = "fp32"
    compressor: str | None = None
    quality: int | None = None

    def __post_init__(self) -> None:
        if self.format in IMAGE_FORMATS:
            ok = self.compressor is None and (
                (self.format == "png" and self.quality is None)
                or (self.format == "jpeg" and isinstance(self.quality, int) and 1 <= self.quality <= 100)
            )
        else:
            ok = self.format in WIRE_FORMATS and self.compressor in (None, *COMPRESSORS) and self.quality is None
        if not ok:
            raise ValueError(f"unknown codec {self.name!r}; valid codecs: {_VALID}")

    @classmethod
    def parse(cls, name: str) -> Codec:
        """``"int8+zstd"`` -> ``Codec("int8", "zstd")``, ``"jpeg90"`` -> ``Codec("jpeg", quality=90)``;
        ``ValueError`` listing the valid codecs otherwise."""
        if name.startswith("jpeg") and name[4:].isdigit() and name[4:] == str(int(name[4:])):
            return cls("jpeg", quality=int(name[4:]))
        if name == "png":
            return cls("png")
        fmt, _, compressor = name.partition("+")
        if name not in CODECS:
            hint = " (jpeg needs a quality, e.g. jpeg90)" if name == "jpeg" else ""
            raise ValueError(f"unknown codec {name!r}{hint}; valid codecs: {_VALID}")
        return cls(fmt, compressor or None)

    @property
    def name(self) -> str:
        """The codec's name, e.g. ``int8+zstd`` or ``jpeg90``."""
        if self.quality is not None:
            return f"{self.format}{self.quality}"
        return self.format + (f"+{self.compressor}" if self.compressor else "")

    @property
    def image(self) -> bool:
        """Whether the codec sends the device's frame as an encoded image (split point 0 only)."""
        return self.format in IMAGE_FORMATS

    @property
    def tail(self) -> str:
        """The wire format of the tail that runs the decoded input: the format itself, fp32 for an image codec."""
        return "fp32" if self.image else self.format


def wire_inputs(fmt: str, name: str) -> tuple[str, ...]:
    """The names of the tensors format ``fmt`` sends for the split tensor ``name`` (the tail's inputs)."""
    return (name, f"{name}_scale", f"{name}_zero_point") if fmt.startswith("int8") else (name,)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """The float32 tensor a quantized boundary ``q`` (uint8, ``spec.scale``, ``spec.zero_point``) stands for."""
    if not spec.quantized:
        return q
    return ((q.astype(np.float32) - np.float32(spec.zero_point)) * np.float32(spec.scale)).astype(np.float32)


def encode(codec: Codec, name: str, x: np.ndarray, spec: TensorSpec | None = None) -> dict[str, np.ndarray]:
    """The tensors to send for the split tensor ``x`` (``(N, C, ...)``), by name, the tensor first.

    ``x`` is float32, or, when ``spec`` is a quantized boundary (an int8 edge's), uint8 as ``spec`` says. int8
    is affine: the range ``[min(x, 0), max(x, 0)]`` maps onto ``[-128, 127]`` (zero stays exact), over the whole
    tensor (``int8``) or per channel (``int8c``). A quantized ``x`` goes out in the ``int8`` format as it is,
    with its own scale: shifting uint8 to int8 (and the zero point with it) is exact, so it is neither
    dequantized nor requantized; the other formats send its float32 value. An image codec takes uint8 RGB frames
    ``x`` (``[N, H, W, 3]`` or one ``[H, W, 3]``; ``name`` is ignored) and sends :data:`IMAGE_INPUT`.
    """
    if codec.image:
        from protos.preprocessing import encode_image, frames_of

        items = [encode_image(frame, codec.format, codec.quality) for frame in frames_of(x, "the frame to encode")]
        return {IMAGE_INPUT: from_items(items, (len(items),))}
    if spec is not None and spec.quantized:
        if codec.format == "int8":
            return {
                name: np.bitwise_xor(x.view(np.int8), np.int8(-128)),  # q - 128, bit for bit
                f"{name}_scale": np.array([spec.scale], np.float32),
                f"{name}_zero_point": np.array([int(spec.zero_point) - 128], np.int8),  # type: ignore[arg-type]
            }
        x = dequantize(x, spec)
    if codec.format == "fp32":
        return {name: x}
    if codec.format == "fp16":
        return {name: x.astype(np.float16)}
    axes = tuple(a for a in range(x.ndim) if a != 1) if codec.format == "int8c" else None
    lo = np.minimum(x.min(axis=axes), 0.0).astype(np.float32)
    hi = np.maximum(x.max(axis=axes), 0.0).astype(np.float32)
    scale = np.atleast_1d((hi - lo) / np.float32(_QMAX - _QMIN))
    scale[scale == 0] = 1.0
    zero_point = np.clip(np.rint(_QMIN - np.atleast_1d(lo) / scale), _QMIN, _QMAX)
    shape = (1, -1, *([1] * (x.ndim - 2))) if axes is not None else (1,) * x.ndim
    q = np.rint(x / scale.reshape(shape)) + zero_point.reshape(shape)
    np.clip(q, _QMIN, _QMAX, out=q)
    return {
        name: q.astype(np.int8),
        f"{name}_scale": scale.astype(np.float32),
        f"{name}_zero_point": zero_point.astype(np.int8),
    }


def decode_images(tensors: Mapping[str, np.ndarray], codec: Codec, max_pixels: int | None = None) -> list[np.ndarray]:
    """The uint8 RGB frames an image codec's wire tensor carries; :class:`~protos.preprocessing.ImageError` names
    the element that is not a readable image of the codec's format."""
    from protos.preprocessing import decode_image

    pillow = {"jpeg": ("JPEG",), "png": ("PNG",)}[codec.format]
    items = tensors[IMAGE_INPUT].ravel()
    return [decode_image(item, f"{IMAGE_INPUT}[{i}]", pillow, max_pixels) for i, item in enumerate(items)]


def decode(fmt: str, name: str, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
    """The float32 tensor the tail computes from the wire tensors (numpy reference of its Cast/DequantizeLinear)."""
    x = tensors[name]
    if fmt in ("fp32", "fp16"):
        return x.astype(np.float32)
    scale, zero_point = tensors[f"{name}_scale"], tensors[f"{name}_zero_point"]
    shape = (1, -1, *([1] * (x.ndim - 2))) if fmt == "int8c" else (1,) * x.ndim
    centred = x.astype(np.float32) - zero_point.astype(np.float32).reshape(shape)
    return (centred * scale.reshape(shape)).astype(np.float32)
