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

from protos.bundle import WIRE_FORMATS, TensorSpec
from protos.compression import COMPRESSORS

__all__ = ["CODECS", "Codec", "decode", "dequantize", "encode", "wire_inputs"]

CODECS = tuple(f"{fmt}{suffix}" for fmt in WIRE_FORMATS for suffix in ("", *(f"+{c}" for c in COMPRESSORS)))
"""Every codec name: each wire format alone and followed by each compressor."""

_QMIN, _QMAX = -128, 127


@dataclass(frozen=True)
class Codec:
    """A wire format and an optional lossless compressor for the split tensor."""

    format: str = "fp32"
    compressor: str | None = None

    def __post_init__(self) -> None:
        if self.format not in WIRE_FORMATS or self.compressor not in (None, *COMPRESSORS):
            raise ValueError(f"unknown codec {self.name!r}; valid codecs: {', '.join(CODECS)}")

    @classmethod
    def parse(cls, name: str) -> Codec:
        """``"int8+zstd"`` -> ``Codec("int8", "zstd")``; ``ValueError`` listing the valid codecs otherwise."""
        fmt, _, compressor = name.partition("+")
        if name not in CODECS:
            raise ValueError(f"unknown codec {name!r}; valid codecs: {', '.join(CODECS)}")
        return cls(fmt, compressor or None)

    @property
    def name(self) -> str:
        """The codec's name, e.g. ``int8+zstd``."""
        return self.format + (f"+{self.compressor}" if self.compressor else "")


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
    dequantized nor requantized; the other formats send its float32 value.
    """
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


def decode(fmt: str, name: str, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
    """The float32 tensor the tail computes from the wire tensors (numpy reference of its Cast/DequantizeLinear)."""
    x = tensors[name]
    if fmt in ("fp32", "fp16"):
        return x.astype(np.float32)
    scale, zero_point = tensors[f"{name}_scale"], tensors[f"{name}_zero_point"]
    shape = (1, -1, *([1] * (x.ndim - 2))) if fmt == "int8c" else (1,) * x.ndim
    centred = x.astype(np.float32) - zero_point.astype(np.float32).reshape(shape)
    return (centred * scale.reshape(shape)).astype(np.float32)
