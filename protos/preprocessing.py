"""A bundle's preprocessing: from what a device has (a uint8 RGB frame or an encoded image) to the model input.

The manifest records the steps (:class:`Preprocessing`) and the bundle carries them as an ONNX graph
(``preprocess.onnx``, written by :mod:`split.preprocess`), so the edge, the cloud and training apply exactly the
same arithmetic. The graph takes ``frame``: uint8 ``[N, H, W, 3]`` RGB of any size, and

1. resizes the shorter side to :attr:`Preprocessing.resize` (the longer one to ``resize * long // short``),
   bilinear with antialiasing (ONNX ``Resize``, ``antialias=1``: Pillow's ``BILINEAR`` filter, which
   torchvision's ImageNet transforms use), rounded to integers and clipped to 0..255 as a uint8 image would be;
2. crops the centre :attr:`Preprocessing.crop` (offsets rounded half to even, as torchvision's ``center_crop``);
3. scales each channel: ``(x * scale - mean[c]) / std[c]``, computed as ``x * (scale / std[c]) + (-mean[c] /
   std[c])`` in float32, and returns ``[N, 3, crop, crop]`` float32 (NCHW, RGB).

Encoded images (JPEG, PNG, WebP, …) are decoded with Pillow (:func:`decode_image`): the decoder torchvision's
training pipelines use, with libjpeg-turbo inside its wheels and no torch; grey, palette, CMYK and RGBA images
are converted to RGB (alpha dropped), and the EXIF orientation is applied so a phone's photo is upright.

Example:
    >>> pre = Preprocessor.load(bundle)                              # doctest: +SKIP
    >>> pre(decode_image(open("cat.jpg", "rb").read())).shape        # doctest: +SKIP
    (1, 3, 224, 224)
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FRAME",
    "GRAPH",
    "ImageError",
    "Preprocessing",
    "Preprocessor",
    "decode_image",
    "encode_image",
    "frames_of",
    "graph_session",
]

GRAPH = "preprocess.onnx"
FRAME = "frame"
"""The preprocessing graph's input: uint8 ``[N, H, W, 3]``."""


class ImageError(ValueError):
    """An image that cannot be decoded, or a frame of the wrong shape or type."""


@dataclass(frozen=True)
class Preprocessing:
    """The steps from a uint8 RGB frame to the model input (see the module docstring for the arithmetic).

    ``mean`` and ``std`` are per channel in the units after ``scale`` (ImageNet: ``scale=1/255``, mean
    ``(0.485, 0.456, 0.406)``; EfficientNet-Lite's ``(x - 127) / 128``: ``scale=1/255``, mean ``127/255``, std
    ``128/255``). ``graph`` is the bundle file holding the same steps as ONNX.
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    scale: float = 1 / 255
    graph: str = GRAPH
    channels: str = "RGB"
    interpolation: str = "bilinear_antialias"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if not 1 <= self.crop <= self.resize:
            raise ValueError(f"preprocessing: crop must be in 1..resize ({self.resize}), got {self.crop}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"preprocessing: mean and std need 3 values, std > 0; got {self.mean}, {self.std}")
        if not 0 < self.scale < float("inf"):
            raise ValueError(f"preprocessing: scale must be positive and finite, got {self.scale}")
        if self.channels != "RGB" or self.interpolation != "bilinear_antialias":
            raise ValueError(
                f"preprocessing: channels {self.channels!r} / interpolation {self.interpolation!r} not supported;"
                " valid: 'RGB' / 'bilinear_antialias'"
            )

    @property
    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel float32 ``(a, b)`` of ``x * a + b``: the normalisation the graph computes."""
        std = np.asarray(self.std, dtype=np.float64)
        a = (self.scale / std).astype(np.float32)
        b = (-np.asarray(self.mean, dtype=np.float64) / std).astype(np.float32)
        return a, b

    def normalize(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops ``[N, crop, crop, 3]`` -> model input ``[N, 3, crop, crop]`` float32, as the graph does."""
        a, b = self.affine
        x = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
        x *= a[None, :, None, None]
        x += b[None, :, None, None]
        return x

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``preprocessing`` record."""
        return {"kind": "image", **asdict(self)}

    @classmethod
    def from_manifest(cls, record: Mapping[str, Any]) -> Preprocessing | None:
        """The steps in a manifest's record; ``None`` when the bundle takes model-ready tensors only."""
        if record.get("kind") != "image":
            return None
        fields = {k: v for k, v in record.items() if k != "kind"}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise ValueError(f"malformed preprocessing record {dict(record)}: {exc}") from None


def decode_image(
    data: bytes | bytearray | memoryview,
    name: str = "image",
    formats: tuple[str, ...] | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """An encoded image (JPEG, PNG, WebP, …) -> uint8 RGB ``[H, W, 3]``; :class:`ImageError` names what failed.

    ``formats``: the Pillow format names accepted (e.g. ``("JPEG",)``; default: any Pillow reads);
    ``max_pixels``: refuse larger images before decoding them (default: Pillow's decompression-bomb limit).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=formats) as image:
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise ImageError(f"{name}: {image.width}x{image.height} pixels is more than the {max_pixels} allowed")
            image.load()
            upright = ImageOps.exif_transpose(image)
            return np.asarray(upright.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, ImageError):
            raise
        wanted = f" {'/'.join(formats)}" if formats else ""
        raise ImageError(f"{name}: not a readable{wanted} image ({type(exc).__name__}: {exc})") from None


def encode_image(frame: np.ndarray, fmt: str, quality: int | None = None) -> bytes:
    """A uint8 RGB frame ``[H, W, 3]`` -> ``fmt`` (``"jpeg"`` at ``quality`` 1..100, or lossless ``"png"``).

    JPEG: Pillow's libjpeg-turbo, 4:2:0 chroma subsampling (its default), no optimised Huffman tables, no
    metadata. PNG: zlib level 6 (Pillow's default), no metadata.
    """
    from PIL import Image

    image = Image.fromarray(frames_of(frame)[0])
    out = io.BytesIO()
    if fmt == "jpeg":
        image.save(out, "JPEG", quality=quality)
    elif fmt == "png":
        image.save(out, "PNG")
    else:
        raise ValueError(f"unknown image format {fmt!r}; valid: 'jpeg', 'png'")
    return out.getvalue()


def frames_of(frame: np.ndarray, name: str = "frame") -> np.ndarray:
    """A frame ``[H, W, 3]`` or frames ``[N, H, W, 3]`` (uint8) as a batch ``[N, H, W, 3]``, checked."""
    x = np.asarray(frame)
    if x.ndim == 3:
        x = x[None]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or 0 in x.shape:
        raise ImageError(
            f"{name}: expected a uint8 RGB frame [H, W, 3] (or frames [N, H, W, 3]), got {x.dtype} {list(x.shape)}"
        )
    return x


def graph_session(model: str | bytes, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session over a preprocessing graph (a file path or serialised bytes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class Preprocessor:
    """The bundle's preprocessing graph in an ONNX Runtime session, built once."""

    def __init__(self, spec: Preprocessing, graph: Path, threads: int = 1) -> None:
        self.spec = spec
        self._session = graph_session(str(graph), threads)
        self._output = self._session.get_outputs()[0].name

    @classmethod
    def load(cls, bundle: Any, threads: int = 1) -> Preprocessor | None:
        """The preprocessor of a :class:`~protos.bundle.Bundle`; ``None`` when it takes model-ready tensors."""
        spec = Preprocessing.from_manifest(bundle.manifest.preprocessing)
        return None if spec is None else cls(spec, bundle.file(spec.graph), threads)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``[H, W, 3]`` or ``[N, H, W, 3]`` -> the model input ``[N, 3, crop, crop]`` float32."""
        out = self._session.run([self._output], {FRAME: frames_of(frames)})[0]
        return np.asarray(out)
